"""The sweep directory's own bookkeeping: one driver at a time, and the config as it was run.

A sweep directory (`output_dir/name/`) is its home: Tune's state, the Optuna study, the journal of
finished trials, the MLflow store and its artifacts, the report. Two drivers on one directory would
corrupt all of them, so a driver holds `driver.lock` (an flock, released by the kernel if the
driver dies) for its whole life. `sweep.json` holds the config as run; `--resume` and `report` use
it, never the YAML as it is now.

Paths inside the sweep directory are stored relative to it (`SWEEP_DIR_TOKEN`), so a sweep copied
or moved elsewhere reports and resumes where it is; a URI's password is never stored
(`common.redact`). The directory is private to its owner (`common.atomic.private_dir`): Tune's
state in `tune/` is pickles, which `--resume` loads and so runs as code.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

from common import atomic
from common.errors import UserError
from common.locking import LockUnsupported, lock_exclusive
from common.redact import redact, redact_tree, was_redacted
from orchestrator.config import SweepConfig, parse_config
from orchestrator._ray_internals import tune_state_saved
from orchestrator.results import RECORDS, load_records

log = logging.getLogger(__name__)

STATE = "sweep.json"
SWEEP_DIR_TOKEN = "{sweep_dir}"  # in sweep.json: the sweep directory wherever it is now
LOCK = "driver.lock"
# Keys a resumed sweep may take from an edited YAML: they change nothing a finished trial measured.
# The trial count and concurrency live in Tune's saved state and cannot change on resume.
RESUMABLE_CHANGES = ("board.timeout_s",)
# Keys a resume does not compare: the tracking store is chosen by `resume_tracking_uri` (the URI
# resolves $MLFLOW_TRACKING_URI when the YAML is read, which may differ from the start's).
CHOSEN_ON_RESUME = ("mlflow.tracking_uri",)


class StateDamaged(UserError, ValueError):
    """sweep.json that cannot be read: named with what still holds the results."""


class NotResumable(UserError, ValueError):
    """A sweep directory that `--resume` (or a fresh start) must not run from as it is."""


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
        atomic.private_dir(sweep_dir)
        lock = cls(sweep_dir / LOCK)
        fd = os.open(lock.path, os.O_RDWR | os.O_CREAT, 0o600)
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


def check_resumable(sweep_dir: Path, tune_dir: Path) -> None:
    """Refuse a resume that cannot or must not run: a damaged sweep.json (named), no state saved by
    Tune (the driver stopped before its first save: a plain start runs it again), or a directory that
    other users could have written (Tune's state is pickles, which a resume runs as code)."""
    if (Path(sweep_dir) / STATE).exists():
        read_state(sweep_dir)
    for path in (sweep_dir, tune_dir):
        reason = atomic.writable_by_others(path) if Path(path).exists() else None
        if reason:
            raise NotResumable(f"{path}: {reason}. Tune's state in {tune_dir} is pickles, which --resume runs as code: "
                               f"check that nobody else changed it, make it yours alone (chmod -R go-w {sweep_dir}), "
                               f"then resume")
    if not tune_state_saved(tune_dir):
        why = " (its driver stopped before Tune's first save)" if Path(tune_dir).exists() else ""
        raise NotResumable(f"--resume: no saved sweep state in {tune_dir}{why}; run the sweep without --resume: it "
                           f"starts again")


def clear_unsaved_start(sweep_dir: Path, leftovers: list[Path]) -> None:
    """A start whose driver stopped before Tune's first save left `tune/` (and perhaps a study) that
    nothing can resume: remove them so the sweep starts again. Refused if trials ended already."""
    ended = load_records(sweep_dir)
    if ended:
        raise NotResumable(f"{sweep_dir}: Tune saved no state, yet {len(ended)} trial(s) are in {Path(sweep_dir) / RECORDS}"
                           f"; the sweep can neither resume nor start again here. Move the directory away (its journal "
                           f"and report keep the results) or give the sweep another `name:`")
    log.warning("%s: the last driver stopped before Tune saved any state; starting the sweep again", sweep_dir)
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


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
    config = {**cfg.to_dict(), "output_dir": f"{SWEEP_DIR_TOKEN}/.."}
    state = {"name": cfg.name, "source": str(cfg.source), "tracking_uri": tracking_uri, "experiment_id": experiment_id,
             "parent_run_id": parent_run_id, "commit": commits[0], "commits": commits, "config": config}
    text = json.dumps(redact_tree(state), indent=2, default=str)
    atomic.write_text(path, re.sub(re.escape(_in_json(sweep_dir)) + r'(?=[/"])', SWEEP_DIR_TOKEN, text))


def _in_json(sweep_dir: Path) -> str:
    """The sweep directory's absolute path as it reads inside a JSON string."""
    return json.dumps(str(Path(sweep_dir).resolve()))[1:-1]


def read_state(sweep_dir: Path) -> dict:
    """sweep.json with its paths inside the sweep directory made absolute again, where it is now."""
    path = Path(sweep_dir) / STATE
    if not path.exists():
        raise FileNotFoundError(f"{sweep_dir} is not a sweep directory (no {STATE}): give runs/sweeps/NAME or the YAML")
    try:
        state = json.loads(path.read_text().replace(SWEEP_DIR_TOKEN, _in_json(sweep_dir)))
    except (ValueError, OSError, RecursionError) as e:
        raise StateDamaged(f"{path}: the sweep's state file is damaged ({e}); the journal {Path(sweep_dir) / RECORDS} "
                           f"and the report files are intact, but --resume, report and best need this file: restore "
                           f"it from a backup, or run the YAML again under a new name") from None
    if not isinstance(state, dict) or "config" not in state:
        raise StateDamaged(f"{path}: not a sweep's state file (no config in it)")
    if state.get("name") != Path(sweep_dir).resolve().name:
        raise StateDamaged(f"{path}: the sweep {state.get('name')!r} lives in a directory named after it, but this one "
                           f"is {Path(sweep_dir).resolve().name!r}; rename the directory back to {state.get('name')!r} "
                           f"(it may move anywhere) and run again")
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
    before, after = flat_keys(redact_tree(stored.to_dict())), flat_keys(redact_tree(given.to_dict()))
    return [k for k in dict.fromkeys([*before, *after]) if before.get(k, ...) != after.get(k, ...)]


def resume_config(sweep_dir: Path, given: SweepConfig) -> SweepConfig:
    """What `--resume` runs: the stored config, with only the `RESUMABLE_CHANGES` taken from `given`."""
    stored = stored_config(sweep_dir)
    refused = [k for k in changed_keys(stored, given) if k not in (*RESUMABLE_CHANGES, *CHOSEN_ON_RESUME)]
    if refused:
        raise ConfigChanged(f"{given.source}: differs from the config {sweep_dir.name!r} was started with "
                            f"({sweep_dir / STATE}) in {', '.join(refused)}; --resume runs the stored config and may "
                            f"only change {', '.join(RESUMABLE_CHANGES)}. Undo the edit, or start a new sweep under "
                            f"another `name:`")
    return replace(stored, board=replace(stored.board, timeout_s=given.board.timeout_s), source=given.source)


class SecretNeeded(UserError, ValueError):
    """A resume whose tracking URI had a password, which sweep.json does not keep."""


def resume_tracking_uri(sweep_dir: Path, given: str | None, yaml_uri: str | None) -> str:
    """The MLflow store a resume logs to: `given` (--tracking-uri) if any, else the store the sweep
    ran on (sweep.json). Its password, which sweep.json does not keep, comes back from the YAML's
    or $MLFLOW_TRACKING_URI's URI when that names the same store, or is asked for."""
    if given:
        return given
    stored = read_state(sweep_dir)["tracking_uri"]
    if not was_redacted(stored):
        return stored
    for candidate in (yaml_uri, os.environ.get("MLFLOW_TRACKING_URI")):
        if candidate and redact(candidate) == stored:
            return candidate
    raise SecretNeeded(f"{Path(sweep_dir) / STATE}: the sweep logs to {stored}, whose password is not stored; give "
                       f"the URI again with --tracking-uri, or in MLFLOW_TRACKING_URI")
