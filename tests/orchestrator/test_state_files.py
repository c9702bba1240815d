"""State files a sweep trusts later are whole or absent: written beside their name and renamed, and a
damaged one is named to the user (exit 2), never read as if it were fine."""
from __future__ import annotations

import pytest

from common import atomic
from orchestrator.cli import main


def test_a_write_that_fails_halfway_leaves_the_old_file_and_no_debris(tmp_path):
    path = tmp_path / "state" / "sweep.json"
    atomic.write_text(path, '{"old": true}')
    with pytest.raises(RuntimeError):
        with atomic.replacing(path) as tmp:
            tmp.write_text('{"new": tr')  # the process dies here
            raise RuntimeError("killed mid-write")
    assert path.read_text() == '{"old": true}'
    assert sorted(p.name for p in path.parent.iterdir()) == ["sweep.json"]
    atomic.copy_file(path, tmp_path / "models" / "copy.json")
    assert (tmp_path / "models" / "copy.json").read_text() == '{"old": true}'


@pytest.mark.parametrize("command", ["report", "best"])
def test_a_torn_sweep_json_is_named_with_exit_2_not_a_traceback(command, tmp_path, capsys):
    sweep_dir = tmp_path / "runs" / "sweeps" / "torn"
    sweep_dir.mkdir(parents=True)
    (sweep_dir / "sweep.json").write_text('{"name": "torn", "tracking_uri": "sqlite:///x.db", "conf')
    argv = [command, str(sweep_dir)] + (["--out", str(tmp_path / "deploy")] if command == "best" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{sweep_dir / 'sweep.json'}: the sweep's state file is damaged" in err
    assert "Traceback" not in err and str(sweep_dir / "trials.jsonl") in err
