"""The real `python -m orchestrator sweep` CLI in its own process, with test-only stand-in stages.

Training and export are the stand-ins of `orchestrator.stand_in_stages` (they sleep and return a
toy ONNX detector) for tests about the sweep machinery; Ray, Tune, Optuna, MLflow, the journal,
the board actor, signals and exit codes are real.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from orchestrator.results import load_records

REPO = Path(__file__).resolve().parents[1]
CLI_WITH_STAND_INS = textwrap.dedent("""
    import sys
    import orchestrator.sweep
    from orchestrator.stand_in_stages import StandInStages
    # Test-only: training and export are stand-ins; the rest is the real CLI.
    orchestrator.sweep.RealStages = lambda: StandInStages(train_seconds=float(sys.argv[1]))
    from orchestrator.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def driver_env(tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "PYTHONPATH": str(REPO), "EDGESWEEP_CACHE": str(tmp_path / "cache"), **extra}


class Driver:
    """The CLI in its own process group; its output goes to files (a full pipe would block it)."""

    def __init__(self, tmp_path: Path, config: Path, *args: str, train_seconds: float = 3.0, env: dict | None = None):
        script = tmp_path / "cli.py"
        script.write_text(CLI_WITH_STAND_INS)
        n = len(list(tmp_path.glob("driver-*.out")))
        self.out_path, self.err_path = tmp_path / f"driver-{n}.out", tmp_path / f"driver-{n}.err"
        with self.out_path.open("w") as out, self.err_path.open("w") as err:
            self.process = subprocess.Popen([sys.executable, str(script), str(train_seconds), "sweep", str(config),
                                             *args], env=env or driver_env(tmp_path), cwd=tmp_path, start_new_session=True,
                                            stdout=out, stderr=err)
        self.pid = self.process.pid

    def wait(self, timeout_s: float) -> tuple[int, str, str]:
        try:
            self.process.wait(timeout_s)
        finally:
            if self.process.poll() is None:
                os.killpg(self.pid, signal.SIGKILL)
        return self.process.returncode, self.out_path.read_text(), self.err_path.read_text()


def start_driver(tmp_path: Path, config: Path, *args: str, train_seconds: float = 3.0, env: dict | None = None) -> Driver:
    return Driver(tmp_path, config, *args, train_seconds=train_seconds, env=env)


def wait_for_records(driver: Driver, sweep_dir: Path, count: int, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while sum(r.complete for r in load_records(sweep_dir)) < count:
        assert driver.process.poll() is None, "the driver ended early:\n" + driver.err_path.read_text()[-3000:]
        assert time.monotonic() < deadline, "no trial finished in time"
        time.sleep(0.3)


def wait_for_started_trials(driver: Driver, sweep_dir: Path, count: int, timeout_s: float = 240) -> None:
    """Until Tune has started `count` trials (their directories under tune/ exist): on a slow machine a
    trial process takes seconds to start after the previous one ended."""
    deadline = time.monotonic() + timeout_s
    while len(list((sweep_dir / "tune").glob("run_trial_*"))) < count:
        assert driver.process.poll() is None, "the driver ended early:\n" + driver.err_path.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{count} trials did not start in time"
        time.sleep(0.2)


def stop_and_wait(driver: Driver, sig: int) -> tuple[int, str, str, float]:
    """Send `sig` to the driver process alone (as a terminal or systemd would) and wait for it."""
    sent = time.monotonic()
    driver.process.send_signal(sig)
    code, out, err = driver.wait(180)
    return code, out, err, time.monotonic() - sent


