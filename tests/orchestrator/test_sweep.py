"""A tiny real sweep on a local Ray cluster: real training, export, artifact scoring, board actor,
Optuna study and MLflow store; checked through the MLflow client and the Optuna storage."""
import json

import mlflow
import optuna
import pytest
import ray
from PIL import Image
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from orchestrator.cli import main
from orchestrator.config import parse_config
from orchestrator.pareto import dominates
from orchestrator.searcher import study_url
from orchestrator.sweep import run_sweep
from orchestrator.tracking.names import SWEEP_TAG

KNOBS = {"student", "student_init", "freeze_backbone", "activation", "epochs", "img_size", "kd_method", "teacher", "kd_factor",
         "kd_off_last_epochs", "fm_nms", "cwd_tau", "runtime", "quantization", "calib_method", "calib_images", "int8_granularity",
         "int8_io", "decode", "outputs", "onnx_layout", "prune_ratio", "prune_method", "qat_epochs", "max_map_drop",
         "board_threads", "seed"}


def tiny_config(root, **overrides):
    raw = {
        "name": "tiny", "output_dir": str(root / "runs"),
        "data": {"source": "default", "synth": {"train": 24, "val": 8, "size": 64, "seed": 0},
                 "calibration_images": 4},
        "student": {"model": "n"}, "teachers": {"t": {"model": "n", "epochs": 1}},
        "training": {"batch_size": 8, "nominal_batch": 8, "warmup_epochs": 0},
        "search": {"kd_method": {"choice": ["none", "output"]}, "quantization": {"choice": ["fp32", "int8"]}},
        "fixed": {"epochs": 2, "img_size": 64, "board_threads": 1, "teacher": "t", "runtime": "onnxruntime"},
        "searcher": {"algorithm": "tpe", "trials": 3, "concurrency": 2},
        "resources": {"train": {"cpu": 0.5}, "export": {"cpu": 0.5}},
        "board": {"name": "local", "timing": {"warmup_runs": 2, "min_runs": 5, "min_seconds": 0.1}},
        "mlflow": {"experiment": "tiny"},
    }
    raw.update(overrides)
    return parse_config(raw, base_dir=root)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGESWEEP_CACHE", str(root / "cache"))
        cfg = tiny_config(root)
        result = run_sweep(cfg, show_progress=False)
        yield cfg, result
        ray.shutdown()


def test_every_trial_completes_with_artifact_accuracy_and_board_latency(swept):
    cfg, result = swept
    assert len(result.records) == 3 and all(r.complete for r in result.records)
    for r in result.records:
        assert set(r.knobs) == KNOBS
        assert 0.0 <= r.metrics["map50_95"] <= 1.0 and r.metrics["latency_ms"] > 0 and r.metrics["size_mb"] > 0
        assert r.metrics["board_emulated"] is True
        assert r.metrics["format"] == ("onnx" if r.knobs["quantization"] == "fp32" else "onnx-int8")
    keys = [r.metrics["student_key"] for r in result.records]  # a student is trained once for all its exports
    assert sum(r.metrics["student_trained"] for r in result.records) == len(set(keys))


