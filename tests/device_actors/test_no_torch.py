"""The board has a minimal install: every device_actors module imports and measures without torch.

Each check runs in a fresh interpreter whose `sys.meta_path` starts with a finder that raises on
torch and on the other packages the board does not install (mlflow, optuna, Ray Tune/Train,
TensorFlow, onnx, rich) and records every attempt, so even a guarded `try: import torch` fails
the test.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

BLOCKER = textwrap.dedent('''
    import sys
    BLOCKED = ("torch", "mlflow", "optuna", "ray.tune", "ray.train", "tensorflow", "onnx", "rich")
    attempts = []

    class BlockBoardAbsentPackages:
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                attempts.append(name)
                raise ImportError(f"{name} is not installed on the board")
            return None

    sys.meta_path.insert(0, BlockBoardAbsentPackages())
''')


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_every_device_actors_module_imports_and_measures_without_torch(tmp_path, toy_onnx):
    model = tmp_path / "toy.onnx"
    model.write_bytes(toy_onnx)
    done = _run('''
        import importlib, pkgutil
        import device_actors
        for info in pkgutil.walk_packages(device_actors.__path__, "device_actors."):
            importlib.import_module(info.name)
        from pathlib import Path
        from device_actors.actor import BoardLatencyActor
        from device_actors.measure import sha256_hex
        from device_actors.report import MeasureRequest
        from device_actors.timing import TimingProtocol
        data = Path(sys.argv[1]).read_bytes()
        req = MeasureRequest(sha256_hex(data), "onnxruntime", protocol=TimingProtocol(3, 10, 0.05))
        report = BoardLatencyActor("testboard", emulated=True, cache_dir=sys.argv[2]).measure(req, data)
        assert report.median_ms > 0 and report.postprocess_ms > 0, report
        print("measured", report.median_ms, "attempts", attempts, "torch" in sys.modules)
    ''', str(model), str(tmp_path / "cache"))
    assert done.returncode == 0, done.stderr
    assert "attempts [] False" in done.stdout


def test_board_cli_runs_without_torch_or_rich():
    done = _run('''
        import runpy
        sys.argv = ["orchestrator", "board", "join", "--help"]
        try:
            runpy.run_module("orchestrator", run_name="__main__")
        except SystemExit as e:
            print("exit", e.code, "attempts", attempts)
    ''')
    assert done.returncode == 0, done.stderr
    assert "--token-file" in done.stdout and "exit 0 attempts []" in done.stdout
