"""Bad input to `python -m orchestrator sweep kd.yaml` stops it before anything starts.

Each case runs the real CLI (`orchestrator.cli.main`) on a real sweep file whose data is a small
generated COCO set on disk, and proves what the user sees: exit status 2, one `error:` line on
stderr naming the key path and/or the file, and nothing started. "Nothing started" is checked
three ways: `ray.init` is a tripwire that raises if anything calls it, Ray is not initialised
afterwards, and the sweep directory (Tune state, MLflow store, sweep.json) was never created.
Config-level messages are unit-tested in test_config.py; here the whole command is.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray
import yaml

from orchestrator.cli import main

REPO = Path(__file__).resolve().parents[2]
SWEEP_NAME = "bad-input"


class RayStarted(Exception):
    """Raised by the `ray.init` tripwire: the sweep got past its checks and tried to start Ray."""


@pytest.fixture(scope="module")
def pristine_data(tmp_path_factory) -> Path:
    """A valid data set in the `data synth` layout (instances_{train,val}.json + train/ + val/)."""
    from detection.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("pristine") / "data"
    generate(root, train=4, val=2, seed=0, config=SynthConfig(size=64))
    return root


@pytest.fixture
def data(pristine_data, tmp_path) -> Path:
    """A private copy of the data set, for a test to break."""
    return Path(shutil.copytree(pristine_data, tmp_path / "data"))


@pytest.fixture(autouse=True)
def ray_tripwire(monkeypatch):
    if ray.is_initialized():  # left over by another module: init_ray would reuse it and skip the tripwire
        ray.shutdown()

    def refuse(*args, **kwargs):
        raise RayStarted("ray.init was called")

    monkeypatch.setattr(ray, "init", refuse)
    yield
    assert not ray.is_initialized()


def sweep_file(tmp_path: Path, data_dir: Path, /, **changes) -> Path:
    """A valid sweep file over `data_dir`, with top-level sections replaced by `changes`."""
    raw = {
        "name": SWEEP_NAME, "output_dir": str(tmp_path / "runs"),
        "data": {"source": "coco", "root": str(data_dir), "calibration_images": 2},
        "search": {"quantization": {"choice": ["fp32", "int8"]}},
        "fixed": {"epochs": 1, "img_size": 64},
        "searcher": {"algorithm": "random", "trials": 2},
    }
    raw.update(changes)
    path = tmp_path / "kd.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_cli(config: Path, capsys) -> tuple[int, str]:
    code = main(["sweep", str(config)])
    return code, capsys.readouterr().err


def assert_refused_before_anything_started(config: Path, capsys, *expected: str) -> str:
    code, err = run_cli(config, capsys)
    message = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2, err
    assert len(message) == 1, f"expected one error line on stderr, got:\n{err}"
    for fragment in expected:
        assert fragment in message[0], f"{fragment!r} not in {message[0]!r}"
    assert "Traceback" not in err
    assert not (config.parent / "runs" / SWEEP_NAME).exists(), "the sweep directory was created"
    return message[0]


def edit_json(path: Path, change) -> Path:
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))
    return path


# ---- the sweep file -----------------------------------------------------------------------------


def test_malformed_yaml_is_refused_with_file_line_and_column(tmp_path, data, capsys):
    config = tmp_path / "kd.yaml"
    config.write_text(f"name: {SWEEP_NAME}\nsearch:\n  quantization: {{choice: [fp32, int8}}\n")
    assert_refused_before_anything_started(config, capsys, f"{config}:3:", "malformed YAML")


def test_unknown_key_is_refused_naming_its_path_and_the_close_match(tmp_path, data, capsys):
    config = sweep_file(tmp_path, data, searcher={"algorithm": "random", "trials": 2, "trails": 3})
    assert_refused_before_anything_started(config, capsys, str(config), "searcher.trails: unknown key",
                                           "did you mean 'trials'?")


@pytest.mark.parametrize("section, value, expected", [
    ("searcher", {"algorithm": "random", "trials": "ten"}, "searcher.trials: must be an integer >= 1, got 'ten'"),
    ("fixed", {"epochs": 1.5, "img_size": 64}, "fixed.epochs: must be an integer >= 0, got 1.5"),
    ("board", {"timeout_s": "soon"}, "board.timeout_s: must be a number > 0"),
], ids=["string-for-int", "float-for-int", "string-for-number"])
def test_wrong_type_is_refused_naming_the_key_and_the_value(tmp_path, data, capsys, section, value, expected):
    config = sweep_file(tmp_path, data, **{section: value})
    assert_refused_before_anything_started(config, capsys, expected)


def test_empty_search_space_is_refused(tmp_path, data, capsys):
    config = sweep_file(tmp_path, data, search={})
    assert_refused_before_anything_started(config, capsys, "search: nothing to search")


@pytest.mark.parametrize("split, key", [("train", "images"), ("val", "annotations")])
def test_missing_data_path_is_refused_naming_the_key_and_the_path(tmp_path, data, capsys, split, key):
    paths = {s: {"images": str(data / s), "annotations": str(data / f"instances_{s}.json")} for s in ("train", "val")}
    missing = tmp_path / "nowhere" / key
    paths[split][key] = str(missing)
    config = sweep_file(tmp_path, data, data={"source": "coco", **paths})
    assert_refused_before_anything_started(config, capsys, f"data.{split}.{key}", str(missing))


# ---- the data behind it ------------------------------------------------------------------------


def _drop_categories(coco: dict) -> None:
    del coco["categories"]


def _box_outside(coco: dict) -> None:
    image = coco["images"][0]
    ann = next(a for a in coco["annotations"] if a["image_id"] == image["id"])
    ann["bbox"] = [image["width"] - 4.0, 2.0, 20.0, 10.0]


def _negative_size(coco: dict) -> None:
    coco["annotations"][0]["bbox"][2] = -3.0


def _unknown_category(coco: dict) -> None:
    coco["annotations"][0]["category_id"] = 999


@pytest.mark.parametrize("split, damage, expected", [
    ("train", _drop_categories, "missing top-level key(s) categories"),
    ("val", _box_outside, "box(es) extend more than 1 px outside their image"),
    ("train", _negative_size, "box(es) have a negative width or height"),
    ("val", _unknown_category, "use a category_id missing from 'categories'"),
], ids=["missing-keys", "box-outside-image", "negative-size", "unknown-category"])
def test_coco_file_that_is_not_coco_is_refused_naming_split_and_file(tmp_path, data, capsys, split, damage,
                                                                      expected):
    annotations = edit_json(data / f"instances_{split}.json", damage)
    config = sweep_file(tmp_path, data)
    assert_refused_before_anything_started(config, capsys, f"data.{split}", str(annotations), expected)


def test_splits_with_different_categories_are_refused(tmp_path, data, capsys):
    def rename_ids(coco: dict) -> None:
        for c in coco["categories"]:
            c["id"] += 100
        for a in coco["annotations"]:
            a["category_id"] += 100

    edit_json(data / "instances_val.json", rename_ids)
    config = sweep_file(tmp_path, data)
    assert_refused_before_anything_started(config, capsys, "data.val", "differ from those of",
                                           str(data / "instances_train.json"))


def _corrupt_one_image(data: Path) -> Path:
    image = sorted((data / "train").glob("*.png"))[1]
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    return image


def test_corrupt_image_is_fatal_with_bad_images_fail(tmp_path, data, capsys):
    image = _corrupt_one_image(data)
    config = sweep_file(tmp_path, data, data={"source": "coco", "root": str(data), "bad_images": "fail",
                                              "calibration_images": 2})
    assert_refused_before_anything_started(config, capsys, "data.train", str(image), "cannot be opened as an image",
                                           "bad_images='skip'")


def test_corrupt_and_missing_images_are_skipped_and_counted_by_default(tmp_path, data, capsys, caplog):
    _corrupt_one_image(data)
    (data / "val" / "000002.png").unlink()
    config = sweep_file(tmp_path, data)
    with pytest.raises(RayStarted):  # the checks passed: the sweep went on to start Ray
        main(["sweep", str(config)])
    skipped = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "skipped" in r.getMessage()]
    assert any(m.startswith("skipped 1 unreadable image(s) of") and "instances_train.json" in m for m in skipped)
    assert any(m.startswith("skipped 1 unreadable image(s) of") and "file not found" in m for m in skipped)


# ---- checkpoints ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, pristine_data) -> SimpleNamespace:
    """Real checkpoints (fresh weights) of several architectures; `.classes` is the data's class count."""
    from detection.coco import CocoDataset, SplitSpec
    from trainables.checkpoint import save_checkpoint
    from trainables.models.yolo import ModelSpec, build_model

    classes = CocoDataset(SplitSpec(pristine_data / "train", pristine_data / "instances_train.json")).num_classes
    root = tmp_path_factory.mktemp("checkpoints")
    made = {}
    for name, spec in {"n": ModelSpec("n", classes), "s": ModelSpec("s", classes),
                       "n_3_classes": ModelSpec("n", 3)}.items():
        made[name] = root / f"{name}.pt"
        save_checkpoint(made[name], {"model_spec": spec.to_dict(), "model": build_model(spec).state_dict()})
    return SimpleNamespace(classes=classes, **made)


