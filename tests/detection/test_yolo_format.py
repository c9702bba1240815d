"""YOLO-format data sets read as COCO: the same annotations as a COCO twin, bad labels named by file
and line, and the commands taking a data.yaml wherever they take a COCO directory."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from detection.coco import CocoDataset, SplitSpec
from detection.synth import SynthConfig, generate
from detection.yolo_format import YoloFormatError
from orchestrator.cli import main
from orchestrator.config import ConfigError, parse_config
from orchestrator.datasets import splits_in


def write_yolo_twin(coco_root: Path, out: Path) -> Path:
    """The same images and boxes in Ultralytics' layout (written by hand, as a user's export would be)."""
    names = None
    for split in ("train", "val"):
        raw = json.loads((coco_root / f"instances_{split}.json").read_text())
        cats = sorted(c["id"] for c in raw["categories"])
        names = [next(c["name"] for c in raw["categories"] if c["id"] == i) for i in cats]
        (out / "images" / split).mkdir(parents=True)
        (out / "labels" / split).mkdir(parents=True)
        lines: dict[int, list[str]] = {im["id"]: [] for im in raw["images"]}
        sizes = {im["id"]: (im["width"], im["height"]) for im in raw["images"]}
        for a in raw["annotations"]:
            (x, y, w, h), (iw, ih) = a["bbox"], sizes[a["image_id"]]
            lines[a["image_id"]].append(f"{cats.index(a['category_id'])} {(x + w / 2) / iw:.6f} "
                                        f"{(y + h / 2) / ih:.6f} {w / iw:.6f} {h / ih:.6f}")
        for im in raw["images"]:
            shutil.copy(coco_root / split / im["file_name"], out / "images" / split / im["file_name"])
            if lines[im["id"]]:  # an image without objects has no label file
                (out / "labels" / split / Path(im["file_name"]).with_suffix(".txt")).write_text(
                    "\n".join(lines[im["id"]]) + "\n")
    data_yaml = out / "data.yaml"
    data_yaml.write_text(yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/val",
                                         "names": dict(enumerate(names))}))
    return data_yaml


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    coco = tmp_path_factory.mktemp("coco")
    generate(coco, train=6, val=4, seed=5, config=SynthConfig(size=64))
    return coco, write_yolo_twin(coco, tmp_path_factory.mktemp("yolo"))


def _annotations(ds: CocoDataset) -> dict[str, list[tuple]]:
    names = dict(zip(ds.category_ids, ds.class_names))
    out = {}
    for image_id in ds.image_ids:
        image = ds.coco.imgs[image_id]
        anns = ds.coco.imgToAnns.get(image_id, [])
        out[image["file_name"]] = sorted((names[a["category_id"]], *a["bbox"]) for a in anns)
    return out


def _same(a: dict[str, list[tuple]], b: dict[str, list[tuple]]) -> bool:
    """Equal file names, classes and boxes (to 0.001 px: the labels hold 6 decimals of normalised coordinates)."""
    return a.keys() == b.keys() and all(
        len(a[k]) == len(b[k]) and all(x[0] == y[0] and x[1:] == pytest.approx(y[1:], abs=1e-3)
                                       for x, y in zip(a[k], b[k])) for k in a)


def test_a_yolo_set_gives_the_annotations_of_its_coco_twin(twins):
    coco, data_yaml = twins
    for split in ("train", "val"):
        from_coco = CocoDataset(getattr(splits_in(coco), split))
        from_yolo = CocoDataset(getattr(splits_in(data_yaml), split))
        assert from_yolo.class_names == from_coco.class_names
        assert _same(_annotations(from_yolo), _annotations(from_coco))
        assert sum(map(len, _annotations(from_yolo).values())) > 0


def test_a_label_line_of_six_columns_is_named_by_file_and_line_or_skipped_and_counted(twins, tmp_path):
    _, data_yaml = twins
    root = tmp_path / "set"
    shutil.copytree(data_yaml.parent, root)
    label = sorted((root / "labels" / "val").glob("*.txt"))[0]
    label.write_text(label.read_text() + "0 0.5 0.5 0.1 0.1 0.9\n")
    splits = splits_in(root / "data.yaml")
    with pytest.raises(YoloFormatError, match=rf"{label}:\d+: expected 5 columns 'class cx cy w h', got 6"):
        CocoDataset(SplitSpec(splits.val.images, splits.val.annotations, bad_images="fail"))
    skipped = CocoDataset(SplitSpec(splits.val.images, splits.val.annotations, bad_images="skip"))
    assert [str(p) for p, _ in skipped.skipped] == [str(label)]


def test_a_data_yaml_naming_a_missing_directory_stops_the_config_and_the_command(twins, tmp_path, capsys):
    _, data_yaml = twins
    broken = tmp_path / "data.yaml"
    broken.write_text(yaml.safe_dump({"path": str(data_yaml.parent), "train": "images/train",
                                      "val": "images/nowhere", "names": ["a"]}))
    with pytest.raises(ConfigError, match=r"data.root: .*val directory .*images/nowhere does not exist"):
        parse_config({"name": "y", "data": {"source": "yolo", "root": str(broken)},
                      "search": {"quantization": {"grid": ["fp32", "int8"]}}, "searcher": {"algorithm": "grid"}}, base_dir=tmp_path)
    assert main(["eval", "--data", str(broken), "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "images/nowhere does not exist" in capsys.readouterr().err


def test_a_sweep_config_reads_a_yolo_set_by_its_data_yaml_or_its_directory(twins):
    _, data_yaml = twins
    for root in (data_yaml, data_yaml.parent):
        cfg = parse_config({"name": "y", "data": {"source": "yolo", "root": str(root)},
                            "search": {"quantization": {"grid": ["fp32", "int8"]}}, "searcher": {"algorithm": "grid"}}, base_dir=data_yaml.parent)
        assert cfg.data.train.annotations == data_yaml and cfg.data.val.images == data_yaml.parent / "images" / "val"
        assert parse_config(cfg.to_dict(), base_dir=data_yaml.parent).data == cfg.data  # stored and resumed alike


def test_eval_scores_a_checkpoint_on_a_yolo_set_as_on_its_coco_twin(twins, tmp_path, capsys):
    import torch

    from trainables.checkpoint import save_checkpoint
    from trainables.models.yolo import ModelSpec, build_model

    coco, data_yaml = twins
    torch.manual_seed(0)
    model = build_model(ModelSpec("n", CocoDataset(splits_in(coco).val).num_classes))
    save_checkpoint(tmp_path / "m.pt", {"model_spec": model.spec.to_dict(), "model": model.state_dict()})
    printed = []
    for data in (coco, data_yaml):
        assert main(["eval", "--data", str(data), "--checkpoint", str(tmp_path / "m.pt"), "--img-size", "64"]) == 0
        row = next(line for line in capsys.readouterr().out.splitlines() if line.count("│") > 3 and "0." in line)
        printed.append([cell.strip() for cell in row.split("│")[1:3]])  # mAP@.5:.95 and mAP@.5
    assert printed[0] == printed[1]
