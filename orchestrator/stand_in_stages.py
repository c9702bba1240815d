"""Stand-in stages for tests and benchmarks only, never used by the CLI.

The sweep machinery runs for real around them (Ray Tune, OptunaSearch, MLflow, the board actor,
checkpoints and resume), but "training" sleeps and "export" returns a toy ONNX detector. The
accuracy they report is a deterministic function of the knobs, labelled `stand_in` in every
result, so nothing here can be mistaken for a measured detector. The board stage is real: the toy
artifact is timed by the board actor.
"""
from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass

from device_actors.measure import sniff_runtime
from device_actors.runtimes import get_runtime
from orchestrator.stages import EpochUpdate, ExportedArtifact, RealStages, TrainedModel
from orchestrator.trial_spec import TrialSpec


class StandInFailure(RuntimeError):
    """Raised on purpose by stand-in stages, to test how a sweep handles a failing trial."""


def _matches(trial: TrialSpec, when: dict | None) -> bool:
    return bool(when) and all(trial.knobs.get(k) == v for k, v in when.items())


def stand_in_train(trial: TrialSpec, spec, teacher, resume: bytes | None, *, seconds: float, fail_when: dict | None,
                   crash_first_attempt_at: int | None = None):
    """Sleeps `seconds` per trial, split over the epochs; resumes after the epoch in `resume`.

    `crash_first_attempt_at`: a fresh attempt (no resume point) crashes in that epoch, as a
    preempted node would; an attempt that resumes from a checkpoint does not."""
    epochs = trial.train.epochs
    start = int(resume.decode()) if resume else 0
    for epoch in range(start + 1, epochs + 1):
        time.sleep(seconds / epochs)
        if _matches(trial, fail_when) and epoch == epochs:
            raise StandInFailure(f"stand-in training failed on purpose for knobs {fail_when}")
        if resume is None and epoch == crash_first_attempt_at:
            raise StandInFailure(f"stand-in training crashed on purpose in epoch {epoch} of its first attempt")
        yield EpochUpdate(epoch=epoch, epochs=epochs, losses={"box": 1.0 / epoch}, metrics={"map50_95": 0.0},
                          lr=0.01, seconds=seconds / epochs, images_per_second=0.0, checkpoint=str(epoch).encode())
    yield TrainedModel(checkpoint=str(epochs).encode(), metrics={})


@dataclass(frozen=True)
class StandInStages:
    train_seconds: float = 0.1
    fail_when: dict | None = None  # knobs that make training raise StandInFailure
    fail_export_when: dict | None = None  # knobs that make export raise it (a trial that trained, or reused, its student)
    crash_first_attempt_at: int | None = None  # every trial's first attempt crashes in this epoch
    distinct_artifacts: bool = False  # a different toy model per trial (no board cache hits)
    toy_width: int = 16  # toy model cost, to tune the board's time per artifact

    @property
    def train_stream(self):
        return functools.partial(stand_in_train, seconds=self.train_seconds, fail_when=self.fail_when,
                                 crash_first_attempt_at=self.crash_first_attempt_at)

    def export_and_score(self, student: bytes, trial: TrialSpec, ctx) -> ExportedArtifact:
        from device_actors.toy_model import toy_detector_onnx

        if _matches(trial, self.fail_export_when):
            raise StandInFailure(f"stand-in export failed on purpose for knobs {self.fail_export_when}")
        key = hashlib.sha256(repr(sorted(trial.knobs.items())).encode()).digest()
        seed = int.from_bytes(key[:4], "little") if self.distinct_artifacts else 0
        content = toy_detector_onnx(trial.export.img_size, width=self.toy_width, seed=seed)
        score = 0.2 + 0.1 * key[4] / 255  # stand-in accuracy: a function of the knobs, not a measurement
        fmt = trial.export.format
        # The toy ONNX runs in the format's runtime when that one reads ONNX files, else in the one that does.
        runtime = get_runtime(fmt.runtime if get_runtime(fmt.runtime).recognises(content) else sniff_runtime(content))
        return ExportedArtifact(format=fmt.name, runtime=runtime.name, filename=f"stand-in-{fmt.name}{runtime.suffix}",
                                sha256=hashlib.sha256(content).hexdigest(), size_mb=len(content) / 1e6,
                                metrics={"map50_95": score, "map50": min(1.0, 1.5 * score), "precision": 0.5,
                                         "recall": 0.5},
                                eval_ms={}, settings={"stand_in": True}, content=content)

    time_on_board = staticmethod(RealStages.time_on_board)
    score_on_board = staticmethod(RealStages.score_on_board)