def test_mlflow_holds_one_parent_and_a_child_per_trial_with_params_metrics_and_artifacts(swept):
    cfg, result = swept
    client = MlflowClient(tracking_uri=result.tracking_uri)
    runs = client.search_runs([result.experiment_id])
    parents = [r for r in runs if MLFLOW_PARENT_RUN_ID not in r.data.tags]
    children = [r for r in runs if r.data.tags.get(MLFLOW_PARENT_RUN_ID) == result.parent_run_id]
    assert [p.info.run_id for p in parents] == [result.parent_run_id]
    assert parents[0].data.tags[SWEEP_TAG] == str(cfg.sweep_dir)
    trials = [r for r in children if "edgesweep.trial_id" in r.data.tags]
    teachers = [r for r in children if "edgesweep.teacher" in r.data.tags]
    assert len(trials) == 3 and len(teachers) == 1 and len(runs) == 5  # the parent, 3 trials, the teacher
    assert teachers[0].info.run_name == "teacher t · YOLO-n, 1 epochs · 64px" and teachers[0].info.status == "FINISHED"
    assert "val/map50_95" in teachers[0].data.metrics
    for child in trials:  # a distilled trial links to its teacher's run
        kd = child.data.params["kd_method"] != "none"
        assert child.data.tags.get("edgesweep.teacher_run_id") == (teachers[0].info.run_id if kd else None)
    children = trials
    parent_files = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"config.json", "search_space.json", "report"} <= parent_files
    report = {a.path for a in client.list_artifacts(result.parent_run_id, "report")}
    assert {"report/pareto.csv", "report/pareto.png", "report/pareto.html", "report/bubble.png",
            "report/sessions.csv"} <= report
    for child in children:
        assert child.info.status == "FINISHED"
        assert KNOBS <= set(child.data.params)
        assert {"artifact/map50_95", "artifact/map50", "artifact/size_mb", "board/latency_ms", "board/fps",
                "float/map50_95"} <= set(child.data.metrics)
        history = client.get_metric_history(child.info.run_id, "val/map50_95")
        # one point per epoch where the trial trained its student; none where it used another trial's
        trained = child.data.tags["edgesweep.student_trained"] == "true"
        assert sorted(m.step for m in history) == ([1, 2] if trained else [])
        assert child.data.metrics["train/seconds"] > 0
        for name in ("train/box_loss", "val/map50_95", "artifact/map50_95"):  # real times, not 0
            assert all(m.timestamp > 1.7e12 for m in client.get_metric_history(child.info.run_id, name))
        files = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert "latency.json" in files
        # placed under board.npu_profile (vx, the default): an ONNX artifact's nodes all fall back
        assert "npu-placement.txt" in files and child.data.metrics["npu/delegated_ops"] == 0
        assert child.data.metrics["npu/fallback_ops"] > 0 and child.data.metrics["board/first_run_ms"] > 0
        pictures = [a.path for a in client.list_artifacts(child.info.run_id, "detections")]
        assert len(pictures) == 3  # val images with the artifact's detections drawn
        picture = mlflow.artifacts.download_artifacts(run_id=child.info.run_id, artifact_path=pictures[0],
                                                      tracking_uri=result.tracking_uri)
        assert Image.open(picture).size == (64, 64)
        outputs = child.outputs.model_outputs  # the artifact is the run's logged model, in the ONNX flavour
        assert len(outputs) == 1 and client.get_logged_model(outputs[0].model_id).tags["edgesweep.artifact_sha256"] == \
            child.data.tags["edgesweep.artifact_sha256"]
        latency = json.loads(open(mlflow.artifacts.download_artifacts(
            run_id=child.info.run_id, artifact_path="latency.json", tracking_uri=result.tracking_uri)).read())
        assert latency["emulated"] is True and latency["median_ms"] == pytest.approx(child.data.metrics["board/latency_ms"])


