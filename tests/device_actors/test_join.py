"""`board join` builds a safe `ray start`, finds the token, and says exactly what to fix."""
from __future__ import annotations

import json
import logging
import socket
import sys
from pathlib import Path

import pytest

from device_actors.join import (AuthToken, JoinError, JoinOptions, Versions, child_environment, join_board,
                                parse_version_mismatch, ray_start_argv, resolve_auth_token, version_problems)
from device_actors.naming import BoardNameError

TOKEN = "0123456789abcdef0123456789abcdef"


def test_ray_start_argv_offers_only_the_board_resource_and_label():
    argv = ray_start_argv(JoinOptions(address="10.0.0.1:6379", name="imx8mp", object_store_memory=500_000_000,
                                      block=True, extra_ray_args=("--min-worker-port=20000",)))
    assert argv[:4] == [sys.executable, "-m", "ray.scripts.scripts", "start"]
    assert "--address=10.0.0.1:6379" in argv and "--num-cpus=0" in argv and "--num-gpus=0" in argv
    resources = [a for a in argv if a.startswith("--resources=")]
    assert len(resources) == 1 and json.loads(resources[0].split("=", 1)[1]) == {"board_imx8mp": 1}
    assert "--labels=edgesweep/board=imx8mp" in argv
    assert "--object-store-memory=500000000" in argv and "--block" in argv
    assert argv[-1] == "--min-worker-port=20000"


def test_hostile_board_name_never_reaches_ray_start():
    with pytest.raises(BoardNameError, match="lowercase letters"):
        ray_start_argv(JoinOptions(address="h:1", name="x; rm -rf /"))


def test_object_store_below_rays_minimum_is_refused():
    with pytest.raises(JoinError, match="below Ray's minimum"):
        ray_start_argv(JoinOptions(address="h:1", name="imx8mp", object_store_memory=1000))


@pytest.mark.parametrize("address", ["imx8mp", "host:", ":6379", "host:port", "host:70000"])
def test_bad_address_is_refused_naming_the_option(address):
    with pytest.raises(JoinError, match="--address"):
        join_board(JoinOptions(address=address, name="imx8mp"), environ={}, home=Path("/nonexistent"))


def _token_file(path: Path, value: str = TOKEN) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def test_token_precedence_is_file_then_env_then_env_path_then_home(tmp_path):
    home = tmp_path / "home"
    _token_file(home / ".ray/auth_token", "home-token")
    file = _token_file(tmp_path / "given", "file-token")
    env_path = _token_file(tmp_path / "envpath", "path-token")
    env = {"RAY_AUTH_TOKEN": "env-token", "RAY_AUTH_TOKEN_PATH": str(env_path)}
    assert resolve_auth_token(file, env, home).value == "file-token"
    assert resolve_auth_token(None, env, home).value == "env-token"
    assert resolve_auth_token(None, {"RAY_AUTH_TOKEN_PATH": str(env_path)}, home).value == "path-token"
    assert resolve_auth_token(None, {}, home).value == "home-token"
    assert resolve_auth_token(None, {}, tmp_path / "nobody") is None


def test_missing_or_empty_token_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(JoinError, match="--token-file .*missing does not exist"):
        resolve_auth_token(tmp_path / "missing", {}, tmp_path)
    empty = _token_file(tmp_path / "empty", "")
    with pytest.raises(JoinError, match="empty"):
        resolve_auth_token(empty, {}, tmp_path)


def test_world_readable_token_file_is_warned_about(tmp_path, caplog):
    path = _token_file(tmp_path / "token")
    path.chmod(0o644)
    resolve_auth_token(path, {}, tmp_path)
    assert "readable by other users" in caplog.text and TOKEN not in caplog.text


def test_token_reaches_ray_start_through_the_environment_only(tmp_path):
    token = resolve_auth_token(_token_file(tmp_path / "t"), {}, tmp_path)
    env = child_environment({"PATH": "/bin", "RAY_AUTH_TOKEN_PATH": "/elsewhere"}, token)
    assert env == {"PATH": "/bin", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}
    assert TOKEN not in repr(token) and TOKEN not in str(token)
    assert not any(TOKEN in arg for arg in ray_start_argv(JoinOptions(address="h:1", name="imx8mp")))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_head_is_reported_without_leaking_the_token(tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    port = _closed_port()
    with pytest.raises(JoinError, match=f"cannot reach the head at 127.0.0.1:{port}") as err:
        join_board(JoinOptions(address=f"127.0.0.1:{port}", name="imx8mp"), environ={"RAY_AUTH_TOKEN": TOKEN},
                   home=tmp_path)
    out = capsys.readouterr()
    assert "using the auth token from $RAY_AUTH_TOKEN" in caplog.text
    assert TOKEN not in caplog.text + out.out + out.err + str(err.value)


def test_version_problems_say_what_to_install():
    head = Versions(ray="2.60.0", python="3.11.7")
    assert version_problems(head, head) == []
    ray_diff = version_problems(Versions("2.59.0", "3.11.7"), head)
    assert len(ray_diff) == 1 and "pip install 'ray==2.60.0'" in ray_diff[0]
    patch = version_problems(Versions("2.60.0", "3.11.9"), head)
    assert len(patch) == 1 and "install Python 3.11.7 on the board" in patch[0]
    assert "RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL=minor" in patch[0]
    assert version_problems(Versions("2.60.0", "3.11.9"), head, match_level="minor") == []
    minor = version_problems(Versions("2.60.0", "3.12.3"), head, match_level="minor")
    assert len(minor) == 1 and "install Python 3.11.7" in minor[0] and "MATCH_LEVEL" not in minor[0]


def test_rays_own_version_mismatch_text_is_understood():
    from ray._private.utils import check_version_info

    with pytest.raises(RuntimeError) as err:  # the text a worker node prints when Ray refuses it
        check_version_info({"ray_version": "2.59.0", "python_version": "3.11.2"}, "node 10.0.0.7",
                           python_version_match_level="patch")
    head, local = parse_version_mismatch(f"Traceback ...\nRuntimeError: {err.value}\n")
    assert head == Versions("2.59.0", "3.11.2")
    assert local == Versions(__import__("ray").__version__, ".".join(map(str, sys.version_info[:3])))
    assert parse_version_mismatch("Ray runtime started.") is None


def test_auth_token_repr_hides_the_value():
    assert "secret" not in repr(AuthToken("$RAY_AUTH_TOKEN", "secret"))
