"""`detect` and the trial previews: an exported artifact's detections drawn on images (real ONNX
Runtime session on the briefly trained student)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator.cli import main

# The shared 8-epoch student scores its objects below the CLI's default 0.25 since the trainer's changes of
# 2026-12-07 (objectness prior at the real image size, among others): 0 boxes at 0.25, 5-8 per image at 0.1.
# These tests are about drawing what a model finds.
CONF = ["--conf", "0.1"]
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
                 "--names", str(names), *CONF]) == 0
    out = capsys.readouterr().out
    assert "mean inference" in out and "FPS" in out
    changed = 0
    for f in sorted(source.iterdir()):
        drawn, original = (np.asarray(Image.open(p).convert("RGB")) for p in (tmp_path / "out" / f.name, f))
        assert drawn.shape == original.shape
        changed += int((drawn != original).any())
    assert changed >= 2  # a trained model finds objects, and their boxes are drawn


def _video_of(images: list[Path], path: Path, repeat: int = 3) -> Path:
    """A small real .mp4 made of val images (same size), each shown `repeat` frames."""
    from detection.video import VideoInfo, VideoWriter

    frames = [np.asarray(Image.open(f).convert("RGB")) for f in images]
    height, width = frames[0].shape[:2]
    writer = VideoWriter(path, VideoInfo(fps=10.0, frames=0, width=width, height=height))
    for frame in frames:
        for _ in range(repeat):
            writer.write(np.asarray(Image.fromarray(frame).resize((width, height))))
    writer.close()
    return writer.path


def test_detect_on_a_video_writes_an_annotated_video_of_every_frame(artifact, trained_student, tmp_path, capsys):
    from detection.video import VideoReader

    clip = _video_of(sorted((trained_student.data_dir / "val").iterdir())[:4], tmp_path / "clip.mp4")
    assert main(["detect", "--model", str(artifact), "--source", str(clip), "--save", str(tmp_path / "out"),
                 *CONF]) == 0
    out = capsys.readouterr().out
    assert "clip.mp4" in out and "over 12 frame(s) on this machine" in out
    # The same pass with nothing above threshold: what re-encoding alone changes.
    assert main(["detect", "--model", str(artifact), "--source", str(clip), "--save", str(tmp_path / "bare"),
                 "--conf", "0.999"]) == 0
    source, drawn, bare = (VideoReader(d) for d in (clip, tmp_path / "out" / "clip.mp4", tmp_path / "bare" / "clip.mp4"))
    assert (drawn.info.width, drawn.info.height, drawn.info.frames) == (source.info.width, source.info.height, 12)
    boxes = [_changed(a, b) for a, b in zip(bare, drawn)]
    noise = [_changed(a, b) for a, b in zip(source, VideoReader(tmp_path / "bare" / "clip.mp4"))]
    assert len(boxes) == 12 and sum(b > 5 * max(noise) for b in boxes) >= 6  # drawn boxes, not codec noise


def _changed(a: np.ndarray, b: np.ndarray) -> float:
    """The fraction of pixels that changed colour outright (a box line or label, not codec noise)."""
    return float((np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 80).mean())


def test_a_bad_or_missing_source_is_refused_with_what_to_give(artifact, tmp_path, capsys):
    (tmp_path / "clip.mp4").write_bytes(b"not decoded")
    assert main(["detect", "--model", str(artifact), "--source", str(tmp_path / "clip.mp4")]) == 2
    assert "cannot decode this file as a video" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["detect", "--model", str(artifact), "--source", str(tmp_path / "notes.txt")]) == 2
    assert "neither an image" in capsys.readouterr().err
    assert main(["detect", "--model", str(artifact), "--source", str(tmp_path / "nothing.png")]) == 2
    assert "source not found" in capsys.readouterr().err
    Image.new("RGB", (64, 48)).save(tmp_path / "frame.png")
    assert main(["detect", "--model", str(artifact), "--source", str(tmp_path), "--save", str(tmp_path)]) == 2
    assert "would overwrite them" in capsys.readouterr().err