def test_child_runs_tell_what_they_are_with_every_setting_the_front_and_the_data(swept):
    cfg, result = swept
    client = MlflowClient(tracking_uri=result.tracking_uri)
    children = {r.data.tags["edgesweep.trial_id"]: r for r in client.search_runs(
        [result.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{result.parent_run_id}'")
        if "edgesweep.trial_id" in r.data.tags}
    for record in result.records:
        child = children[record.trial_id]
        kd = "no KD" if record.knobs["kd_method"] == "none" else f"output x{record.knobs['kd_factor']:.2g}"
        assert child.info.run_name == f"{kd} · {record.metrics['format']} · 64px"
        params = child.data.params
        assert params["training.batch_size"] == "8" and params["data.source"] == "default"
        assert params["board.names"] == "['local']" and params["board.onnxruntime_version"]
        tags = child.data.tags
        assert tags["edgesweep.board_emulated"] == "true" and tags["edgesweep.format"] == record.metrics["format"]
        assert len(tags["mlflow.source.git.commit"]) == 40
        inputs = child.inputs.dataset_inputs
        assert len(inputs) == 1 and inputs[0].dataset.digest and "default" in inputs[0].dataset.name
    front = {r.trial_id for r in result.front}
    assert {t for t, r in children.items() if r.data.tags["edgesweep.pareto"] == "true"} == front
    assert all(r.data.tags["edgesweep.pareto"] == "false" for t, r in children.items() if t not in front)


def test_reported_pareto_set_equals_a_bruteforce_non_dominated_filter(swept):
    cfg, result = swept
    points = {r.trial_id: (r.metrics["map50_95"], r.metrics["latency_ms"]) for r in result.records}
    expected = {t for t, (m, l) in points.items()
                if not any((m2 >= m and l2 <= l) and (m2 > m or l2 < l) for t2, (m2, l2) in points.items() if t2 != t)}
    assert {r.trial_id for r in result.front} == expected
    assert not dominates((0.1, 5.0), (0.1, 5.0), ("max", "min"))


def test_optuna_study_in_the_sweep_dir_has_every_trial_as_the_searcher_was_told_it(swept):
    cfg, result = swept
    study = optuna.load_study(study_name=cfg.name, storage=study_url(cfg.sweep_dir))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3
    # the study holds what the searcher was told: a front latency timed again at the end (orchestrator.retime)
    # keeps its first figure as latency_ms_in_sweep
    told = sorted((round(r.metrics["map50_95"], 6),
                   round(r.metrics.get("latency_ms_in_sweep", r.metrics["latency_ms"]), 6)) for r in result.records)
    assert sorted((round(t.values[0], 6), round(t.values[1], 6)) for t in complete) == told


def test_report_command_prints_the_front_and_the_mlflow_ui_command(swept, capsys):
    cfg, result = swept
    assert main(["report", str(cfg.sweep_dir)]) == 0
    out = capsys.readouterr().out
    from orchestrator.thesis_tables import quantization_table

    assert ("Each quantization against its float artifact" in out) == bool(quantization_table(result.records))
    assert "optuna-dashboard sqlite:///" in out and "optuna.db --host 127.0.0.1" in out
    assert "Pareto front of tiny" in out and "mlflow ui --backend-store-uri" in out and "--host 127.0.0.1" in out
    assert "vx fallback ops" in out  # the front's operators that fall back to the CPU under board.npu_profile
    assert all(r.trial_id in out for r in result.front)
    from orchestrator.tracking.ui import ui_url

    assert ui_url(result.experiment_id) in out and ui_url(result.experiment_id, front_only=True) in out


def test_every_trials_artifact_stays_in_the_sweep_dir_and_the_csv_names_file_hash_and_mlflow_run(swept):
    import csv

    from common.hashing import file_sha256

    cfg, result = swept
    runs = {r.data.tags["edgesweep.trial_id"]: r.info.run_id
            for r in MlflowClient(result.tracking_uri).search_runs([result.experiment_id])
            if r.data.tags.get(MLFLOW_PARENT_RUN_ID) == result.parent_run_id and "edgesweep.trial_id" in r.data.tags}
    with (cfg.sweep_dir / "report" / "trials.csv").open() as f:
        rows = {row["trial"]: row for row in csv.DictReader(f)}
    for r in result.records:
        path = cfg.sweep_dir / r.artifact
        assert r.artifact.startswith(f"models/{r.trial_id}/") and path.suffix == ".onnx"
        assert file_sha256(path) == r.metrics["artifact_sha256"] == rows[r.trial_id]["artifact_sha256"]
        assert rows[r.trial_id]["artifact"] == r.artifact and rows[r.trial_id]["mlflow_run_id"] == runs[r.trial_id]


def test_the_fronts_models_are_registered_under_the_sweeps_name(swept):
    cfg, result = swept
    client = MlflowClient(result.tracking_uri)
    versions = client.search_model_versions(f"name = '{cfg.name}'")
    front = {r.trial_id for r in result.front}
    assert {v.tags["edgesweep.trial_id"] for v in versions} == front
    assert all(v.tags["edgesweep.pareto"] == "true" for v in versions)
    best_map = max(result.front, key=lambda r: r.metrics["map50_95"]).trial_id
    assert "map50_95" in {v.tags["edgesweep.trial_id"]: v.tags["edgesweep.wins"] for v in versions}[best_map]


def _expected_best(records, max_latency_ms=None, min_map=None):
    ok = [r for r in records if r.complete and (max_latency_ms is None or r.metrics["latency_ms"] <= max_latency_ms)
          and (min_map is None or r.metrics["map50_95"] >= min_map)]
    if min_map is not None:
        return sorted(ok, key=lambda r: (r.metrics["latency_ms"], -r.metrics["map50_95"]))[0]
    return sorted(ok, key=lambda r: (-r.metrics["map50_95"], r.metrics["latency_ms"]))[0]


def test_best_copies_the_chosen_trials_artifact_with_a_model_card_under_each_filter(swept, tmp_path, capsys):
    from common.hashing import file_sha256

    cfg, result = swept
    latencies = sorted(r.metrics["latency_ms"] for r in result.records)
    maps = sorted(r.metrics["map50_95"] for r in result.records)
    for flags, limits in (([], {}), (["--max-latency-ms", str(latencies[1])], {"max_latency_ms": latencies[1]}),
                          (["--min-map", str(maps[1])], {"min_map": maps[1]})):
        out = tmp_path / "-".join(flags or ["none"])
        assert main(["best", str(cfg.sweep_dir), "--out", str(out), *flags]) == 0
        expected = _expected_best(result.records, **limits)
        card = json.loads((out / "model_card.json").read_text())
        copied = out / card["artifact"]["file"]
        assert card["trial"] == expected.trial_id and file_sha256(copied) == expected.metrics["artifact_sha256"]
        assert card["board"]["emulated"] is True and card["knobs"] == expected.knobs and card["mlflow"]["run_id"]
        assert len(card["commit"]) >= 40 and card["data"]["source"] == "default"
        assert expected.trial_id in (out / "MODEL_CARD.md").read_text()
    capsys.readouterr()
    assert main(["best", str(cfg.sweep_dir), "--out", str(tmp_path / "none-fits"), "--max-latency-ms", "1e-6"]) == 2
    err = capsys.readouterr().err
    assert "no trial is the most accurate complete, feasible trial with latency <= 1e-06 ms" in err
    assert not (tmp_path / "none-fits").exists()
