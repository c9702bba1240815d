"""A sweep that times every artifact on two boards: one latency per board per trial, objectives and
constraints that name a board.

Both boards are emulated on this machine (no second physical board exists here; a real one joins
with `board join`, as tests/device_actors/test_board_cluster.py does); training and export are the
stand-in stages, because this is about the sweep machinery. Ray, Tune, Optuna, MLflow and both
boards' latency actors are real.
"""
import math

import pytest
import ray
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from device_actors.toy_model import toy_detector_onnx
from orchestrator.config import parse_config
from orchestrator.pareto import dominates
from orchestrator.stand_in_stages import StandInStages
from orchestrator.sweep import init_ray, run_sweep
from orchestrator.sweep_state import stored_config
from tests.orchestrator.test_sweep_faults import stand_in_config

SIZES = (64, 192)  # the toy artifact at 192 px costs about 9x the one at 64 px


def two_board_config(root, constraints=None) -> dict:
    raw = stand_in_config(root, "two-boards")
    raw["search"] = {"img_size": {"grid": list(SIZES)}, "quantization": {"grid": ["fp32", "int8"]}}
    raw["fixed"].pop("img_size")
    raw["fixed"]["kd_method"] = "none"
    raw["board"] = {"names": ["near", "far"], "timing": {"warmup_runs": 2, "min_runs": 5, "min_seconds": 0.05}}
    raw["objectives"] = [{"metric": "map50_95"}, {"metric": "latency_ms@far"}]
    if constraints:
        raw["constraints"] = constraints
    return raw


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The far board's latency limit sits between its two artifacts' latencies, measured first on
    that board with the sweep's own request: the trials then read those reports from the board's cache."""
    from device_actors.client import connect_board

    root = tmp_path_factory.mktemp("boards")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGESWEEP_CACHE", str(root / "cache"))
        plain = parse_config(two_board_config(root), base_dir=root)
        init_ray(None)
        far = connect_board("far")
        latency = {size: far.measure(toy_detector_onnx(size, width=StandInStages.toy_width),
                                     options=plain.board.runtime_options(1), protocol=plain.board.timing).median_ms
                   for size in SIZES}
        assert latency[192] > 2 * latency[64], latency
        limit = math.sqrt(latency[64] * latency[192])
        cfg = parse_config(two_board_config(root, {"latency_ms_max": {"far": limit}}), base_dir=root)
        result = run_sweep(cfg, stages=StandInStages(train_seconds=0.1), show_progress=False)
        yield cfg, result, latency, limit
        ray.shutdown()


def test_every_trial_carries_each_boards_latency_and_latency_ms_is_the_first_boards(swept):
    cfg, result, latency, _ = swept
    assert len(result.records) == 4 and all(r.complete for r in result.records)
    for r in result.records:
        m = r.metrics
        assert m["latency_ms@near"] > 0 and m["latency_ms"] == m["latency_ms@near"]
        if not m.get("latency_retimed"):  # else timed again on both boards when the sweep was idle
            assert m["latency_ms@far"] == latency[r.knobs["img_size"]]  # the far board's own reports
        assert m["board_emulated"] is True
    assert stored_config(result.sweep_dir).board.names == ("near", "far")  # --resume times on both again


def test_the_front_keeps_only_trials_within_the_far_boards_limit_and_is_non_dominated(swept):
    cfg, result, _, limit = swept
    feasible = [r for r in result.records if r.metrics["latency_ms@far"] <= limit]
    assert {r.knobs["img_size"] for r in feasible} == {64}  # the limit excludes both 192 px trials
    points = {r.trial_id: (r.metrics["map50_95"], r.metrics["latency_ms@far"]) for r in feasible}
    expected = {t for t, p in points.items() if not any(dominates(q, p, ("max", "min")) for q in points.values())}
    assert {r.trial_id for r in result.front} == expected and expected
    header = (result.sweep_dir / "report" / "pareto.csv").read_text().splitlines()[0].split(",")
    assert {"latency_ms@near", "latency_ms@far"} <= set(header)


def test_mlflow_shows_a_latency_per_board(swept):
    _, result, latency, _ = swept
    client = MlflowClient(tracking_uri=result.tracking_uri)
    children = client.search_runs([result.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{result.parent_run_id}'")
    assert len(children) == 4
    for child in children:
        metrics = child.data.metrics
        assert metrics["board/near/latency_ms"] == metrics["board/latency_ms"]
        assert metrics["board/far/latency_ms"] in latency.values()
        files = {f.path for f in client.list_artifacts(child.info.run_id)}
        assert {"latency.json", "latency-near.json", "latency-far.json"} <= files


def test_the_report_has_a_latency_column_per_board(swept, capsys):
    from orchestrator.commands.sweep import print_report

    _, result, _, _ = swept
    capsys.readouterr()
    print_report(result.sweep_dir, backfill=False)
    out = " ".join(capsys.readouterr().out.split())
    assert "near ms (EMULATED)" in out and "far ms (EMULATED)" in out
