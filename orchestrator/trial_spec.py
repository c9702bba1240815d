"""One trial, typed: the knobs its search space completed, split into the section each stage reads,
plus the facts derived from them once (the teacher it distils from, whether its student is a
user's own model, what to call it).

A searcher proposes plain values (Optuna, Tune and the journal all speak dicts), and
`SearchSpace.complete` fills in every knob; `TrialSpec.of` is where they become types. From there
on a stage reads attributes of its own section (`trial.train`, `trial.export`, `trial.board`),
never a knob by its string name; `knobs` keeps the plain values for the journal and MLflow.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from common.knobs import pick
from device_actors.runtimes import BoardKnobs
from orchestrator._knobs import RENAMED
from trainables.export.registry import ExportKnobs
from trainables.hyper import TrainKnobs, is_user_model
from trainables.models.family import DEFAULT_ACTIVATION


def teacher_key(name: str, img_size: int) -> str:
    """How a sweep names a teacher trained at one size ("s@128"): trials, MLflow runs and the driver's
    table of teachers all use this key."""
    return f"{name}@{img_size}"


@dataclass(frozen=True)
class TrialSpec:
    train: TrainKnobs
    export: ExportKnobs
    board: BoardKnobs
    knobs: Mapping[str, object] = field(repr=False)  # every knob as plain values: the journal's and MLflow's

    @classmethod
    def of(cls, knobs: Mapping[str, object]) -> "TrialSpec":
        """The typed trial of a complete knob dict (`SearchSpace.complete`, or a journal record's,
        whose knobs may still carry a name from before a rename)."""
        knobs = {RENAMED.get(k, k): v for k, v in knobs.items()}
        return cls(train=TrainKnobs.from_knobs(knobs), export=pick(ExportKnobs, knobs),
                   board=pick(BoardKnobs, knobs), knobs=dict(knobs))

    @property
    def teacher_key(self) -> str | None:
        """The teacher this trial distils from, by `teacher_key`; None when it does not distil."""
        if not self.train.distills or self.train.teacher is None:
            return None
        return teacher_key(self.train.teacher, self.train.img_size)

    @property
    def user_model(self) -> bool:
        """The student is a user's own .onnx detector: exported untrained, through ONNX Runtime only."""
        return self.train.epochs == 0 and is_user_model(self.train.student_init)

    @property
    def format(self) -> str:
        """The artifact's format name, e.g. onnxruntime + int8 -> "onnx-int8"."""
        return self.export.format.name

    def kd_name(self, *, teacher: bool = False) -> str:
        return self.train.kd_name(teacher=teacher)

    @property
    def label(self) -> str:
        """What the trial is, in a few words: "cwd x0.8 · onnx-int8 · 320px", "no KD · tflite · 128px";
        an activation other than YOLOv5's SiLU is named too ("... · 128px · relu6")."""
        activation = self.train.activation
        return (f"{self.kd_name()} · {self.format} · {self.train.img_size}px"
                + ("" if activation == DEFAULT_ACTIVATION else f" · {activation}"))
