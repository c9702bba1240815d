"""The sweep directory's own bookkeeping: one driver at a time, and the config as it was run.

A sweep directory (`output_dir/name/`) is its home: Tune's state, the Optuna study, the journal of
finished trials, the MLflow store and its artifacts, the report. Two drivers on one directory would
corrupt all of them, so a driver holds `driver.lock` (an flock, released by the kernel if the
driver dies) for its whole life. `sweep.json` holds the config as run; `--resume` and `report` use
it, never the YAML as it is now.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

from common import atomic
from common.errors import UserError
from common.locking import LockUnsupported, lock_exclusive
from orchestrator.config import SweepConfig, parse_config
from orchestrator.results import RECORDS

STATE = "sweep.json"
LOCK = "driver.lock"
# Keys a resumed sweep may take from an edited YAML: they change nothing a finished trial measured.
# The trial count and concurrency live in Tune's saved state and cannot change on resume.
RESUMABLE_CHANGES = ("board.timeout_s",)


class StateDamaged(UserError, ValueError):
    """sweep.json that cannot be read: named with what still holds the results."""


class SweepLocked(UserError, RuntimeError):
    """Another driver runs this sweep."""


class ConfigChanged(UserError, ValueError):
    """`--resume` with a YAML that differs from the config the sweep was started with."""


@dataclass
class SweepLock:
    """An exclusive flock on `sweep_dir/driver.lock`; the file says who holds it."""

    path: Path
    _fd: int | None = None

    @classmethod
    def acquire(cls, sweep_dir: Path) -> "SweepLock":
        sweep_dir.mkdir(parents=True, exist_ok=True)
        lock = cls(sweep_dir / LOCK)
        fd = os.open(lock.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            lock_exclusive(fd, lock.path, wait=False)
        except LockUnsupported:
            os.close(fd)
            raise
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "an unknown process"
            os.close(fd)
            raise SweepLocked(f"{sweep_dir} is being run by another driver ({holder}); wait for it to end or "
                              f"stop it (Ctrl-C or kill PID) before starting or resuming this sweep") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
                     .encode())
        lock._fd = fd
        return lock

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def project_commit() -> str:
    """The EdgeSweep commit this process runs ("<sha>-dirty" with uncommitted changes), or the
    installed version when it is not a git checkout: what a model card names as its code."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
        return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"edgesweep {version('edgesweep')} (not a git checkout)"
        except PackageNotFoundError:
            return "unknown (not a git checkout)"


def write_state(sweep_dir: Path, cfg: SweepConfig, *, tracking_uri: str, experiment_id: str,
                parent_run_id: str) -> None:
    """sweep.json; the commit stays the one that started the sweep (a resume adds its own if it differs)."""
    path = sweep_dir / STATE
    commits = read_state(sweep_dir).get("commits", []) if path.exists() else []
    commit = project_commit()
    commits += [] if commit in commits else [commit]
    atomic.write_text(path, json.dumps(
        {"name": cfg.name, "source": str(cfg.source), "tracking_uri": tracking_uri, "experiment_id": experiment_id,
         "parent_run_id": parent_run_id, "commit": commits[0], "commits": commits, "config": cfg.to_dict()},
        indent=2, default=str))


def read_state(sweep_dir: Path) -> dict:
    path = Path(sweep_dir) / STATE
    if not path.exists():
        raise FileNotFoundError(f"{sweep_dir} is not a sweep directory (no {STATE}): give runs/sweeps/NAME or the YAML")
    try:
        state = json.loads(path.read_text())
    except (ValueError, OSError, RecursionError) as e:
        raise StateDamaged(f"{path}: the sweep's state file is damaged ({e}); the journal {Path(sweep_dir) / RECORDS} "
                           f"and the report files are intact, but --resume, report and best need this file: restore "
                           f"it from a backup, or run the YAML again under a new name") from None
    if not isinstance(state, dict) or "config" not in state:
        raise StateDamaged(f"{path}: not a sweep's state file (no config in it)")
    return state


def stored_config(sweep_dir: Path) -> SweepConfig:
    """The config the sweep was started with."""
    return parse_config(read_state(sweep_dir)["config"], source=str(Path(sweep_dir) / STATE), base_dir=sweep_dir)


def flat_keys(tree: object, prefix: str = "") -> dict[str, object]:
    """A nested mapping as dotted key paths: {"board": {"name": x}} -> {"board.name": x}."""
    if isinstance(tree, dict):
        out: dict[str, object] = {}
        for key, value in tree.items():
            out.update(flat_keys(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree}


def changed_keys(stored: SweepConfig, given: SweepConfig) -> list[str]:
    """Key paths whose values differ between two configs, in the file's order."""
    before, after = flat_keys(stored.to_dict()), flat_keys(given.to_dict())
    return [k for k in dict.fromkeys([*before, *after]) if before.get(k, ...) != after.get(k, ...)]


def resume_config(sweep_dir: Path, given: SweepConfig) -> SweepConfig:
    """What `--resume` runs: the stored config, with only the `RESUMABLE_CHANGES` taken from `given`."""
    stored = stored_config(sweep_dir)
    refused = [k for k in changed_keys(stored, given) if k not in RESUMABLE_CHANGES]
    if refused:
        raise ConfigChanged(f"{given.source}: differs from the config {sweep_dir.name!r} was started with "
                            f"({sweep_dir / STATE}) in {', '.join(refused)}; --resume runs the stored config and may "
                            f"only change {', '.join(RESUMABLE_CHANGES)}. Undo the edit, or start a new sweep under "
                            f"another `name:`")
    return replace(stored, board=replace(stored.board, timeout_s=given.board.timeout_s), source=given.source)
