"""The trained student's file in each format (the `student_exports` fixture of tests/conftest.py),
for tests/trainables/test_export.py and the format and runtime conformance classes: the formats
registered when one is first asked for are exported in one run (their float files made once), a
format registered later in a run of its own; each file is scored once."""
from __future__ import annotations

import functools
from pathlib import Path
from types import SimpleNamespace

import pytest

IMG_SIZE = 128
VAL_SUBSET = 60
CALIB_IMAGES = 32
QAT_EPOCHS = 1


def tools_problem(fmt) -> str | None:
    """Why the format cannot be built here (its tools are not installed), or None."""
    from trainables.export import ExportError

    try:
        fmt.check_tools()
    except ExportError as e:
        return str(e)
    return None


class StudentExports:
    """The student's file in each format, exported on first use; a format whose tools are not
    installed skips the test that asks for it. `splits.train` calibrates, `splits.val` scores."""

    def __init__(self, checkpoint: Path, splits: SimpleNamespace, out_dir: Path):
        self.checkpoint, self.splits, self.out_dir = checkpoint, splits, out_dir
        self._artifacts: dict = {}
        self._maps: dict[str, float] = {}

    @classmethod
    def of(cls, student: SimpleNamespace, out_dir: Path) -> StudentExports:
        """For the `trained_student` fixture's checkpoint and data set (the val split cut to VAL_SUBSET)."""
        from detection.coco import CocoDataset, SplitSpec

        root = Path(student.data_dir)
        val = SplitSpec(root / "val", root / "instances_val.json")
        if len(CocoDataset(val)) > VAL_SUBSET:
            val = SplitSpec(val.images, val.annotations, subset=VAL_SUBSET)
        splits = SimpleNamespace(train=CocoDataset(SplitSpec(root / "train", root / "instances_train.json")),
                                 val=CocoDataset(val))
        return cls(Path(student.checkpoint), splits, out_dir)

    def get(self, name: str):
        from trainables.export import FORMATS, export_formats, get_format

        if name not in self._artifacts:
            problem = tools_problem(get_format(name))
            if problem:
                pytest.skip(problem)
            # the formats that take minutes (QAT fine-tunes) are built only when one of them is asked for, together
            slow = bool(get_format(name).slow_build)
            pending = [f.name for f in FORMATS.values() if f.name not in self._artifacts and not tools_problem(f)
                       and (slow or not f.slow_build)]
            made = export_formats(self.checkpoint, pending, self.out_dir / f"run{len(self._artifacts)}",
                                  img_size=IMG_SIZE, calibration=self.splits.train, calib_images=CALIB_IMAGES,
                                  qat_epochs=QAT_EPOCHS, accuracy=self.train_accuracy)
            self._artifacts.update({a.format: a for a in made})
        return self._artifacts[name]

    @functools.cached_property
    def train_accuracy(self):
        """An ONNX file's mAP@.5:.95 on training images (int8-mixed's measure, as the sweep's stage gives it)."""
        from orchestrator.stages import training_images_accuracy

        return training_images_accuracy(self.splits.train)

    def map50_95(self, name: str) -> float:
        """mAP@.5:.95 of the format's file on the val split, through its runtime."""
        from device_actors.accuracy import evaluate_artifact

        if name not in self._maps:
            artifact = self.get(name)
            self._maps[name] = evaluate_artifact(artifact.read_bytes(), artifact.runtime,
                                                 self.splits.val).metrics.map50_95
        return self._maps[name]
