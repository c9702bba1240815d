"""`board join`: make this machine the cluster's board node, or say exactly why it cannot.

A join fails late and cryptically when the board's Ray or Python differs from the head's, or
when the cluster's auth token is missing, so this checks both first: it reads the head's
versions from the head's GCS (the cluster metadata Ray itself compares against, read by
`device_actors._ray_internals` in a child process that carries the token) and compares them with
this interpreter's. Then it runs `ray start` with the board's resource and label and
`--num-cpus=0 --memory=0` (no CPU for training and no memory for trial processes, which reserve
some), as an argv list, with the token in the child's environment only: the token is never on a
command line, in a log line or in output.
"""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from collections import deque
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Mapping, Sequence

from common.errors import UserError
from device_actors.naming import LABEL_KEY, board_resource, check_board_name

log = logging.getLogger(__name__)

MIN_OBJECT_STORE_BYTES = 75 * 1024 * 1024  # Ray's own minimum
MATCH_LEVEL_ENV = "RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL"
_MISMATCH = re.compile(r"Version mismatch.*?Ray: (\S+)\s+Python: (\S+).*?Ray: (\S+)\s+Python: (\S+)", re.S)


class JoinError(UserError, RuntimeError):
    pass


@dataclass(frozen=True)
class Versions:
    ray: str
    python: str


@dataclass(frozen=True)
class AuthToken:
    source: str  # where it came from, safe to print
    value: str = field(repr=False)

    def __str__(self) -> str:
        return f"auth token from {self.source}"


@dataclass(frozen=True)
class JoinOptions:
    address: str
    name: str
    token_file: Path | None = None
    object_store_memory: int | None = None
    node_ip_address: str | None = None
    temp_dir: str | None = None
    block: bool = False
    extra_ray_args: tuple[str, ...] = ()
    probe_timeout_s: float = 60.0


def local_versions() -> Versions:
    try:
        ray_version = metadata.version("ray")
    except metadata.PackageNotFoundError:
        raise JoinError("ray is not installed on this machine: pip install '.[board]' (same Ray version as the head)")
    return Versions(ray=ray_version, python=".".join(map(str, sys.version_info[:3])))


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise JoinError(f"--address {address!r} is not HEAD:PORT (e.g. 192.168.1.10:6379, the head's GCS port)")
    return host, int(port)


def _token_from_file(path: Path, source: str) -> AuthToken:
    value = path.read_text(encoding="utf-8").strip()
    if not value:
        raise JoinError(f"the auth token file {path} ({source}) is empty; copy the head's ~/.ray/auth_token")
    if path.stat().st_mode & 0o077:
        log.warning("the auth token file %s is readable by other users: chmod 600 %s", path, path)
    return AuthToken(source, value)


