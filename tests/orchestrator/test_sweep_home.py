"""A sweep directory is a home that can move and that only its owner enters: paths inside it are
stored relative to it, passwords in URIs are never stored, it and its files are private, and a
start that stopped before Tune saved anything neither blocks a new start nor resumes.

Real sweep.json, journal, SQLite MLflow store, file modes and Tune-written state throughout; no
sweep runs here (tests/orchestrator/test_sweep_interrupts.py runs them)."""
from __future__ import annotations

import os
import pickle
import shutil
import stat

import pytest
import yaml

from common import atomic
from orchestrator.cli import main
from orchestrator.config import load_config
from orchestrator.results import TrialRecord, append_record
from orchestrator.sweep_state import (STATE, SecretNeeded, SweepLock, clear_unsaved_start, resume_config,
                                      resume_tracking_uri, stored_config, write_state)
from orchestrator.tracking.store import SweepTracking
from orchestrator.tracking.ui import ui_command

SECRET_URI = "postgresql://alice:s3cret-pw@db.example:5432/mlflow"


def _sweep_file(tmp_path, name: str = "home", **mlflow) -> "os.PathLike":
    raw = {"name": name, "output_dir": "runs", "search": {"quantization": {"choice": ["fp32", "int8"]}},
           "fixed": {"epochs": 1}, "searcher": {"algorithm": "tpe", "trials": 2}, **({"mlflow": mlflow} if mlflow else {})}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# A server nobody runs: tests that need no MLflow store skip creating one (seconds of schema set-up).
NO_STORE = "http://127.0.0.1:9"


def _started(tmp_path, **mlflow):
    """A sweep directory as a start leaves it: private, locked once, sweep.json, and on a SQLite store
    its MLflow parent run."""
    cfg = load_config(_sweep_file(tmp_path, **(mlflow or {"tracking_uri": NO_STORE})))
    SweepLock.acquire(cfg.sweep_dir).release()
    uri = cfg.mlflow.tracking_uri
    if uri.startswith("sqlite"):
        tracking = SweepTracking.open(uri, cfg.mlflow.experiment, artifact_dir=cfg.sweep_dir / "mlartifacts")
        parent, _ = tracking.parent_run(cfg.name, cfg.sweep_dir, resume=False)
        experiment = tracking.experiment_id
    else:
        parent, experiment = "p", "1"
    write_state(cfg.sweep_dir, cfg, tracking_uri=uri, experiment_id=experiment, parent_run_id=parent)
    return cfg


def test_the_sweep_directory_its_lock_and_state_files_and_the_cache_are_private(tmp_path, monkeypatch):
    cfg = _started(tmp_path)
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(cfg.sweep_dir) == 0o700
    assert mode(cfg.sweep_dir / "driver.lock") == 0o600 and mode(cfg.sweep_dir / STATE) == 0o600
    atomic.write_text(cfg.sweep_dir / "report" / "x.json", "{}")
    assert mode(cfg.sweep_dir / "report" / "x.json") == 0o600
    append_record(cfg.sweep_dir, TrialRecord("t1", "failed", {}, {}))
    assert mode(cfg.sweep_dir / "trials.jsonl") == 0o600
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    os.chmod(loose, 0o777)
    monkeypatch.setenv("EDGESWEEP_CACHE", str(loose))
    from orchestrator.datasets import cache_dir

    assert cache_dir() == loose and mode(loose) == 0o700  # an existing cache of this user's is narrowed


