"""A student trained once for all its exports: the cache on disk, the claims actor on a real local
Ray cluster, and real sweeps whose training and export are the test-only stand-ins of
`orchestrator.stand_in_stages` (the sweep machinery, Tune, the journal and MLflow are real)."""
import logging
import time
from dataclasses import replace

import pytest
import ray
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from orchestrator.commands.sweep import print_report
from orchestrator.config import parse_config
from orchestrator.datasets import DataConfig
from orchestrator.stages import TrainSpec
from orchestrator.stand_in_stages import StandInStages
from orchestrator.students import CachedStudent, StudentCache, StudentClaims, Students, student_key
from orchestrator.sweep import run_sweep
from orchestrator.tracking.names import STUDENT_TAG, STUDENT_TRAINED_TAG
from trainables.hyper import TrainKnobs, TrainSettings
from tests.orchestrator.test_sweep_faults import cache, stand_in_config  # noqa: F401 - cache: its module fixture


def _spec(**changes) -> TrainSpec:
    return replace(TrainSpec(data=DataConfig(), seed=0, training=TrainSettings(), torch_threads=1,
                             data_digest="abc"), **changes)


def test_the_key_holds_what_decides_the_weights_and_nothing_else():
    base = TrainKnobs()
    key = student_key(base, _spec(), None)
    assert student_key(base, _spec(), None) == key
    # a baseline's sampled teacher or factor trains the same weights
    assert student_key(replace(base, teacher="t", kd_factor=3.0), _spec(), None) == key
    for other in (student_key(replace(base, seed=1), _spec(), None),
                  student_key(replace(base, epochs=3), _spec(), None),
                  student_key(base, _spec(data_digest="def"), None),
                  student_key(base, _spec(seed=1), None),
                  student_key(base, _spec(training=TrainSettings(lr0=0.003)), None),
                  student_key(base, _spec(torch_threads=2), None)):
        assert other != key
    distilled = replace(base, kd_method="output", teacher="t")
    assert student_key(distilled, _spec(), "sha-1") != student_key(distilled, _spec(), "sha-2")
    assert student_key(distilled, _spec(), "sha-1") != student_key(replace(distilled, kd_factor=2.0), _spec(), "sha-1")


def test_an_entry_is_whole_or_absent_and_a_damaged_one_is_dropped(tmp_path, caplog):
    cache = StudentCache(tmp_path / "students")
    assert cache.load("k1") is None
    cache.store(CachedStudent("k1", b"weights", {"map50_95": 0.25}, 12.5, "trial_1"))
    found = cache.load("k1")
    assert (found.checkpoint, found.metrics, found.train_s, found.trained_by) == (b"weights", {"map50_95": 0.25},
                                                                                    12.5, "trial_1")
    (cache.entry("k2")).mkdir()
    (cache.entry("k2") / "student.pt").write_bytes(b"half a training")  # no marker: a training that never ended
    assert cache.load("k2") is None and cache.keys() == ["k1"]
    (cache.entry("k1") / "student.pt").write_bytes(b"weightz")
    with caplog.at_level(logging.WARNING):
        assert cache.load("k1") is None
    assert "damaged" in caplog.text and not cache.entry("k1").exists()


@pytest.fixture(scope="module")
def local_ray():
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield


def test_one_trial_trains_a_key_the_others_wait_and_a_failed_holder_hands_it_on(local_ray, tmp_path):
    students = Students(StudentCache(tmp_path), ray.remote(StudentClaims).remote(60.0), ttl_s=60.0)
    assert students.find_or_claim("k", "trial_a") is None  # trial_a trains it
    assert not ray.get(students.claims.claim.remote("k", "trial_b"))
    assert ray.get(students.claims.claim.remote("k", "trial_a"))  # a retried trial takes its own claim back
    waiting = students.claims.wait.remote("k", 30.0)
    time.sleep(0.5)
    assert not ray.wait([waiting], timeout=0)[0]
    with pytest.raises(RuntimeError):
        with students.training("k", "trial_a"):
            raise RuntimeError("training failed")
    ray.get(waiting, timeout=10)  # the release woke the waiter
    assert students.cache.load("k") is None  # a failed training leaves no entry
    assert students.find_or_claim("k", "trial_b") is None  # so the waiter trains it itself
    with students.training("k", "trial_b"):
        students.cache.store(CachedStudent("k", b"w", {}, 1.0, "trial_b"))
    assert students.find_or_claim("k", "trial_c").trained_by == "trial_b"


