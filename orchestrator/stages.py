"""The work of one trial, stage by stage: train (on a trainer slot, `orchestrator.trainers`), export
and score the artifact (a Ray task on the export resources), time it on the board (the board actor).

Training is a generator that streams one update per epoch back to the trial; it runs on its own
slot, outside the trial's placement group. The trial itself holds almost nothing, so while one
trial exports and waits for the board, the next one already trains. `Stages` is what a trial
calls; `RealStages` does the work, and the test-only stand-ins of `orchestrator.stand_in_stages`
replace training and export with cheap fakes.
"""
from __future__ import annotations

import functools
import hashlib
import queue
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import ray

from detection.coco import CocoDataset, SplitSpec
from orchestrator.datasets import DataConfig, data_splits
from orchestrator.trainers import StageTask
from trainables.export.registry import ExportKnobs
from orchestrator.trial_spec import TrialSpec
from trainables.hyper import TrainKnobs, TrainSettings


@dataclass(frozen=True)
class TrainSpec:
    """What a training task needs besides the knobs; plain values, shipped once per sweep."""

    data: DataConfig
    seed: int
    training: TrainSettings
    torch_threads: int | None  # torch CPU threads (the train resources' CPU count)
    cache_dir: Path | None = None  # teacher cache on the training node (None: the node's default)
    data_digest: str = ""  # of the splits' annotations (`preflight.DataSummary.digest`): part of a student's key
    device: str = "auto"  # "cpu" for CPU slots: Ray 2.60 leaves a node's GPUs visible to tasks that asked for none

    def datasets(self) -> tuple[CocoDataset, CocoDataset]:
        splits = data_splits(self.data, seed=self.seed)
        return _read_split(splits.train), _read_split(splits.val)


@functools.lru_cache(maxsize=4)
def _read_split(split: SplitSpec) -> CocoDataset:
    """Read and validated once per process: a trainer slot's process lives from trial to trial
    (`orchestrator.trainers`), so trial after trial trains on the same split objects (and their
    decoded-image caches, see `trainables.data`) instead of loading them again. Nothing in training
    edits them."""
    return CocoDataset(split)


@dataclass(frozen=True)
class EpochUpdate:
    """One finished epoch, as the training task streams it to the trial."""

    epoch: int
    epochs: int
    losses: dict[str, float]
    metrics: dict[str, float]
    lr: float
    seconds: float
    images_per_second: float
    checkpoint: bytes = field(repr=False)  # last.pt after this epoch: the trial's resume point


@dataclass(frozen=True)
class TrainedModel:
    """The end of a training task: the final checkpoint and the model's float val metrics."""

    checkpoint: bytes = field(repr=False)
    metrics: dict[str, float] = field(default_factory=dict)

    @functools.cached_property
    def sha256(self) -> str:
        """The checkpoint's identity (a teacher's, in the key of the students it distils into)."""
        return hashlib.sha256(self.checkpoint).hexdigest()


def _run_in_thread(work, updates: "queue.Queue") -> threading.Thread:
    def target():
        try:
            updates.put(("done", work()))
        except BaseException as e:  # noqa: BLE001 - handed to the generator, which re-raises it
            updates.put(("error", e))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def _stream_training(run) -> Iterator[EpochUpdate | TrainedModel]:
    """Run `run(on_epoch) -> (checkpoint path, final metrics)` in a thread; yield an EpochUpdate per
    epoch as it finishes, then the TrainedModel."""
    updates: queue.Queue = queue.Queue()

    def on_epoch(result, checkpoint: Path) -> None:
        updates.put(("epoch", EpochUpdate(epoch=result.epoch, epochs=result.epochs, losses=result.losses,
                                          metrics=result.metrics, lr=result.lr, seconds=result.seconds,
                                          images_per_second=result.images_per_second,
                                          checkpoint=Path(checkpoint).read_bytes())))

    _run_in_thread(lambda: run(on_epoch), updates)
    while True:
        kind, value = updates.get()
        if kind == "epoch":
            yield value
        elif kind == "error":
            raise value
        else:
            checkpoint, metrics = value
            yield TrainedModel(checkpoint=Path(checkpoint).read_bytes(), metrics=metrics)
            return


def train_trial_stream(trial: TrialSpec, spec: TrainSpec, teacher: "TrainedModel | None",
                       resume: bytes | None) -> Iterator[EpochUpdate | TrainedModel]:
    """The train stage of a trial: its student, trained on its own section of the knobs."""
    yield from train_student_stream(trial.train, spec, teacher, resume)


