"""Security properties of a sweep: what listens where, what gets unpickled, what reaches a shell.

Covered elsewhere, and checked here only to exist (see `test_checks_covered_elsewhere_still_exist`):
- joining the board uses Ray token auth and never prints or logs the token:
  tests/device_actors/test_join.py (token only in the child's environment, never in argv, repr,
  logs or output; a world-readable token file is warned about);
- artifacts sent to the board are verified by sha256 before use, cache hits included:
  tests/device_actors/test_measure.py and tests/device_actors/test_actor.py.
"""
from __future__ import annotations

import ast
import inspect
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# Directories of the repository that hold no project code (environments, outputs, caches).
NOT_PROJECT_CODE = {".venv", "venv", ".git", "runs", "mlruns", "build", "dist", "node_modules", "__pycache__",
                    "edgesweep.egg-info"}


# ---- listening sockets ---------------------------------------------------------------------------


def _listening_addresses(pid: int) -> set[str]:
    """'host:port' of every TCP socket process `pid` listens on (from /proc, no extra tools)."""
    inodes = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # the process ended after it was listed (a server's short-lived helper)
        return set()
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            hex_ip, hex_port = local.split(":")
            if width == 8:
                host = socket.inet_ntop(socket.AF_INET, bytes.fromhex(hex_ip)[::-1])
            else:
                words = [bytes.fromhex(hex_ip[i:i + 8])[::-1] for i in range(0, 32, 8)]
                host = socket.inet_ntop(socket.AF_INET6, b"".join(words))
            found.add(f"{host}:{int(hex_port, 16)}")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sweep_dir(tmp_path) -> Path:
    """The state a finished sweep leaves behind for `report` (config, sweep.json, an empty record)."""
    config = tmp_path / "kd.yaml"
    config.write_text(yaml.safe_dump({"name": "secure", "output_dir": str(tmp_path / "runs"),
                                      "search": {"quantization": {"choice": ["fp32", "int8"]}},
                                      "searcher": {"algorithm": "random", "trials": 2}}))
    sweep_dir = tmp_path / "runs" / "secure"
    sweep_dir.mkdir(parents=True)
    from orchestrator.config import load_config

    (sweep_dir / "sweep.json").write_text(json.dumps({
        "name": "secure", "config": load_config(config).to_dict(), "tracking_uri": f"sqlite:///{sweep_dir / 'mlflow.db'}",
        "experiment_id": "1", "parent_run_id": "0"}, default=str))
    return sweep_dir


def _printed_ui_command(sweep_dir: Path, capsys) -> list[str]:
    from orchestrator.cli import main

    assert main(["report", str(sweep_dir)]) == 0  # the sweep command prints the same report when it ends
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("MLflow UI: ")]
    return shlex.split(line.removeprefix("MLflow UI: "))


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_mlflow_ui_command_the_sweep_prints_binds_localhost_only(sweep_dir, capsys):
    argv = _printed_ui_command(sweep_dir, capsys)  # one line, however long the store path
    assert Path(argv[0]).name == "mlflow" and argv[1] == "ui" and _option(argv, "--port") == "5000"
    assert _option(argv, "--host") == "127.0.0.1"
    assert _option(argv, "--backend-store-uri") == f"sqlite:///{sweep_dir / 'mlflow.db'}"


@pytest.mark.slow  # starts the real MLflow server (uvicorn, 4 workers): about 20 s on 2 busy cores
def test_mlflow_ui_started_as_printed_listens_on_localhost_only(sweep_dir, capsys):
    argv = _printed_ui_command(sweep_dir, capsys)
    port = _free_port()
    argv[argv.index("--port") + 1] = str(port)
    argv[0] = str(Path(sys.executable).parent / "mlflow")
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, listening = time.monotonic() + 120, set()
        while time.monotonic() < deadline and not listening:
            assert server.poll() is None, "mlflow ui exited"
            group = [int(p) for p in os.listdir("/proc") if p.isdigit() and _in_group(int(p), server.pid)]
            listening = {a for pid in group for a in _listening_addresses(pid) if a.endswith(f":{port}")}
            time.sleep(0.5)
        assert listening == {f"127.0.0.1:{port}"}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def _in_group(pid: int, group: int) -> bool:
    try:
        return os.getpgid(pid) == group
    except (ProcessLookupError, PermissionError):
        return False


INIT_RAY = """
import json, time
from pathlib import Path
import ray
from orchestrator.sweep import init_ray

init_ray(None, num_cpus=1)
node = ray._private.worker._global_node
pids = [info.process.pid for info in node.all_processes.get("dashboard", [])]
time.sleep(3)  # give whatever the dashboard process serves the time to bind
print(json.dumps({"webui_url": node.address_info.get("webui_url"), "dashboards": [
    {"argv": Path(f"/proc/{pid}/cmdline").read_text().split(chr(0)), "listening": sorted(_listening_addresses(pid))}
    for pid in pids]}))
"""


