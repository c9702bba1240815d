"""A user's own ONNX detector as a sweep's model: YOLOv5's layout (1, N, 5+C) or YOLOv8's (1, 4+C, N),
quantized by ONNX Runtime, timed and scored like ours (real export, real Ray, real ORT sessions).
The YOLOv8-layout file is made here from our trained student: its class scores are objectness x class,
so the sweep must score it exactly as the original file."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import ray
import yaml
from onnx import helper, numpy_helper

from detection.coco import CocoDataset, SplitSpec
from device_actors.accuracy import evaluate_artifact
from orchestrator.cli import main
from orchestrator.config import ConfigError, parse_config
from orchestrator.sweep import run_sweep
from trainables.export import export_formats, export_onnx_model

IMG = 128


@pytest.fixture(scope="module")
def user_models(trained_student, tmp_path_factory):
    """Our float ONNX (already YOLOv5's layout) and the same detector rewritten in YOLOv8's layout."""
    root = tmp_path_factory.mktemp("user-onnx")
    (ours,) = export_formats(trained_student.checkpoint, ["onnx"], root, img_size=IMG)
    model = onnx.load(str(ours.path))
    g = model.graph
    out = g.output[0].name
    rows, width = [d.dim_value for d in g.output[0].type.tensor_type.shape.dim][1:]
    for name, value in (("u0", [0]), ("u4", [4]), ("u5", [5]), ("uend", [width]), ("uaxis", [2])):
        g.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
    g.node.extend([helper.make_node("Slice", [out, "u0", "u4", "uaxis"], ["box"]),
                   helper.make_node("Slice", [out, "u4", "u5", "uaxis"], ["obj"]),
                   helper.make_node("Slice", [out, "u5", "uend", "uaxis"], ["cls"]),
                   helper.make_node("Mul", ["obj", "cls"], ["score"]),
                   helper.make_node("Concat", ["box", "score"], ["rows"], axis=2),
                   helper.make_node("Transpose", ["rows"], ["output0"], perm=[0, 2, 1])])
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("output0", onnx.TensorProto.FLOAT, [1, width - 1, rows]))
    v8 = root / "yolov8-layout.onnx"
    onnx.save(model, str(v8))
    val = CocoDataset(SplitSpec(trained_student.data_dir / "val", trained_student.data_dir / "instances_val.json"))
    return ours.path, v8, val


def test_a_yolov8_layout_file_scores_as_the_same_detector_in_our_layout(user_models, tmp_path):
    ours, v8, val = user_models
    (converted,) = export_onnx_model(v8, ["onnx"], tmp_path, layout="yolov8", num_classes=val.num_classes)
    want = evaluate_artifact(ours.read_bytes(), "onnxruntime", val).metrics
    got = evaluate_artifact(converted.read_bytes(), "onnxruntime", val).metrics
    assert want.map50_95 > 0.05 and got.map50_95 == pytest.approx(want.map50_95, abs=1e-9)
    assert converted.settings["onnx_layout"] == "yolov8" and converted.img_size == IMG


def test_eval_scores_a_yolov8_layout_file_as_the_sweep_does(user_models, trained_student, capsys):
    ours, v8, val = user_models
    want = evaluate_artifact(ours.read_bytes(), "onnxruntime", val).metrics.map50_95
    assert main(["eval", "--model", str(v8), "--onnx-layout", "yolov8", "--data", str(trained_student.data_dir)]) == 0
    assert f"{want:.4f}" in capsys.readouterr().out  # the table prints mAP to 4 places


def _config(root, model, data_dir, layout: str) -> dict:
    return {
        "name": "user-onnx", "output_dir": str(root / "runs"),
        "data": {"source": "coco", "root": str(data_dir), "calibration_images": 4},
        "student": {"model": "n", "init": str(model)},
        "search": {"quantization": {"grid": ["fp32", "int8"]}},
        "fixed": {"epochs": 0, "img_size": IMG, "runtime": "onnxruntime", "board_threads": 1, "onnx_layout": layout},
        "searcher": {"algorithm": "grid", "concurrency": 2, "max_failures": 0},
        "resources": {"train": {"cpu": 0.5}, "export": {"cpu": 0.5}},
        "board": {"name": "local", "timing": {"warmup_runs": 2, "min_runs": 5, "min_seconds": 0.05}},
    }


@pytest.mark.slow  # a real two-trial sweep (about a minute on 2 cores); the export path above is the default suite's
def test_a_sweep_quantizes_times_and_scores_a_users_yolov8_onnx(user_models, trained_student, tmp_path, monkeypatch):
    ours, v8, val = user_models
    monkeypatch.setenv("EDGESWEEP_CACHE", str(tmp_path / "cache"))
    cfg = parse_config(_config(tmp_path, v8, trained_student.data_dir, "yolov8"), base_dir=tmp_path)
    try:
        result = run_sweep(cfg, show_progress=False)
    finally:
        ray.shutdown()
    by_format = {r.metrics["format"]: r for r in result.records}
    assert set(by_format) == {"onnx", "onnx-int8"} and all(r.complete for r in result.records)
    assert all(r.metrics["latency_ms"] > 0 for r in result.records)
    want = evaluate_artifact(ours.read_bytes(), "onnxruntime", val).metrics.map50_95
    assert by_format["onnx"].metrics["map50_95"] == pytest.approx(want, abs=1e-9)
    assert abs(by_format["onnx-int8"].metrics["map50_95"] - want) < 0.05  # int8 with its decode tail in float


def test_an_onnx_output_that_fits_neither_layout_stops_the_sweep_before_anything_starts(user_models, trained_student,
                                                                                      tmp_path, capsys):
    ours, v8, _ = user_models
    model = onnx.load(str(ours))
    dims = model.graph.output[0].type.tensor_type.shape.dim
    dims[2].dim_value += 1  # one column too many for the data's classes
    odd = tmp_path / "odd.onnx"
    onnx.save(model, str(odd))
    for path, layout, expected in ((odd, "yolov5", "fits neither layout"), (v8, "yolov5", "set onnx_layout: yolov8")):
        config = tmp_path / f"{layout}-{path.stem}.yaml"
        config.write_text(yaml.safe_dump(_config(tmp_path, path, trained_student.data_dir, layout)))
        assert main(["sweep", str(config)]) == 2
        err = capsys.readouterr().err
        assert str(path) in err and expected in err and "yolov5 is (1, N," in err
    assert not (tmp_path / "runs" / "user-onnx" / "tune").exists()


def test_an_onnx_with_external_weights_is_refused_before_anything_starts(user_models, trained_student, tmp_path,
                                                                          capsys):
    """A trial ships the model as one file, so weights in a side file would fail every trial."""
    ours, _, _ = user_models
    split = tmp_path / "split.onnx"
    onnx.save(onnx.load(str(ours)), str(split), save_as_external_data=True, location="split.onnx.data",
              size_threshold=0)
    config = tmp_path / "split.yaml"
    config.write_text(yaml.safe_dump(_config(tmp_path, split, trained_student.data_dir, "yolov5")))
    assert main(["sweep", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(split) in err and "weights are in external data (split.onnx.data)" in err
    assert not (tmp_path / "runs" / "user-onnx" / "tune").exists()


@pytest.mark.parametrize("change, message", [
    ({"runtime": {"choice": ["onnxruntime", "tflite"]}}, "becomes only the formats built from a float ONNX"),
])
def test_an_onnx_student_init_is_never_trained_nor_converted_to_tflite(change, message, tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"an onnx file")
    raw = _config(tmp_path, tmp_path / "model.onnx", tmp_path, "yolov5")
    raw["data"] = {"source": "default"}
    raw["fixed"].pop("runtime")
    raw["search"].update(change)
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, base_dir=tmp_path)
    raw = _config(tmp_path, tmp_path / "model.onnx", tmp_path, "yolov5")
    raw["data"] = {"source": "default"}
    raw["fixed"]["epochs"] = 3
    with pytest.raises(ConfigError, match="an .onnx model cannot be trained"):
        parse_config(raw, base_dir=tmp_path)