def resolve_auth_token(token_file: Path | None, environ: Mapping[str, str], home: Path) -> AuthToken | None:
    """The cluster token, by precedence: --token-file, $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if token_file is not None:
        if not token_file.is_file():
            raise JoinError(f"--token-file {token_file} does not exist; copy the head's ~/.ray/auth_token there")
        return _token_from_file(token_file, f"--token-file {token_file}")
    if environ.get("RAY_AUTH_TOKEN", "").strip():
        return AuthToken("$RAY_AUTH_TOKEN", environ["RAY_AUTH_TOKEN"].strip())
    if environ.get("RAY_AUTH_TOKEN_PATH"):
        path = Path(environ["RAY_AUTH_TOKEN_PATH"])
        if not path.is_file():
            raise JoinError(f"$RAY_AUTH_TOKEN_PATH points to {path}, which does not exist")
        return _token_from_file(path, "$RAY_AUTH_TOKEN_PATH")
    default = home / ".ray" / "auth_token"
    return _token_from_file(default, "~/.ray/auth_token") if default.is_file() else None


def child_environment(base: Mapping[str, str], token: AuthToken | None) -> dict[str, str]:
    """The environment for `ray start`: the token travels here, and only here."""
    env = dict(base)
    if token is not None:
        env.pop("RAY_AUTH_TOKEN_PATH", None)
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token.value)
    return env


def check_reachable(host: str, port: int, timeout_s: float = 5.0) -> None:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as e:
        raise JoinError(f"cannot reach the head at {host}:{port} ({e.strerror or e}): is `ray start --head "
                        f"--port={port}` running there, is the address right, and is the port open in its "
                        f"firewall?") from None


def read_head_versions(address: str, env: Mapping[str, str], timeout_s: float = 60.0) -> Versions | None:
    """The head's Ray and Python versions, or None if they cannot be read (Ray then checks itself)."""
    try:
        done = subprocess.run([sys.executable, "-m", "device_actors._ray_internals", address], env=dict(env),
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        log.warning("the head at %s did not answer within %.0f s; relying on Ray's own version check", address,
                    timeout_s)
        return None
    if "InvalidAuthToken" in done.stderr or "Unauthenticated" in done.stderr:
        raise JoinError(f"the head at {address} rejected this board's auth token: copy the head's "
                        f"~/.ray/auth_token to the board and pass it with --token-file PATH (or $RAY_AUTH_TOKEN)")
    try:
        data = json.loads(done.stdout.strip().splitlines()[-1])
        return Versions(ray=str(data["ray_version"]), python=str(data["python_version"]))
    except (IndexError, ValueError, KeyError, TypeError):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        log.warning("could not read the head's versions (%s); relying on Ray's own version check", tail)
        return None


def version_problems(local: Versions, head: Versions, match_level: str = "patch") -> list[str]:
    """What to change on this board so Ray accepts it, one line per difference."""
    problems = []
    if local.ray != head.ray:
        problems.append(f"Ray differs: the head runs ray {head.ray}, this board {local.ray}. Fix: "
                        f"pip install 'ray=={head.ray}' on the board (every node needs the same Ray).")
    head_minor, local_minor = head.python.split(".")[:2], local.python.split(".")[:2]
    if local.python != head.python and (match_level != "minor" or head_minor != local_minor):
        fix = f"install Python {head.python} on the board and recreate its venv (pip install '.[board]')"
        if head_minor == local_minor:
            fix += (f", or set {MATCH_LEVEL_ENV}=minor on every node and driver (then "
                    f"{'.'.join(head_minor)}.x is enough)")
        problems.append(f"Python differs: the head runs Python {head.python}, this board {local.python}. Fix: {fix}.")
    return problems


def parse_version_mismatch(output: str) -> tuple[Versions, Versions] | None:
    """(head, local) from Ray's own 'Version mismatch' error text, the fallback check."""
    m = _MISMATCH.search(output)
    return (Versions(m.group(1), m.group(2)), Versions(m.group(3), m.group(4))) if m else None


def ray_start_argv(options: JoinOptions) -> list[str]:
    """`ray start` for a board node, through this interpreter so the checked Python is the one that runs."""
    name = check_board_name(options.name)
    argv = [sys.executable, "-m", "ray.scripts.scripts", "start", f"--address={options.address}",
            "--num-cpus=0", "--num-gpus=0", "--memory=0", f"--resources={json.dumps({board_resource(name): 1})}",
            f"--labels={LABEL_KEY}={name}"]
    if options.object_store_memory is not None:
        if options.object_store_memory < MIN_OBJECT_STORE_BYTES:
            raise JoinError(f"--object-store-memory {options.object_store_memory} is below Ray's minimum of "
                            f"{MIN_OBJECT_STORE_BYTES} bytes (75 MiB)")
        argv.append(f"--object-store-memory={options.object_store_memory}")
    if options.node_ip_address:
        argv.append(f"--node-ip-address={options.node_ip_address}")
    if options.temp_dir:
        argv.append(f"--temp-dir={options.temp_dir}")
    if options.block:
        argv.append("--block")
    return argv + list(options.extra_ray_args)


def _run_relaying(argv: Sequence[str], env: Mapping[str, str]) -> tuple[int, str]:
    """Run `ray start`, pass its output through, forward SIGTERM/SIGINT/SIGHUP (systemd stops us)."""
    child = subprocess.Popen(list(argv), env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             bufsize=1)
    forwarded = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {s: signal.signal(s, lambda signum, _frame: child.send_signal(signum)) for s in forwarded}
    tail: deque[str] = deque(maxlen=400)
    try:
        for line in child.stdout or ():
            sys.stdout.write(line)
            sys.stdout.flush()
            tail.append(line)
        return child.wait(), "".join(tail)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def join_board(options: JoinOptions, *, environ: Mapping[str, str] | None = None, home: Path | None = None) -> int:
    """Check versions and token, then start this machine's Ray node as board `options.name`."""
    environ = os.environ if environ is None else environ
    host, port = parse_address(options.address)
    argv = ray_start_argv(options)  # validates the name and sizes before anything is contacted
    token = resolve_auth_token(options.token_file, environ, home or Path.home())
    if token is None:
        log.warning("no auth token found (--token-file, $RAY_AUTH_TOKEN, ~/.ray/auth_token): joining without "
                    "one, which only works if the head runs with RAY_AUTH_MODE=disabled")
    else:
        log.info("using the %s", token)
    env = child_environment(environ, token)
    check_reachable(host, port)
    local = local_versions()
    head = read_head_versions(options.address, env, options.probe_timeout_s)
    if head is not None:
        problems = version_problems(local, head, environ.get(MATCH_LEVEL_ENV, "patch"))
        if problems:
            raise JoinError(f"this board cannot join the cluster at {options.address}:\n  " + "\n  ".join(problems))
        log.info("versions match the head: ray %s, Python %s", head.ray, head.python)
    log.info("starting the Ray node for board %r: %s", options.name, " ".join(argv[1:]))
    code, output = _run_relaying(argv, env)
    mismatch = parse_version_mismatch(output)
    if code != 0 and mismatch is not None:
        head, local = mismatch
        raise JoinError("Ray refused this board:\n  " + "\n  ".join(
            version_problems(local, head, environ.get(MATCH_LEVEL_ENV, "patch"))))
    if code == 0 and not options.block:
        log.info("board %r joined %s; keep it up with deploy/edgesweep-board.service", options.name, options.address)
    return code
