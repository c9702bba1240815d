"""`detect` and the trial previews: an exported artifact's detections drawn on images (real ONNX
Runtime session on the briefly trained student)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from orchestrator.cli import main
from trainables.export import export_formats


@pytest.fixture(scope="module")
def artifact(trained_student, tmp_path_factory):
    (onnx,) = export_formats(trained_student.checkpoint, ["onnx"], tmp_path_factory.mktemp("detect"), img_size=128)
    return onnx.path


def test_detect_draws_the_artifacts_detections_on_every_image_of_a_directory(artifact, trained_student, tmp_path,
                                                                            capsys):
    source = tmp_path / "images"
    source.mkdir()
    for f in sorted((trained_student.data_dir / "val").iterdir())[:3]:
        shutil.copy(f, source / f.name)
    names = trained_student.data_dir / "instances_val.json"
    assert main(["detect", "--model", str(artifact), "--source", str(source), "--save", str(tmp_path / "out"),
                 "--names", str(names)]) == 0
    out = capsys.readouterr().out
    assert "mean inference" in out and "FPS" in out
    changed = 0
    for f in sorted(source.iterdir()):
        drawn, original = (np.asarray(Image.open(p).convert("RGB")) for p in (tmp_path / "out" / f.name, f))
        assert drawn.shape == original.shape
        changed += int((drawn != original).any())
    assert changed >= 2  # a trained model finds objects, and their boxes are drawn


def test_a_video_or_missing_source_is_refused_with_what_to_give(artifact, tmp_path, capsys):
    (tmp_path / "clip.mp4").write_bytes(b"not decoded")
    assert main(["detect", "--model", str(artifact), "--source", str(tmp_path / "clip.mp4")]) == 2
    assert "video sources are not supported yet" in capsys.readouterr().err
    assert main(["detect", "--model", str(artifact), "--source", str(tmp_path / "nothing.png")]) == 2
    assert "source not found" in capsys.readouterr().err
