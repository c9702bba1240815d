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
