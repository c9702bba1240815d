"""A sweep directory on a hostile file system or with a hostile state file: named, exit 2, no traceback."""
from __future__ import annotations

import errno
import fcntl

import pytest

from common.locking import LockUnsupported
from orchestrator.cli import main
from orchestrator.datasets import EmbeddedDefault, embedded_default
from orchestrator.sweep_state import LOCK, SweepLock


@pytest.fixture
def no_locks(monkeypatch):
    """flock as on NFS mounted without its lock service (ENOLCK). Such a mount cannot be made on the test
    machine (no NFS server, no FUSE), so this one call is replaced; everything around it is real."""
    def refuse(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)


def test_a_sweep_directory_without_file_locks_is_refused_naming_the_lock_file(tmp_path, no_locks):
    with pytest.raises(LockUnsupported) as refused:
        SweepLock.acquire(tmp_path / "sweep")
    assert str(tmp_path / "sweep" / LOCK) in str(refused.value)
    assert "does not support file locks (No locks available)" in str(refused.value)


def test_a_cache_without_file_locks_is_refused_naming_the_lock_file(tmp_path, monkeypatch, no_locks):
    monkeypatch.setenv("EDGESWEEP_CACHE", str(tmp_path / "cache"))
    with pytest.raises(LockUnsupported, match=r"/\.lock: cannot lock this file"):
        embedded_default(EmbeddedDefault(train=1, val=1, size=32))


def test_a_sweep_json_nested_100000_deep_is_named_with_exit_2(tmp_path, capsys):
    sweep_dir = tmp_path / "deep"
    sweep_dir.mkdir()
    (sweep_dir / "sweep.json").write_text("[" * 100_000 + "]" * 100_000)
    assert main(["report", str(sweep_dir)]) == 2
    err = capsys.readouterr().err
    assert f"{sweep_dir / 'sweep.json'}: the sweep's state file is damaged" in err and "Traceback" not in err


def test_a_sweep_path_with_quotes_finds_its_own_run_and_no_other(tmp_path):
    """MLflow's filter strings have no escapes: the run of a directory whose path holds quotes is found
    in a real store, and a near miss (quotes in other places, LIKE's wildcards) is not."""
    from mlflow.tracking import MlflowClient

    from orchestrator.tracking.filters import tag_filter, tag_matches

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("quotes")
    for sweep_dir in ("/runs/it's", '/runs/say "hi"', "/runs/both'\"x", "/runs/pct%_'\""):
        near_miss = sweep_dir.replace("'", "_").replace('"', "_")
        ours = client.create_run(experiment, tags={"edgesweep.sweep_dir": sweep_dir}).info.run_id
        client.create_run(experiment, tags={"edgesweep.sweep_dir": near_miss})
        found = client.search_runs([experiment], tag_filter("edgesweep.sweep_dir", sweep_dir))
        assert [r.info.run_id for r in tag_matches(found, "edgesweep.sweep_dir", sweep_dir)] == [ours], sweep_dir
