"""The data/train/eval commands as a user runs them: exit codes, messages, files."""
import json

from pycocotools.coco import COCO

from orchestrator.cli import main


def test_data_synth_writes_a_coco_set_that_pycocotools_loads(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path), "--train", "6", "--val", "2", "--size", "64"]) == 0
    coco = COCO(str(tmp_path / "instances_train.json"))
    assert len(coco.getImgIds()) == 6 and len(coco.getCatIds()) >= 8
    assert len(list((tmp_path / "val").glob("*.png"))) == 2
    assert "train" in capsys.readouterr().out


def test_train_then_eval_end_to_end_prints_metrics_tables(tmp_path, capsys):
    data = tmp_path / "data"
    main(["data", "synth", "--out", str(data), "--train", "8", "--val", "2", "--size", "64"])
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--model", "n", "--epochs", "1", "--img-size", "64",
                 "--batch-size", "4", "--out", str(out)]) == 0
    assert (out / "last.pt").exists()
    assert "mAP@.5:.95" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(out / "last.pt"), "--data", str(data), "--img-size", "64"]) == 0
    assert "mAP@.5" in capsys.readouterr().out


def test_missing_data_directory_exits_2_naming_the_path(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["train", "--data", str(missing), "--epochs", "1"]) == 2
    assert str(missing) in capsys.readouterr().err


def test_malformed_annotation_file_exits_2_naming_the_path(tmp_path, capsys):
    main(["data", "synth", "--out", str(tmp_path), "--train", "2", "--val", "2", "--size", "64"])
    ann = tmp_path / "instances_val.json"
    data = json.loads(ann.read_text())
    del data["categories"]
    ann.write_text(json.dumps(data))
    assert main(["eval", "--checkpoint", str(tmp_path / "x.pt"), "--data", str(tmp_path)]) == 2
    assert str(ann) in capsys.readouterr().err


def test_missing_checkpoint_exits_2_naming_the_path(tmp_path, capsys):
    main(["data", "synth", "--out", str(tmp_path), "--train", "2", "--val", "2", "--size", "64"])
    assert main(["eval", "--checkpoint", str(tmp_path / "missing.pt"), "--data", str(tmp_path)]) == 2
    assert "missing.pt" in capsys.readouterr().err