def test_a_resume_refuses_a_directory_other_users_may_write_naming_it(tmp_path, capsys):
    cfg = _started(tmp_path)
    os.chmod(cfg.sweep_dir, 0o777)
    assert main(["sweep", str(cfg.source), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"{cfg.sweep_dir}: its group or other users may write it (mode 0777)" in err
    assert "pickles, which --resume runs as code" in err and "Traceback" not in err


def test_a_torn_sweep_json_stops_resume_with_exit_2_naming_it(tmp_path, capsys):
    cfg = _started(tmp_path)
    text = (cfg.sweep_dir / STATE).read_text()
    (cfg.sweep_dir / STATE).write_text(text[: len(text) // 2])  # what an in-place write cut by a crash leaves
    assert main(["sweep", str(cfg.source), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"{cfg.sweep_dir / STATE}: the sweep's state file is damaged" in err and "Traceback" not in err


def test_a_copied_sweep_is_read_where_it_is_and_a_renamed_one_is_refused(tmp_path, capsys):
    cfg = _started(tmp_path)
    state = (cfg.sweep_dir / STATE).read_text()
    assert str(cfg.sweep_dir) not in state and '"output_dir": "{sweep_dir}/.."' in state  # the YAML's path stays
    copy = tmp_path / "elsewhere" / "home"
    shutil.copytree(cfg.sweep_dir, copy)
    assert stored_config(copy).sweep_dir == copy
    copy.rename(tmp_path / "elsewhere" / "renamed")
    assert main(["report", str(tmp_path / "elsewhere" / "renamed")]) == 2
    assert "rename the directory back to 'home'" in capsys.readouterr().err


@pytest.mark.slow  # `report` with its MLflow backfill and plots: about 40 s on a busy 2-core machine
def test_a_copied_sweep_reports_into_the_copy_from_its_own_store(tmp_path, capsys):
    cfg = _started(tmp_path, tracking_uri=None)
    append_record(cfg.sweep_dir, TrialRecord("t1", "complete", cfg.search.complete({"quantization": "fp32"}),
                                             {"map50_95": 0.3, "latency_ms": 5.0, "size_mb": 1.0}))
    copy = tmp_path / "elsewhere" / "home"
    shutil.copytree(cfg.sweep_dir, copy)
    original_store = (cfg.sweep_dir / "mlflow.db").read_bytes()

    assert stored_config(copy).sweep_dir == copy
    assert main(["report", str(copy)]) == 0
    out = capsys.readouterr().out
    assert (copy / "report" / "pareto.csv").exists() and not (cfg.sweep_dir / "report").exists()
    assert f"sqlite:///{copy / 'mlflow.db'}" in out  # the UI command opens the copy's store
    assert (cfg.sweep_dir / "mlflow.db").read_bytes() == original_store  # the report's backfill went to the copy


def test_a_password_in_a_tracking_uri_is_never_stored_or_printed_and_a_resume_gets_it_back(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = _started(tmp_path, tracking_uri=SECRET_URI)
    assert "s3cret-pw" not in (cfg.sweep_dir / STATE).read_text()
    assert "alice:***@db.example" in (cfg.sweep_dir / STATE).read_text()
    assert "s3cret-pw" not in ui_command(SECRET_URI)
    assert resume_config(cfg.sweep_dir, cfg) == stored_config(cfg.sweep_dir)  # the YAML's URI is not an edit

    with pytest.raises(SecretNeeded, match="give the URI again with --tracking-uri, or in MLFLOW_TRACKING_URI"):
        resume_tracking_uri(cfg.sweep_dir, None, None)
    assert resume_tracking_uri(cfg.sweep_dir, None, SECRET_URI) == SECRET_URI  # the YAML names it
    monkeypatch.setenv("MLFLOW_TRACKING_URI", SECRET_URI)
    assert resume_tracking_uri(cfg.sweep_dir, None, None) == SECRET_URI
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://alice:pw@other.example/mlflow")  # another store
    with pytest.raises(SecretNeeded):
        resume_tracking_uri(cfg.sweep_dir, None, None)

    from orchestrator.tracking.callback import MlflowTrialCallback

    saved = pickle.dumps(MlflowTrialCallback(SECRET_URI, "1", "p", complete_knobs=dict))  # as Tune saves it in tune/
    assert b"s3cret-pw" not in saved and pickle.loads(saved).tracking_uri == "postgresql://alice:***@db.example:5432/mlflow"


def test_the_mlflow_config_artifact_hides_passwords(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking = SweepTracking.open(uri, "x", artifact_dir=tmp_path / "mlartifacts")
    parent, _ = tracking.parent_run("x", tmp_path, resume=False)
    tracking.log_config(parent, {"name": "x", "mlflow": {"tracking_uri": SECRET_URI}}, {})
    logged = tracking.client.download_artifacts(parent, "config.json", str(tmp_path))
    assert "s3cret-pw" not in open(logged).read() and "alice:***@" in open(logged).read()


def test_a_start_that_stopped_before_tunes_first_save_cannot_resume_and_is_cleared_for_a_new_start(tmp_path,
                                                                                                 capsys):
    from ray import tune

    cfg = _started(tmp_path)
    # What the driver leaves when it dies between building the Tuner (tuner.pkl) and Tune's first save.
    tune.Tuner(lambda config: None, run_config=tune.RunConfig(name="tune", storage_path=str(cfg.sweep_dir)))
    assert (cfg.sweep_dir / "tune" / "tuner.pkl").exists()
    assert main(["sweep", str(cfg.source), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "(its driver stopped before Tune's first save); run the sweep without --resume: it starts again" in err
    assert "Traceback" not in err and "ValueError" not in err

    append_record(cfg.sweep_dir, TrialRecord("t1", "complete", {}, {}))  # a trial ended: starting again would lose it
    with pytest.raises(Exception, match="neither resume nor start again here"):
        clear_unsaved_start(cfg.sweep_dir, [cfg.sweep_dir / "tune"])
    (cfg.sweep_dir / "trials.jsonl").unlink()
    clear_unsaved_start(cfg.sweep_dir, [cfg.sweep_dir / "tune", cfg.sweep_dir / "optuna.db"])
    assert not (cfg.sweep_dir / "tune").exists()


def test_the_cli_log_handlers_hide_a_password_whichever_library_logs_it(tmp_path, capsys):
    import logging

    assert main(["report", str(tmp_path / "no-sweep")]) == 2  # main installs its handlers' filter
    for handler in logging.getLogger().handlers:
        record = logging.LogRecord("sqlalchemy.pool", logging.WARNING, __file__, 1, "cannot connect to %s",
                                   (SECRET_URI,), None)
        assert handler.filter(record)
        assert "s3cret-pw" not in handler.format(record) and "alice:***@db.example" in handler.format(record)