def train_student_stream(student: TrainKnobs, spec: TrainSpec, teacher: "TrainedModel | None",
                         resume: bytes | None) -> Iterator[EpochUpdate | TrainedModel]:
    """Train one student; `resume` is a last.pt from an interrupted attempt of this trial. At each batch
    boundary it pauses while a board on this machine times an artifact (`device_actors.quiet`)."""
    from device_actors.quiet import Trainer
    from trainables.hyper import TrainConfig
    from trainables.student import train_student

    train, val = spec.datasets()
    with tempfile.TemporaryDirectory(prefix="edgesweep-train-") as tmp:
        work = Path(tmp)
        if resume is not None:
            (work / "last.pt").write_bytes(resume)
        teacher_path = None
        if teacher is not None and student.distills:
            teacher_path = work / "teacher.pt"
            teacher_path.write_bytes(teacher.checkpoint)
        base = TrainConfig.from_settings(spec.training, torch_threads=spec.torch_threads, device=spec.device)

        def run(on_epoch):
            with Trainer() as fence:
                result = train_student(student, train, val, work, base=base, teacher_checkpoint=teacher_path,
                                       on_batch=fence.at_batch_end, on_epoch=on_epoch)
            return result.checkpoint, result.final_metrics

        yield from _stream_training(run)


def train_teacher(size: str, epochs: int, img_size: int, spec: TrainSpec) -> TrainedModel:
    """Train (or load from the node's cache) a teacher; the checkpoint comes back as bytes."""
    from orchestrator.datasets import cache_dir
    from trainables.hyper import TrainConfig
    from trainables.kd.teachers import ensure_teacher, teacher_config, teacher_metrics

    train, val = spec.datasets()
    base = TrainConfig.from_settings(spec.training, torch_threads=spec.torch_threads, device=spec.device)
    cfg = teacher_config(base, epochs=epochs, img_size=img_size, seed=0)
    path = ensure_teacher(size, train, val, cfg, spec.cache_dir or cache_dir())
    return TrainedModel(checkpoint=Path(path).read_bytes(), metrics=teacher_metrics(path))


@dataclass(frozen=True)
class ExportedArtifact:
    """The artifact a trial deploys, with the accuracy measured on it through its runtime."""

    format: str
    runtime: str
    filename: str
    sha256: str
    size_mb: float
    metrics: dict[str, float]  # map50_95, map50, precision, recall of the artifact on the val split
    eval_ms: dict[str, float]  # per-image preprocess/inference/postprocess on the trial's node
    settings: dict
    content: bytes = field(repr=False)
    previews: dict[str, bytes] = field(default_factory=dict, repr=False)  # val images with its detections drawn

    def describe(self) -> dict:
        return {"format": self.format, "runtime": self.runtime, "filename": self.filename, "sha256": self.sha256,
                "size_mb": self.size_mb, "metrics": self.metrics, "eval_ms": self.eval_ms, "settings": self.settings}


def export_artifact(student: bytes, export: ExportKnobs, user_model: bool, spec: TrainSpec) -> ExportedArtifact:
    """Export the student as its `ExportKnobs` say (calibrating on training images) and score the
    file itself through its runtime on the val split: a trial's accuracy is the deployed artifact's."""
    from device_actors.accuracy import evaluate_artifact
    from device_actors.runtimes import RuntimeOptions
    from trainables.export import export_formats, export_onnx_model

    fmt = export.format.name
    train, val = spec.datasets()
    with tempfile.TemporaryDirectory(prefix="edgesweep-export-") as tmp:
        source = Path(tmp) / ("student.onnx" if user_model else "student.pt")
        source.write_bytes(student)
        calibrated = dict(calibration=train, calib_images=export.calib_images, calib_method=export.calib_method,
                          calib_seed=spec.seed)
        if user_model:
            (artifact,) = export_onnx_model(source, [fmt], Path(tmp) / "out", layout=export.onnx_layout,
                                            num_classes=train.num_classes, img_size=export.img_size, **calibrated)
        else:
            (artifact,) = export_formats(source, [fmt], Path(tmp) / "out", img_size=export.img_size,
                                         shape=export.shape, qat_epochs=export.qat_length,
                                         max_map_drop=export.max_map_drop, accuracy=training_images_accuracy(train),
                                         **calibrated)
        content = artifact.read_bytes()
    scored = evaluate_artifact(content, artifact.runtime, val, options=RuntimeOptions(threads=1))
    previews = _previews(content, artifact.runtime, val)
    m = scored.metrics
    return ExportedArtifact(
        format=fmt, runtime=artifact.runtime, filename=artifact.path.name, sha256=artifact.sha256,
        size_mb=artifact.size_mb, content=content,
        metrics={"map50_95": m.map50_95, "map50": m.map50, "precision": m.precision, "recall": m.recall},
        eval_ms={"preprocess": scored.preprocess_ms, "inference": scored.inference_ms,
                 "postprocess": scored.postprocess_ms},
        settings={k: v for k, v in artifact.settings.items() if k != "checkpoint"}, previews=previews)


ACCURACY_CONTROL_IMAGES = 64  # training images int8-mixed measures its mAP drop on (never the val split)