def test_more_calibration_images_than_the_train_split_has_is_refused(tmp_path, data, capsys):
    config = sweep_file(tmp_path, data, data={"source": "coco", "root": str(data), "calibration_images": 64})
    code, err = run_cli(config, capsys)
    assert code == 2
    assert "data.calibration_images: 64 images calibrate the onnx-int8 artifacts, but the train split has only 4" in err


def test_student_init_of_another_size_is_refused_before_trials(tmp_path, data, capsys, checkpoints):
    config = sweep_file(tmp_path, data, student={"model": "n", "init": str(checkpoints.s)})
    assert_refused_before_anything_started(config, capsys, "student.init", str(checkpoints.s),
                                           f"holds a YOLO-s with {checkpoints.classes} classes",
                                           "trials train a YOLO-n")


def test_searched_student_init_of_another_class_count_is_refused(tmp_path, data, capsys, checkpoints):
    config = sweep_file(tmp_path, data, search={"student_init": {"choice": [str(checkpoints.n),
                                                                            str(checkpoints.n_3_classes)]}})
    assert_refused_before_anything_started(config, capsys, "search.student_init", str(checkpoints.n_3_classes),
                                           "holds a YOLO-n with 3 classes")


def test_teacher_checkpoint_of_another_class_count_is_refused(tmp_path, data, capsys, checkpoints):
    config = sweep_file(tmp_path, data, teachers={"t": {"checkpoint": str(checkpoints.n_3_classes)}},
                        search={"kd_method": {"choice": ["none", "output"]}},
                        fixed={"epochs": 1, "img_size": 64, "teacher": "t"})
    assert_refused_before_anything_started(config, capsys, "teachers.t.checkpoint", str(checkpoints.n_3_classes),
                                           f"the data's {checkpoints.classes} classes")