def test_init_ray_serves_no_dashboard_and_its_api_process_binds_localhost_only():
    """`init_ray` passes include_dashboard=False. Ray still runs its API process, in minimal mode:
    no UI modules, no frontend, bound to 127.0.0.1 (checked on its real sockets)."""
    script = "\n".join(["import os, socket", inspect.getsource(_listening_addresses), INIT_RAY])
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=180,
                          env={**env, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads(done.stdout.strip().splitlines()[-1])
    assert not state["webui_url"]
    for dashboard in state["dashboards"]:
        argv = dashboard["argv"]
        assert "--minimal" in argv and "--disable-frontend" in argv and "--host=127.0.0.1" in argv, argv
        assert all(a.startswith("127.0.0.1:") for a in dashboard["listening"]), dashboard["listening"]


PRIVATE_HEAD = """
import sys, ray
from orchestrator.sweep import init_ray
init_ray(None, num_cpus=1)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the test closes stdin
ray.shutdown()
"""


def test_a_private_sweep_cluster_uses_token_auth_and_refuses_a_board_with_a_wrong_token(tmp_path):
    """Ray 2.60 binds its gRPC servers on every interface (no loopback-only setting), so the private
    cluster a sweep starts must demand a token; `board join` with another token is refused and says how."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PYTHONPATH=str(REPO), HOME=str(tmp_path))  # no ~/.ray/auth_token: a throwaway token
    head = subprocess.Popen([sys.executable, "-c", PRIVATE_HEAD], cwd=REPO, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        address = head.stdout.readline().strip()
        assert address, "the private cluster did not start"
        wrong = tmp_path / "wrong_token"
        wrong.write_text("0" * 64)
        joined = subprocess.run([sys.executable, "-m", "orchestrator", "board", "join", "--address", address,
                                 "--name", "intruder", "--token-file", str(wrong)],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
        assert joined.returncode == 2, joined.stderr[-3000:]
        assert "rejected this board's auth token" in joined.stderr and "--token-file" in joined.stderr
        assert "0" * 64 not in joined.stdout + joined.stderr  # the token is never printed
    finally:
        head.stdin.close()
        head.wait(60)


# ---- checkpoints are loaded with weights_only=True -----------------------------------------------


class _RunsCodeWhenUnpickled:
    """A pickled payload: unpickling calls exec(), which writes the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('the pickled code ran')",)


@pytest.fixture
def booby_trapped_checkpoint(tmp_path) -> tuple[Path, Path]:
    """An EdgeSweep-looking checkpoint (format, model spec, weights) with a pickled object inside."""
    import torch

    from trainables.checkpoint import FORMAT
    from trainables.models.yolo import ModelSpec, build_model

    marker = tmp_path / "pwned"
    spec = ModelSpec("n", 10)
    path = tmp_path / "trapped.pt"
    torch.save({"format": FORMAT, "model_spec": spec.to_dict(), "model": build_model(spec).state_dict(),
                "extra": _RunsCodeWhenUnpickled(marker)}, path)
    return path, marker


def test_the_trap_is_live_when_unpickled_unsafely(booby_trapped_checkpoint):
    """The control: the payload of the next tests does run code under a plain (unsafe) load."""
    import torch

    path, marker = booby_trapped_checkpoint
    torch.load(path, weights_only=False)
    assert marker.read_text() == "the pickled code ran"


def test_checkpoint_with_a_pickled_object_is_refused_and_its_code_never_runs(booby_trapped_checkpoint):
    from trainables.checkpoint import CheckpointError, load_checkpoint, load_model

    path, marker = booby_trapped_checkpoint
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {path}"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError):
        load_model(path)
    assert not marker.exists()


def test_sweep_refuses_a_booby_trapped_student_init_before_anything_starts(booby_trapped_checkpoint, tmp_path,
                                                                           capsys):
    from detection.synth import SynthConfig, generate
    from orchestrator.cli import main

    path, marker = booby_trapped_checkpoint
    data = tmp_path / "data"
    generate(data, train=2, val=2, seed=0, config=SynthConfig(size=64))
    config = tmp_path / "kd.yaml"
    config.write_text(yaml.safe_dump({
        "name": "trapped", "output_dir": str(tmp_path / "runs"),
        "data": {"source": "coco", "root": str(data), "calibration_images": 2},
        "student": {"model": "n", "init": str(path)}, "search": {"quantization": {"choice": ["fp32", "int8"]}},
        "fixed": {"epochs": 1, "img_size": 64}, "searcher": {"algorithm": "random", "trials": 2}}))
    assert main(["sweep", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"student.init: cannot read checkpoint {path}" in err and "Weights only load failed" in err
    assert not marker.exists() and not (tmp_path / "runs" / "trapped").exists()


# ---- no shell -------------------------------------------------------------------------------------


def project_python_files(root: Path = REPO) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in NOT_PROJECT_CODE and not d.startswith(".")]
        out += [Path(dirpath) / f for f in filenames if f.endswith(".py")]
    return sorted(out)


SHELL_FUNCTIONS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"),
                   ("subprocess", "getstatusoutput"), ("asyncio", "create_subprocess_shell"), ("pty", "spawn")}
SUBPROCESS_FUNCTIONS = {"run", "Popen", "call", "check_call", "check_output"}


def _dotted(node: ast.AST) -> tuple[str, ...]:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return tuple(reversed(parts))


def _is_string_expression(node: ast.AST) -> bool:
    """A str literal, an f-string, a concatenation or a .format()/% of strings: a command line."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp):
        return _is_string_expression(node.left) or _is_string_expression(node.right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in {"format", "join"}:
        return _is_string_expression(node.func.value)
    return False


def shell_uses(source: str, filename: str = "<source>") -> list[str]:
    """Every place `source` builds a command for a shell: shell=True, os.system & co, or a
    subprocess call whose command is a string instead of an argv list."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        where = f"{filename}:{node.lineno}"
        for kw in node.keywords:
            if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                found.append(f"{where}: shell=... in {'.'.join(name) or 'a call'}")
        if name[-2:] in SHELL_FUNCTIONS:
            found.append(f"{where}: {'.'.join(name)}")
        elif name[-2:-1] == ("subprocess",) and name[-1] in SUBPROCESS_FUNCTIONS and node.args \
                and _is_string_expression(node.args[0]):
            found.append(f"{where}: {'.'.join(name)} with a command string")
    return found


def test_the_shell_scanner_finds_each_kind_of_shell_command():
    bad = textwrap.dedent("""
        import os, subprocess
        os.system("ls " + user)
        os.popen(f"cat {path}")
        subprocess.run("ls -l", check=True)
        subprocess.Popen(["ls"], shell=True)
        subprocess.check_output("echo {}".format(x))
        subprocess.getoutput(cmd)
    """)
    assert [f.split(": ", 1)[1] for f in shell_uses(bad)] == [
        "os.system", "os.popen", "subprocess.run with a command string", "shell=... in subprocess.Popen",
        "subprocess.check_output with a command string", "subprocess.getoutput"]
    assert shell_uses("import subprocess\nsubprocess.run([sys.executable, '-m', 'x', name], check=True)\n") == []


def test_no_python_file_of_the_repository_builds_a_shell_command():
    files = project_python_files()
    assert REPO / "device_actors" / "join.py" in files and REPO / "tests" / "test_security.py" in files
    found = [use for f in files for use in shell_uses(f.read_text(encoding="utf-8"), str(f.relative_to(REPO)))]
    assert found == []


def test_every_torch_load_in_the_repository_is_weights_only():
    unsafe = []
    for f in project_python_files():
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and _dotted(node.func)[-2:] == ("torch", "load"):
                safe = any(kw.arg == "weights_only" and isinstance(kw.value, ast.Constant) and kw.value.value is True
                           for kw in node.keywords)
                if not safe and f != Path(__file__).resolve():
                    unsafe.append(f"{f.relative_to(REPO)}:{node.lineno}")
    assert unsafe == []


# ---- referenced, not duplicated ------------------------------------------------------------------


COVERED_ELSEWHERE = {
    "tests/device_actors/test_join.py": ["test_token_reaches_ray_start_through_the_environment_only",
                                         "test_unreachable_head_is_reported_without_leaking_the_token",
                                         "test_world_readable_token_file_is_warned_about",
                                         "test_auth_token_repr_hides_the_value"],
    "tests/device_actors/test_measure.py": ["test_bytes_that_do_not_match_the_requested_hash_are_refused"],
    "tests/device_actors/test_actor.py": ["test_cache_hit_still_checks_the_bytes_against_the_hash"],
}


def test_checks_covered_elsewhere_still_exist():
    for path, names in COVERED_ELSEWHERE.items():
        defined = {n.name for n in ast.walk(ast.parse((REPO / path).read_text())) if isinstance(n, ast.FunctionDef)}
        assert set(names) <= defined, f"{path} lost {sorted(set(names) - defined)}"