def training_images_accuracy(train: CocoDataset) -> Callable[[bytes], float]:
    """An ONNX file's mAP@.5:.95 through ONNX Runtime on a seeded subset of the training split: what
    int8-mixed measures its drop with, so its bound never reads the val split the trial is scored on."""
    from dataclasses import replace

    from device_actors.accuracy import evaluate_artifact

    control: list[CocoDataset] = []

    def accuracy(onnx_file: bytes) -> float:
        if not control:
            control.append(CocoDataset(replace(train.spec, subset=min(ACCURACY_CONTROL_IMAGES, len(train)))))
        return evaluate_artifact(onnx_file, "onnxruntime", control[0]).metrics.map50_95

    return accuracy


PREVIEW_IMAGES = 3  # val images per trial drawn with what its artifact detects


def _previews(content: bytes, runtime: str, val) -> dict[str, bytes]:
    """The first val images with the artifact's detections drawn, as PNG files for the trial's run."""
    from detection.draw import draw_detections, png_bytes
    from device_actors.detect import detect
    from device_actors.runtimes import RuntimeOptions, get_runtime

    session = get_runtime(runtime).load(content, RuntimeOptions(threads=1))
    out = {}
    for i in range(min(PREVIEW_IMAGES, len(val))):
        image = val.load_image(i)
        out[f"detections-{i}.png"] = png_bytes(draw_detections(image, detect(session, image).dets, val.class_names))
    return out


export_task = StageTask(export_artifact, max_retries=1)


class Stages(Protocol):
    """What a trial runs, stage by stage (`orchestrator.trial.run_trial`)."""

    @property
    def train_stream(self) -> Callable[..., Iterator[EpochUpdate | TrainedModel]]:
        """`(trial, spec, teacher, resume)` -> `EpochUpdate`s, then one `TrainedModel`; a plain
        generator function (picklable by reference), run on a trainer slot."""

    def export_and_score(self, student: bytes, trial: TrialSpec, ctx: Any) -> ExportedArtifact:
        """The trial's artifact (its format follows `trial.export`), scored through its runtime."""

    def time_on_board(self, exported: ExportedArtifact, trial: TrialSpec, ctx: Any) -> dict:
        """The board's latency report of the artifact, as a dict."""

    def score_on_board(self, exported: ExportedArtifact, trial: TrialSpec, ctx: Any) -> dict:
        """The artifact's COCO metrics computed on the board (`board.score_on_board`)."""


class RealStages:
    """Training, export and timing as a real sweep runs them."""

    train_stream = staticmethod(train_trial_stream)

    @staticmethod
    def export_and_score(student: bytes, trial: TrialSpec, ctx) -> ExportedArtifact:
        """A Ray task on the export resources: the trial process itself needs no CPU, nor torch."""
        ref = export_task.options(**ctx.export_options).remote(student, trial.export, trial.user_model, ctx.train_spec)
        return ray.get(ref)

    @staticmethod
    def time_on_board(exported: ExportedArtifact, trial: TrialSpec, ctx) -> dict[str, dict]:
        """Each board's latency report of the artifact (cached there if it was timed before), by board
        name. Several boards time at once, each behind its own actor's queue.

        A board whose node left the cluster does not fail calls: its actor waits to be restarted there,
        so the trial waits until `board.timeout_s`, and the error then says the board is gone."""
        from concurrent.futures import ThreadPoolExecutor

        from device_actors.client import BoardTimeout

        def measure(board) -> dict:
            try:
                report = board.measure(exported.content, runtime=exported.runtime,
                                       options=ctx.runtime_options(trial.board.board_threads), protocol=ctx.timing,
                                       timeout_s=ctx.board_timeout_s)
            except BoardTimeout as e:
                raise BoardTimeout(f"{e}{_absence(board)}") from None
            return report.to_dict()

        with ThreadPoolExecutor(len(ctx.boards), thread_name_prefix="board-") as pool:
            return dict(zip((b.name for b in ctx.boards), pool.map(measure, ctx.boards)))

    @staticmethod
    def score_on_board(exported: ExportedArtifact, trial: TrialSpec, ctx) -> dict:
        """The artifact's mAP on the board's own runtime and delegate, on the sweep's val split
        (sent to the board once, as `ctx.board_val`)."""
        from device_actors.client import BoardTimeout

        try:
            return ctx.board.score(exported.content, ctx.board_val, runtime=exported.runtime,
                                   options=ctx.runtime_options(trial.board.board_threads), timeout_s=ctx.board_timeout_s)
        except BoardTimeout as e:
            raise BoardTimeout(f"{e}{_absence(ctx.board)}") from None


def _absence(board) -> str:
    """'; board X left the cluster ...' when no live node offers the board, else nothing."""
    from device_actors.client import list_board_nodes

    if board.emulated or any(n.alive for n in list_board_nodes() if n.name == board.name):
        return ""
    return (f"; board {board.name!r} left the cluster (its node is dead): restart `python -m orchestrator board "
            f"join --name {board.name}` on the board")