def test_checkpoints_of_the_right_architecture_pass_the_checks(tmp_path, data, capsys, checkpoints):
    # a bigger teacher with the same classes is the point of distillation: accepted
    config = sweep_file(tmp_path, data, student={"model": "n", "init": str(checkpoints.n)},
                        teachers={"t": {"checkpoint": str(checkpoints.s)}},
                        search={"kd_method": {"choice": ["none", "output"]}},
                        fixed={"epochs": 1, "img_size": 64, "teacher": "t"})
    with pytest.raises(RayStarted):
        main(["sweep", str(config)])


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path, data, capsys):
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"this is no checkpoint")
    config = sweep_file(tmp_path, data, student={"model": "n", "init": str(bogus)})
    assert_refused_before_anything_started(config, capsys, "student.init", "cannot read checkpoint", str(bogus))


@pytest.mark.parametrize("damage, expected", [
    (lambda ckpt: ckpt.pop("model_spec"), "an EdgeSweep checkpoint without model_spec"),
    (lambda ckpt: ckpt["model_spec"].pop("anchors"), "its model_spec cannot be read (KeyError"),
    (lambda ckpt: ckpt["model_spec"].update(size=["n"]), "its model_spec cannot be read"),
], ids=["no-model_spec", "no-anchors", "size-a-list"])
def test_a_checkpoint_with_a_damaged_model_spec_is_refused_naming_it(tmp_path, data, capsys, checkpoints, damage,
                                                                    expected):
    import torch

    ckpt = torch.load(checkpoints.n, weights_only=True)
    damage(ckpt)
    damaged = tmp_path / "damaged.pt"
    torch.save(ckpt, damaged)
    config = sweep_file(tmp_path, data, student={"model": "n", "init": str(damaged)})
    assert_refused_before_anything_started(config, capsys, "student.init", str(damaged), expected)


# ---- as a process --------------------------------------------------------------------------------


def test_the_command_exits_2_with_one_line_and_no_traceback(tmp_path, data):
    edit_json(data / "instances_train.json", _negative_size)
    config = sweep_file(tmp_path, data)
    done = subprocess.run([sys.executable, "-m", "orchestrator", "sweep", str(config)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "negative width or height" in errors[0] and "Traceback" not in done.stderr
    assert not (tmp_path / "runs" / SWEEP_NAME).exists()
