"""`python -m orchestrator export`: exports, times and scores, then prints the Table 5.1 layout."""
from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from orchestrator.cli import main
from trainables.checkpoint import save_checkpoint
from trainables.models.yolo import ModelSpec, build_model

IMG_SIZE = 64


@pytest.fixture(scope="module")
def student(trained_student) -> SimpleNamespace:
    return trained_student


def _export(student, tmp_path, *extra: str) -> list[str]:
    return ["export", "--checkpoint", str(student.checkpoint), "--data", str(student.data_dir),
            "--val-subset", "4", "--train-subset", "8", "--calib-images", "4", "--img-size", str(IMG_SIZE),
            "--latency-seconds", "0.05", "--out", str(tmp_path / "out"), *extra]


def test_export_prints_one_row_per_format_and_writes_the_files(student, tmp_path, capsys):
    assert main(_export(student, tmp_path, "--formats", "onnx,onnx-int8")) == 0
    out = capsys.readouterr().out
    for column in ("name", "engine", "FPS", "mAP@.5", "size MB"):
        assert column in out
    rows = [line for line in out.splitlines() if f"{IMG_SIZE}px" in line and "onnxruntime" in line]
    assert [row.split("│")[1].strip() for row in rows] == ["onnx", "onnx-int8"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == \
        [f"onnx-{IMG_SIZE}px.onnx", f"onnx-int8-{IMG_SIZE}px.onnx"]


def test_eval_of_an_exported_file_gives_the_export_tables_map(student, tmp_path, capsys):
    assert main(_export(student, tmp_path, "--formats", "onnx-int8")) == 0
    lines = capsys.readouterr().out.splitlines()
    header = [c.strip() for c in re.split("[│┃]", next(line for line in lines if "mAP@.5:.95" in line))]
    row = [c.strip() for c in next(line for line in lines if "onnx-int8" in line and "px" in line).split("│")]
    exported = tmp_path / "out" / f"onnx-int8-{IMG_SIZE}px.onnx"
    assert main(["eval", "--model", str(exported), "--data", str(student.data_dir), "--val-subset", "4"]) == 0
    out = capsys.readouterr().out
    values = next(line for line in out.splitlines() if line.count("│") > 3 and "0." in line)
    assert "onnxruntime" in out and values.split("│")[1].strip() == row[header.index("mAP@.5:.95")]


def test_eval_of_a_missing_or_unknown_model_file_exits_2_naming_it(student, tmp_path, capsys):
    assert main(["eval", "--model", str(tmp_path / "gone.onnx"), "--data", str(student.data_dir)]) == 2
    assert "gone.onnx" in capsys.readouterr().err
    (tmp_path / "m.pt").write_bytes(b"x")
    assert main(["eval", "--model", str(tmp_path / "m.pt"), "--data", str(student.data_dir)]) == 2
    assert "no runtime for 'm.pt'" in capsys.readouterr().err


def test_unknown_format_exits_2_and_lists_known_formats(student, tmp_path, capsys):
    assert main(_export(student, tmp_path, "--formats", "onnx,onnx-int4")) == 2
    err = capsys.readouterr().err
    assert "unknown export format 'onnx-int4'" in err and "tflite-int8" in err
    assert not (tmp_path / "out").exists()


def test_missing_checkpoint_exits_2_naming_it(student, tmp_path, capsys):
    args = _export(student, tmp_path, "--formats", "onnx")
    args[args.index("--checkpoint") + 1] = str(tmp_path / "gone.pt")
    assert main(args) == 2
    assert "gone.pt" in capsys.readouterr().err


def test_checkpoint_for_another_class_count_exits_2(student, tmp_path, capsys):
    other = tmp_path / "other.pt"
    spec = ModelSpec("n", 3)
    save_checkpoint(other, {"model_spec": spec.to_dict(), "model": build_model(spec).state_dict()})
    args = _export(student, tmp_path, "--formats", "onnx")
    args[args.index("--checkpoint") + 1] = str(other)
    assert main(args) == 2
    assert "predicts 3 classes" in capsys.readouterr().err


def _pruning_rows(out: str) -> dict[str, str]:
    """The pruning table's rows: measure -> its change column."""
    rows = [line.split("│") for line in out.splitlines() if line.count("│") == 5]
    return {cells[1].strip(): cells[4].strip() for cells in rows}


@pytest.fixture(scope="module")
def untrained_student(tmp_path_factory) -> SimpleNamespace:
    """A freshly initialised YOLO-n and a tiny data set: pruning's table needs no accuracy."""
    from detection.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("untrained-student")
    generate(root / "data", train=8, val=4, seed=1, config=SynthConfig(size=IMG_SIZE))
    spec = ModelSpec("n", 10)
    save_checkpoint(root / "last.pt", {"model_spec": spec.to_dict(), "model": build_model(spec).state_dict()})
    return SimpleNamespace(checkpoint=root / "last.pt", data_dir=root / "data")


def test_unstructured_pruning_zeroes_weights_but_leaves_parameters_and_macs(untrained_student, tmp_path, capsys):
    assert main(_export(untrained_student, tmp_path, "--formats", "onnx", "--prune-unstructured", "0.5")) == 0
    out = capsys.readouterr().out
    changes = _pruning_rows(out)
    assert changes["parameters"] == changes["MACs per image"] == "+0.0%"
    assert changes["non-zero parameters"].startswith("-4")  # about half the weights: convs, not BatchNorm
    assert float(changes["float32 weights, gzip MB"].rstrip("%")) < -10
    assert "a dense runtime (ONNX Runtime, LiteRT) runs no faster" in " ".join(out.split())
    assert (tmp_path / "out" / "last-prune-unstructured-0.5.pt").is_file()


def test_structured_pruning_removes_parameters_and_macs(untrained_student, tmp_path, capsys):
    assert main(_export(untrained_student, tmp_path, "--formats", "onnx", "--prune-structured", "0.5")) == 0
    out = capsys.readouterr().out
    changes = _pruning_rows(out)
    assert changes["parameters"].startswith("-7") and changes["MACs per image"].startswith("-7")
    assert "YOLO-n (pruned) from" in " ".join(out.split())


def test_pruning_ratio_out_of_range_exits_2_naming_the_flag(untrained_student, tmp_path, capsys):
    assert main(_export(untrained_student, tmp_path, "--formats", "onnx", "--prune-structured", "0.95")) == 2
    assert "--prune-structured: must be a share in (0, 0.9), got 0.95" in capsys.readouterr().err