def test_a_claim_whose_holder_stopped_renewing_runs_out(local_ray, tmp_path):
    claims = ray.remote(StudentClaims).remote(0.5)
    assert ray.get(claims.claim.remote("k", "dead_trial"))
    assert not ray.get(claims.claim.remote("k", "trial_b"))
    time.sleep(0.8)  # the holder's process died: nobody renews
    assert ray.get(claims.claim.remote("k", "trial_b"))


def _children(result):
    client = MlflowClient(tracking_uri=result.tracking_uri)
    return client.search_runs([result.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{result.parent_run_id}'")


def test_a_student_is_trained_once_for_all_its_exports_even_when_trials_race_for_it(tmp_path, capsys):
    raw = stand_in_config(tmp_path, "students")
    raw["search"] = {"quantization": {"grid": ["fp32", "int8"]}, "runtime": {"grid": ["onnxruntime", "tflite"]}}
    raw["fixed"] = {"epochs": 2, "img_size": 64, "board_threads": 1, "kd_method": "none"}
    cfg = parse_config(raw, base_dir=tmp_path)  # 4 trials, one student; 2 start at once
    result = run_sweep(cfg, stages=StandInStages(train_seconds=1.0), show_progress=False)
    assert len(result.records) == 4 and all(r.complete for r in result.records)
    keys = {r.metrics["student_key"] for r in result.records}
    assert len(keys) == 1
    assert sum(r.metrics["student_trained"] for r in result.records) == 1
    assert all(r.metrics["train_s"] == pytest.approx(1.0) for r in result.records)  # the student's cost, in each
    assert StudentCache(cfg.sweep_dir / "students").keys() == sorted(keys)
    tags = sorted((c.data.tags[STUDENT_TAG], c.data.tags[STUDENT_TRAINED_TAG]) for c in _children(result))
    assert tags == sorted([(keys.pop(), "true")] + [(tags[0][0], "false")] * 3)
    client = MlflowClient(tracking_uri=result.tracking_uri)
    parent = client.get_run(result.parent_run_id).data.metrics
    assert (parent["students_trained"], parent["artifacts"]) == (1, 4)
    capsys.readouterr()
    print_report(result.sweep_dir, backfill=False)
    assert "trained 1 student for 4 artifacts" in capsys.readouterr().out


def test_a_training_that_fails_leaves_no_student_and_the_next_trial_trains_it_again(tmp_path):
    raw = stand_in_config(tmp_path, "student-fails")
    raw["search"] = {"quantization": {"grid": ["fp32", "int8"]}}
    raw["fixed"] = {"epochs": 2, "img_size": 64, "board_threads": 1, "kd_method": "none", "runtime": "onnxruntime"}
    raw["searcher"]["concurrency"] = 1
    cfg = parse_config(raw, base_dir=tmp_path)
    result = run_sweep(cfg, stages=StandInStages(train_seconds=0.2, fail_when={"quantization": "fp32"}),
                       show_progress=False)
    by_format = {r.knobs["quantization"]: r for r in result.records}
    assert by_format["fp32"].status == "failed"
    assert by_format["int8"].complete and by_format["int8"].metrics["student_trained"] is True


def test_a_shared_student_cache_serves_a_later_sweep_on_the_same_data(tmp_path):
    records = []
    for name in ("first", "second"):
        raw = stand_in_config(tmp_path, name)
        raw["student"] = {"model": "n", "cache": "shared"}
        raw["search"] = {"quantization": {"grid": ["fp32", "int8"]}}
        raw["fixed"] = {"epochs": 2, "img_size": 64, "board_threads": 1, "kd_method": "none",
                        "runtime": "onnxruntime"}
        records.append(run_sweep(parse_config(raw, base_dir=tmp_path), stages=StandInStages(train_seconds=0.2),
                                 show_progress=False).records)
    first, second = ([r.metrics["student_trained"] for r in rs] for rs in records)
    assert sorted(first) == [False, True] and second == [False, False]
    assert len({r.metrics["student_key"] for rs in records for r in rs}) == 1
