"""The sweep's journal and bookkeeping files: records survive a torn write, one driver holds a
sweep directory, and a resume may only change what does not alter a finished trial."""
from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from orchestrator.config import parse_config
from orchestrator.results import TrialRecord, append_record, load_records
from orchestrator.sweep_state import ConfigChanged, SweepLock, SweepLocked, resume_config, write_state


def test_a_torn_last_line_is_skipped_with_a_warning_and_the_records_before_it_are_kept(tmp_path, caplog):
    for i in range(3):
        append_record(tmp_path, TrialRecord(f"t{i}", "complete", {"epochs": 2}, {"map50_95": 0.1 * i}))
    with (tmp_path / "trials.jsonl").open("a") as f:
        f.write('{"trial_id": "t3", "status": "compl')  # the driver died mid-write
    with caplog.at_level(logging.WARNING):
        records = load_records(tmp_path)
    assert [r.trial_id for r in records] == ["t0", "t1", "t2"]
    assert "its last line is not a trial record" in caplog.text
    append_record(tmp_path, TrialRecord("t1", "interrupted", {}, {}))  # a later line replaces an earlier one
    assert {r.trial_id: r.status for r in load_records(tmp_path)}["t1"] == "interrupted"


def test_a_second_lock_on_a_sweep_directory_names_the_holder_and_a_dead_holder_frees_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from orchestrator.sweep_state import SweepLock; SweepLock.acquire(Path(sys.argv[1])); "
                               "print('held', flush=True); time.sleep(60)", str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SweepLocked, match=rf"being run by another driver \(pid {holder.pid} on host "):
            SweepLock.acquire(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    SweepLock.acquire(tmp_path).release()  # the kernel dropped the dead driver's lock


def _config(tmp_path, **changes):
    raw = {"name": "s", "output_dir": str(tmp_path), "search": {"quantization": {"choice": ["fp32", "int8"]}},
           "fixed": {"epochs": 2}, "searcher": {"algorithm": "tpe", "trials": 4},
           "board": {"timeout_s": 600}}
    for path, value in changes.items():
        section, key = path.split(".")
        raw[section] = {**raw[section], key: value}
    return parse_config(raw, base_dir=tmp_path)


def test_resume_runs_the_stored_config_and_refuses_edits_naming_the_keys(tmp_path):
    stored = _config(tmp_path)
    stored.sweep_dir.mkdir(parents=True)
    write_state(stored.sweep_dir, stored, tracking_uri=stored.mlflow.tracking_uri, experiment_id="1", parent_run_id="p")
    assert resume_config(stored.sweep_dir, stored) == stored
    longer = resume_config(stored.sweep_dir, _config(tmp_path, **{"board.timeout_s": 7200}))
    assert longer.board.timeout_s == 7200 and longer.search == stored.search
    with pytest.raises(ConfigChanged, match=r"in fixed\.epochs, searcher\.trials; --resume runs the stored config"):
        resume_config(stored.sweep_dir, _config(tmp_path, **{"fixed.epochs": 3, "searcher.trials": 8}))
