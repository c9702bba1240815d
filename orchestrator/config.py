"""The sweep file (`kd.yaml`): its schema as frozen dataclasses that pydantic validates, and the
rules across sections that no single field can say.

`load_config` reads and checks the whole file in milliseconds (no torch, no Ray), so a typo in the
last section fails before hours of training, with a `ConfigError` that names the key path and what
is allowed there. Each field's type, bounds and description are declared once, on the section that
owns it (the trainer's `TrainSettings`, the board's `TimingProtocol`, the data set's
`EmbeddedDefault`, the sections below); `SweepFile` is the file as written, `SweepConfig` the
resolved config the sweep runs (absolute paths, found data layouts, the search space).
`python -m orchestrator schema` prints the JSON Schema and docs/config-reference.md from them.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BeforeValidator, Discriminator, Field, Tag

from common.errors import UserError
from common.knobs import Noun
from detection.coco import BAD_IMAGE_POLICIES
from device_actors.naming import check_board_name
from device_actors.npu.profiles import DEFAULT_PROFILE, load_profile
from device_actors.runtimes.base import RuntimeOptions
from device_actors.timing import TimingProtocol
from orchestrator import _schema as s
from orchestrator._knobs import KnobContext, check_knob, knob_table, parse_space
from orchestrator.algorithms import ALGORITHMS
from orchestrator.datasets import LAYOUTS, DataConfig, EmbeddedDefault, SplitPaths, find_layout
from orchestrator.errors import ConfigError
from orchestrator.study_storage import check_study_storage
from search_spaces import SearchSpace
from trainables.export.registry import FORMATS, format_for
from trainables.hyper import SCRATCH, TeacherSpec, TrainKnobs, TrainSettings, is_user_model
from trainables.models.family import DEFAULT_ACTIVATION

log = logging.getLogger(__name__)

__all__ = ["METRICS", "BoardConfig", "ConfigError", "ConstraintsConfig", "MlflowConfig", "Objective",
           "Resources", "ResourcesConfig", "SearcherConfig", "StudentConfig", "SweepConfig", "SweepFile",
           "load_config", "parse_config"]

# metric -> its direction; board_* is the artifact's accuracy measured on the board (board.score_on_board)
METRICS = {"map50_95": "max", "map50": "max", "latency_ms": "min", "size_mb": "min", "board_map50_95": "max",
           "board_map50": "max", "train_s": "min"}  # train_s: the student's training seconds, teacher forwards included
PER_BOARD = "latency_ms"  # the one metric timed on every board a sweep names: latency_ms@NAME per board
DEFAULT_OUTPUT_DIR = "runs/sweeps"
NAME_RULE = "1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"
Name = Annotated[str, Noun(NAME_RULE), Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]
FORBID = {"extra": "forbid"}  # every section refuses unknown keys


def _doc(text: str, **bounds: Any) -> Any:
    return Field(description=text, **bounds)


# ---- sections ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudentConfig:
    """Defaults of the `student` and `student_init` knobs (a fixed: or search: entry overrides them), and
    where trained students are kept (`orchestrator.students`)."""

    __pydantic_config__ = FORBID
    model: Annotated[str, _doc("model size n, s, m, l or x")] = TrainKnobs.student
    init: Annotated[str, _doc("'scratch', a checkpoint path (a pretrained student) or a user's .onnx detector "
                              "(quantized, timed and scored only: fixed epochs: 0)")] = TrainKnobs.student_init
    cache: Annotated[Literal["sweep", "shared"], Noun("a student cache"), _doc(
        "where a trained student is kept for the trials that export it: sweep (<sweep dir>/students/) or shared "
        "($EDGESWEEP_CACHE/students/, like teachers: later sweeps on the same data, settings and code reuse it; "
        "on a cluster, storage every node reaches)")] = "sweep"


@dataclass(frozen=True)
class Objective:
    __pydantic_config__ = FORBID
    metric: Annotated[str, _doc(f"{', '.join(METRICS)}, or latency_ms@NAME per board of several board.names")]
    mode: Annotated[Literal["min", "max"] | None, Noun("a mode"),
                    _doc("max for the mAPs, min for latency, size and train_s (may be left out)")] = None


PositiveNumber = Annotated[float, Field(gt=0)]


@dataclass(frozen=True)
class ConstraintsConfig:
    """Feasibility limits: a trial outside them never sits on the front (`orchestrator.pareto.violations`)."""

    __pydantic_config__ = FORBID
    latency_ms_max: Annotated[PositiveNumber | dict[str, PositiveNumber] | None, _doc(
        "a number limits latency_ms (the first board); a mapping board -> limit limits each latency_ms@NAME")] = None
    map50_95_min: Annotated[float | None, _doc("the artifact's mAP@.5:.95 at least", gt=0, le=1)] = None
    size_mb_max: Annotated[float | None, _doc("the artifact's size in MB at most", gt=0)] = None
    train_s_max: Annotated[float | None, _doc("the student's training seconds at most (teacher forwards included; "
                                              "a student another trial trained costs what it cost there)", gt=0)] = None
    npu_fallback_ops_max: Annotated[int | None, _doc(
        "operators of the artifact that fall back to the CPU under board.npu_profile, at most (0: all on the NPU; "
        "an ONNX artifact's nodes all fall back under the TFLite profiles)", ge=0)] = None


@dataclass(frozen=True)
class SearcherConfig:
    """An Optuna searcher never trains a configuration twice: a space smaller than `trials` ends
    early, finished. With grid every searched knob must be a grid or choice."""

    __pydantic_config__ = FORBID
    algorithm: s.registered(ALGORITHMS.names, "a search algorithm",  # type: ignore[valid-type]
                            "tpe, nsga2, gp (Optuna samplers through Ray Tune's OptunaSearch), random, grid") = "tpe"
    trials: Annotated[int | None, _doc("trials in total; required except for grid (its size)", ge=1)] = None
    concurrency: Annotated[int, _doc("trials running at once", ge=1)] = 1
    max_failures: Annotated[int, _doc("retries of a crashed trial (Tune's FailureConfig)", ge=0)] = 1
    seed: Annotated[int | None, _doc("the sampler's seed (default: the top-level seed)", ge=0)] = None
    export_variants: Annotated[bool, _doc(
        "Optuna samplers: once a trial trains a new student, queue that student's other export and board variants "
        "in the space (they cost an export and a board timing, no training) before the next proposal")] = True
    storage: Annotated[str | None, AfterValidator(check_study_storage), _doc(
        "Optuna samplers: the study's database. null: SQLite in the sweep directory; on a cluster a PostgreSQL "
        "server, postgresql://HOST:PORT/DB (no user or password here: they come from PGUSER and PGPASSWORD or "
        "~/.pgpass, so they are never stored)")] = None

    @property
    def uses_optuna(self) -> bool:
        """Optuna samplers take `SearchSpace.suggest`; random and grid take `tune_param_space`."""
        return ALGORITHMS.get(self.algorithm).uses_optuna


def _ray_quantity(value: float) -> float:
    if value > 1 and not value.is_integer():
        raise ValueError(f"Ray takes fractions only below 1; use a whole number or a value in [0, 1], got {value!r}")
    return value


RayQuantity = Annotated[float, Field(ge=0), AfterValidator(_ray_quantity)]


@dataclass(frozen=True)
class Resources:
    __pydantic_config__ = FORBID
    cpu: Annotated[RayQuantity, _doc("CPUs (torch threads for training: rounded up)")] = 1.0
    gpu: Annotated[RayQuantity, _doc("GPUs")] = 0.0


@dataclass(frozen=True)
class ResourcesConfig:
    """What a trial's Ray tasks request. The trial process itself only waits (for its training task,
    its export task and the board) and reserves memory alone, so while one trial exports or waits for
    the board, the next one already trains: `train` is the accelerator slot (a GPU on a cluster),
    `export` the CPUs that export, quantize and score the artifact."""

    __pydantic_config__ = FORBID
    train: Annotated[Resources, _doc("the training slot (with a GPU: a trainer that keeps it for the sweep)")] = \
        Resources()
    export: Annotated[Resources, _doc("export, quantization and scoring of the artifact")] = Resources()

    def __post_init__(self) -> None:
        if self.train.gpu and self.export.gpu:
            raise ValueError("export.gpu: must be 0 when resources.train.gpu is set: each GPU training slot is a "
                             "trainer that keeps its GPU for the whole sweep, so an export task asking for one could "
                             "wait forever; export, quantization and scoring run on CPUs")


def board_metric(metric: str, board: str) -> str:
    """The per-board key of a metric, e.g. latency_ms@rpi4: every artifact is timed on every board."""
    return f"{metric}@{board}"


def latency_keys(boards) -> tuple[str, ...]:
    """latency_ms@NAME for every board when there are several, else nothing (latency_ms says it)."""
    names = tuple(boards)
    return tuple(board_metric(PER_BOARD, n) for n in names) if len(names) > 1 else ()


def _board_name(name: str) -> str:
    check_board_name(name)  # its BoardNameError is a ValueError: pydantic reports it at the name's path
    return name


def _provider(name: str) -> str:
    if not name.endswith("ExecutionProvider"):
        raise ValueError(f"{name!r} is not an onnxruntime execution provider name (they end in ExecutionProvider, "
                         f"e.g. CPUExecutionProvider)")
    return name


def _npu_profile(name: str | None) -> str | None:
    if name is not None:
        load_profile(name)  # its ProfileError is a ValueError: pydantic reports it at board.npu_profile
    return name


def _option_strings(options: object) -> object:
    """Delegate options are strings on the wire; YAML's true becomes "true", 2 becomes "2"."""
    if not isinstance(options, dict):
        return options
    return {k: str(v).lower() if isinstance(v, bool) else str(v) if isinstance(v, (int, float)) else v
            for k, v in options.items()}


@dataclass(frozen=True)
class BoardConfig:
    """The boards every artifact is timed on (`board join --name NAME` on each, docs/board-setup.md).
    Without a board of that name the driver machine stands in, and every result says emulated."""

    __pydantic_config__ = FORBID
    names: Annotated[tuple[Annotated[str, AfterValidator(_board_name)], ...], Field(min_length=1), _doc(
        "boards joined with `board join --name NAME` (board.name: NAME for one); every artifact is timed on each, "
        "the first is the main one (latency_ms, score_on_board), each adds latency_ms@NAME")] = ("local",)
    emulate_if_missing: Annotated[bool, _doc("with no such board in the cluster, time on an emulated board on the "
                                             "driver machine (reports say emulated)")] = True
    timeout_s: Annotated[float, _doc("seconds a measurement may take, the board's queue included", gt=0)] = 3600.0
    timing: Annotated[TimingProtocol, _doc("the timing protocol")] = TimingProtocol()
    providers: Annotated[tuple[Annotated[str, AfterValidator(_provider)], ...], Field(min_length=1),
                         _doc("onnxruntime execution providers, in order")] = ("CPUExecutionProvider",)
    delegate: Annotated[str | None, _doc("TFLite external delegate library, a path on the board", min_length=1)] = None
    delegate_options: Annotated[dict[str, str], BeforeValidator(_option_strings), _doc(
        "options passed to the delegate (values become strings); only with delegate")] = field(default_factory=dict)
    score_on_board: Annotated[bool, _doc("also score each artifact on the board, through its runtime and delegate "
                                         "(board_map50_95, board_map50)")] = False
    npu_profile: Annotated[str | None, AfterValidator(_npu_profile), _doc(
        "what each artifact's operators would run on: a delegate profile (vx: the i.MX8M Plus NPU's VX delegate; "
        "xnnpack: LiteRT's CPU delegate) or a profile .yaml (device_actors/npu/profiles.py); every trial logs "
        "npu/delegated_ops, npu/partitions, npu/fallback_ops and the per-op table (null: none)")] = DEFAULT_PROFILE

    def __post_init__(self) -> None:
        for i, name in enumerate(self.names):
            if self.names.index(name) != i:
                raise ValueError(f"names[{i}]: {name} is listed twice")
        if self.timing.max_runs < self.timing.min_runs:
            raise ValueError(f"timing.max_runs: must be >= min_runs ({self.timing.min_runs}), got "
                             f"{self.timing.max_runs}")
        if self.delegate_options and self.delegate is None:
            raise ValueError("delegate_options: only with board.delegate")

    @property
    def name(self) -> str:
        return self.names[0]

    @property
    def latency_keys(self) -> tuple[str, ...]:
        return latency_keys(self.names)

    def runtime_options(self, threads: int) -> RuntimeOptions:
        return RuntimeOptions(threads=threads, providers=self.providers, delegate=self.delegate,
                              delegate_options=dict(self.delegate_options))


def _one_board(raw: object) -> object:
    """`board.name: X` is `board.names: [X]`."""
    if isinstance(raw, dict) and "name" in raw:
        if "names" in raw:
            raise ConfigError("board: give name (one board) or names (several), not both")
        raw = {**{k: v for k, v in raw.items() if k != "name"}, "names": [raw["name"]]}
    return raw


@dataclass(frozen=True)
class MlflowConfig:
    """On a local store (SQLite or a directory) the sweep's experiment keeps its artifacts in
    <output_dir>/<name>/mlartifacts; a tracking server keeps them in its own store."""

    __pydantic_config__ = FORBID
    tracking_uri: Annotated[str | None, _doc("null: $MLFLOW_TRACKING_URI if set, else sqlite:///<output_dir>/<name>/"
                                             "mlflow.db; or a server such as http://HEAD:5000", min_length=1)] = None
    experiment: Annotated[str | None, _doc("MLflow experiment name (default: the sweep's name)",
                                           pattern=r"\S")] = None


# ---- data: one section per source ------------------------------------------------------------------


@dataclass(frozen=True)
class _DataCommon:
    __pydantic_config__ = FORBID
    train_subset: Annotated[int | None, _doc("a seeded random subset of the training images (null: all)", ge=1)] = None
    val_subset: Annotated[int | None, _doc("a seeded subset of the val images every mAP uses (null: all)", ge=1)] = None
    calibration_images: Annotated[int, _doc("training images that calibrate int8 artifacts", ge=1)] = \
        DataConfig.calibration_images
    bad_images: Annotated[Literal[BAD_IMAGE_POLICIES], Noun("a bad-image policy"),  # type: ignore[valid-type]
                          _doc("skip (log and count) or fail on unreadable images and bad label lines")] = "skip"

    def _common(self) -> dict:
        return {k: getattr(self, k) for k in ("train_subset", "val_subset", "calibration_images", "bad_images")}


@dataclass(frozen=True, kw_only=True)
class GeneratedData(_DataCommon):
    """`source: default`: the embedded default data set, generated on first use and cached."""

    source: Literal["default"] = "default"
    synth: Annotated[EmbeddedDefault, _doc("size of the generated set")] = EmbeddedDefault()

    def resolve(self, base: Path) -> DataConfig:
        return DataConfig(source="default", synth=self.synth, **self._common())


@dataclass(frozen=True)
class SplitFiles:
    __pydantic_config__ = FORBID
    images: Annotated[str, _doc("a directory of images")]
    annotations: Annotated[str, _doc("a COCO instances json")]


@dataclass(frozen=True, kw_only=True)
class CocoData(_DataCommon):
    """`source: coco`: a COCO-format data set, by its root directory or by its two splits. Root layouts:
    instances_train.json + train/ + instances_val.json + val/ (what `data synth` writes), or COCO 2017's
    annotations/instances_train2017.json + train2017/ + annotations/instances_val2017.json + val2017/."""

    source: Literal["coco"]
    root: Annotated[str | None, _doc("a directory in a known layout (what `data synth` writes, or COCO 2017's)")] = \
        None
    train: Annotated[SplitFiles | None, _doc("instead of root: {images: DIR, annotations: FILE}")] = None
    val: Annotated[SplitFiles | None, _doc("instead of root: as train, for the validation split")] = None

    def resolve(self, base: Path) -> DataConfig:
        if self.root is not None:
            if self.train is not None or self.val is not None:
                raise ConfigError(f"data.{'train' if self.train else 'val'}: give either data.root or data.train + "
                                  f"data.val, not both")
            return _found(self, s.existing_path(self.root, "data.root", base, kind="dir"))
        layouts = "; ".join(f"{a} + {b}/" for a, b, _, _ in LAYOUTS)
        splits = {}
        for name in ("train", "val"):
            split = getattr(self, name)
            if split is None:
                raise ConfigError(f"data.{name}: required with data.source: coco unless data.root is given (a "
                                  f"directory with {layouts}); e.g. {name}: {{images: DIR, annotations: FILE}}")
            splits[name] = SplitPaths(s.existing_path(split.images, f"data.{name}.images", base, kind="dir"),
                                      s.existing_path(split.annotations, f"data.{name}.annotations", base, kind="file"))
        return DataConfig(source="coco", **splits, **self._common())


@dataclass(frozen=True, kw_only=True)
class YoloData(_DataCommon):
    """`source: yolo`: a YOLO-format (Ultralytics) data set: a data.yaml with train and val image
    directories (relative to its `path:`) and `names`; each image's labels in labels/<split>/<stem>.txt,
    one `class cx cy w h` line per object, normalised to [0, 1]. Each split becomes COCO in memory
    (category id = class index + 1); a bad label line stops the command with its file and line, or is
    counted and left out under bad_images: skip."""

    source: Literal["yolo"]
    root: Annotated[str, _doc("an Ultralytics data.yaml, or the directory holding one")]

    def resolve(self, base: Path) -> DataConfig:
        kind = "file" if self.root.endswith((".yaml", ".yml")) else "dir"
        return _found(self, s.existing_path(self.root, "data.root", base, kind=kind))


def _found(data: CocoData | YoloData, root: Path) -> DataConfig:
    try:
        train, val = find_layout(root)
    except UserError as e:  # a layout it lacks, or a data.yaml it cannot read
        raise ConfigError(f"data.root: {e}") from None
    return DataConfig(source=data.source, root=root, train=train, val=val, **data._common())


def _source(raw: object) -> object:
    return raw.get("source", "default") if isinstance(raw, dict) else getattr(raw, "source", None)


DataSection = Annotated[
    Union[Annotated[GeneratedData, Tag("default")], Annotated[CocoData, Tag("coco")],
          Annotated[YoloData, Tag("yolo")]],
    Discriminator(_source), Noun("a data source"),
    _doc("default: the generated data set; coco: a COCO-format data set on disk; yolo: a YOLO-format one")]


# ---- the file ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepFile:
    """The sweep file as written. `search:` and `fixed:` range over the trial knobs, which the stages
    and the registries declare (`orchestrator._knobs`)."""

    __pydantic_config__ = FORBID
    name: Annotated[Name, _doc(f"the sweep's name: {NAME_RULE}; its state lives in <output_dir>/<name>/")]
    seed: Annotated[int, _doc("seeds the data subsets, the searcher and the seed knob's default", ge=0)] = 0
    output_dir: Annotated[str, _doc("where sweeps keep their state (relative to this file)", min_length=1)] = \
        DEFAULT_OUTPUT_DIR
    data: DataSection = GeneratedData()
    student: Annotated[StudentConfig, _doc("defaults of the student knobs")] = StudentConfig()
    teachers: Annotated[dict[Name, TeacherSpec], _doc("NAME -> {model: SIZE, epochs: N} or {checkpoint: PATH}")] = \
        field(default_factory=dict)
    training: Annotated[TrainSettings, _doc("fixed hyper-parameters of every student (and trained teacher)")] = \
        TrainSettings()
    search: Annotated[dict[str, Any], _doc("knob -> distribution the searcher explores")] = field(default_factory=dict)
    fixed: Annotated[dict[str, Any], _doc("knob -> one value for every trial")] = field(default_factory=dict)
    objectives: Annotated[tuple[Objective, ...], Field(min_length=1), _doc(
        "one entry: single-objective; several: their Pareto front")] = (
        Objective("map50_95", "max"), Objective("latency_ms", "min"))
    constraints: Annotated[ConstraintsConfig, _doc("feasibility limits")] = ConstraintsConfig()
    searcher: Annotated[SearcherConfig, _doc("the search algorithm and its budget")] = SearcherConfig()
    resources: Annotated[ResourcesConfig, _doc("Ray resources of a trial's train and export tasks")] = \
        ResourcesConfig()
    board: Annotated[BoardConfig, _doc("the boards that time every artifact")] = BoardConfig()
    mlflow: Annotated[MlflowConfig, _doc("where runs are logged")] = MlflowConfig()


_HINTS = {"training": {**{k: f"{k} is a trial knob: set it under fixed: or search:" for k in
                          ("epochs", "img_size", "freeze_backbone", "activation", "init", "seed", "teacher",
                           "kd_method", "kd_factor")},
                       "device": "the device follows resources.train.gpu",
                       "threads": "threads follow resources.train.cpu"}}


@dataclass(frozen=True)
class SweepConfig:
    """The resolved sweep: absolute paths, the data set's splits found, the search space built."""

    name: str
    seed: int
    output_dir: Path  # absolute; the sweep's state lives in sweep_dir
    data: DataConfig
    student: StudentConfig
    teachers: dict[str, TeacherSpec]
    training: TrainSettings
    search: SearchSpace  # search: and fixed: (knob defaults included)
    objectives: tuple[Objective, ...]
    constraints: ConstraintsConfig
    searcher: SearcherConfig
    resources: ResourcesConfig
    board: BoardConfig
    mlflow: MlflowConfig
    source: str = field(default="<dict>", compare=False)  # the file it came from, for messages

    @property
    def sweep_dir(self) -> Path:
        return self.output_dir / self.name

    def to_dict(self) -> dict:
        """The config as plain values in the file's own schema (parse_config accepts it back)."""
        file = SweepFile(name=self.name, seed=self.seed, output_dir=str(self.output_dir), data=_as_written(self.data),
                         student=self.student, teachers=self.teachers, training=self.training,
                         **self.search.to_dict(), objectives=self.objectives, constraints=self.constraints,
                         searcher=self.searcher, resources=self.resources, board=self.board, mlflow=self.mlflow)
        plain = s.adapter(SweepFile).dump_python(file, mode="json")
        plain["teachers"] = {name: {"checkpoint": str(t.checkpoint)} if t.checkpoint else
                             {"model": t.model, "epochs": t.epochs} for name, t in self.teachers.items()}
        return plain


def _as_written(data: DataConfig) -> GeneratedData | CocoData | YoloData:
    common = dict(train_subset=data.train_subset, val_subset=data.val_subset,
                  calibration_images=data.calibration_images, bad_images=data.bad_images)
    if data.source == "default":
        return GeneratedData(synth=data.synth, **common)
    if data.source == "yolo" or data.root is not None:
        return (YoloData if data.source == "yolo" else CocoData)(source=data.source, root=str(data.root), **common)
    train, val = (SplitFiles(str(p.images), str(p.annotations)) for p in (data.train, data.val))
    return CocoData(source="coco", train=train, val=val, **common)


# ---- parsing -------------------------------------------------------------------------------------


def load_config(path: Path) -> SweepConfig:
    """Read and validate a sweep file; every problem raises ConfigError naming the key path."""
    path = Path(path)
    return parse_config(s.read_yaml(path), source=str(path), base_dir=path.resolve().parent)


def parse_config(data: object, *, source: str = "<dict>", base_dir: Path | None = None) -> SweepConfig:
    """Validate a parsed sweep file; relative paths resolve against `base_dir` (default: the CWD)."""
    base = Path(base_dir).resolve() if base_dir is not None else Path.cwd()
    one_board = isinstance(data, dict) and isinstance(data.get("board"), dict) and "name" in data["board"]
    try:
        if data is None:
            raise ConfigError(f"the file is empty; expected a mapping with keys {', '.join(s._fields(SweepFile))}")
        if isinstance(data, dict):  # a section written with nothing under it takes its defaults
            data = {k: v for k, v in data.items() if v is not None or k == "name"}
            data = {**data, "board": _one_board(data["board"])} if "board" in data else data
        return _resolve(s.validate(SweepFile, data, hints=_HINTS), data, base, source)
    except ConfigError as e:
        message = str(e).replace("board.names[0]", "board.name") if one_board else str(e)
        raise ConfigError(f"{source}: {message}") from None


def _resolve(file: SweepFile, raw: dict, base: Path, source: str) -> SweepConfig:
    output_dir = (base / Path(file.output_dir).expanduser()).resolve()
    data = file.data.resolve(base)
    teachers = {name: _teacher(name, spec, raw["teachers"][name], base) for name, spec in file.teachers.items()}
    ctx = KnobContext(base_dir=base, teachers=tuple(teachers), knobs=knob_table())
    student = replace(file.student, model=check_knob("student", file.student.model, "student.model", ctx),
                      init=check_knob("student_init", file.student.init, "student.init", ctx))
    defaults = {k: knob.default for k, knob in ctx.knobs.items()}
    defaults.update(student=student.model, student_init=student.init, seed=file.seed,
                    calib_images=file.data.calibration_images,
                    teacher=next(iter(teachers)) if len(teachers) == 1 else None)
    space = parse_space(raw.get("search"), raw.get("fixed"), defaults, ctx,
                        grid=ALGORITHMS.get(file.searcher.algorithm).enumerates)
    _warn_frozen_scratch(space)
    _check_untrained(space)
    _check_user_onnx(space)
    return SweepConfig(
        name=file.name, seed=file.seed, output_dir=output_dir, data=data, student=student,
        teachers=teachers, training=file.training, search=space, objectives=_objectives(file),
        constraints=_constraints(file), searcher=_searcher(file, space), resources=file.resources, board=file.board,
        mlflow=_mlflow(file.mlflow, output_dir / file.name, file.name), source=source)


def _teacher(name: str, spec: TeacherSpec, raw: dict, base: Path) -> TeacherSpec:
    if spec.checkpoint is None:
        return spec
    if "epochs" in raw:
        raise ConfigError(f"teachers.{name}.epochs: only with model (a checkpoint is already trained)")
    return replace(spec, checkpoint=s.existing_path(spec.checkpoint, f"teachers.{name}.checkpoint", base, kind="file"))


def _searcher(file: SweepFile, space: SearchSpace) -> SearcherConfig:
    searcher, trials = file.searcher, file.searcher.trials
    if searcher.storage is not None and not searcher.uses_optuna:
        raise ConfigError(f"searcher.storage: only an Optuna sampler keeps a study (tpe, nsga2, gp); "
                          f"{searcher.algorithm} has none")
    if ALGORITHMS.get(searcher.algorithm).enumerates:
        size = space.grid_size()
        if trials is not None and trials != size:
            raise ConfigError(f"searcher.trials: the grid has {size} distinct trials; omit trials or set it to "
                              f"{size}, got {trials!r}")
        trials = size
    elif trials is None:
        raise ConfigError(f"searcher.trials: required for algorithm {searcher.algorithm} (an integer >= 1)")
    return replace(searcher, trials=trials, seed=file.seed if searcher.seed is None else searcher.seed)


def _objectives(file: SweepFile) -> tuple[Objective, ...]:
    board, allowed = file.board, (*METRICS, *file.board.latency_keys)
    objectives: list[Objective] = []
    for i, objective in enumerate(file.objectives):
        path, metric = f"objectives[{i}]", objective.metric
        if "@" in metric and metric not in allowed:
            raise ConfigError(f"{path}.metric: {metric!r} names a board the sweep does not time on; per-board "
                              f"metrics are {', '.join(board.latency_keys) or 'only there with several board.names'}")
        s.one_of(metric, f"{path}.metric", allowed, "a metric")
        natural = METRICS[metric.split("@")[0]]
        if objective.mode not in (None, natural):
            raise ConfigError(f"{path}.mode: {metric} can only be {natural}imized here (mode: {natural}), got "
                              f"{objective.mode}")
        if any(o.metric == metric for o in objectives):
            raise ConfigError(f"{path}.metric: {metric} is listed twice")
        if metric.startswith("board_") and not board.score_on_board:
            raise ConfigError(f"{path}.metric: {metric} is the accuracy measured on the board; set "
                              f"board.score_on_board: true, or use {metric.removeprefix('board_')}")
        objectives.append(Objective(metric, natural))
    return tuple(objectives)


def _constraints(file: SweepFile) -> ConstraintsConfig:
    limits, names = file.constraints.latency_ms_max, file.board.names
    if isinstance(limits, dict):
        if len(names) < 2:
            raise ConfigError("constraints.latency_ms_max: a mapping of board -> limit needs several board.names; "
                              "with one board give a number")
        for name in limits:
            if name not in names:
                raise ConfigError(f"constraints.latency_ms_max.{name}: not one of board.names ({', '.join(names)})")
    if file.constraints.npu_fallback_ops_max is not None and file.board.npu_profile is None:
        raise ConfigError("constraints.npu_fallback_ops_max: counts operators under board.npu_profile, which is null; "
                          "name a profile (vx, xnnpack or a .yaml)")
    return file.constraints


def _mlflow(given: MlflowConfig, sweep_dir: Path, name: str) -> MlflowConfig:
    uri = given.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(sweep_dir / 'mlflow.db').as_posix()}"
    return MlflowConfig(tracking_uri=uri, experiment=given.experiment or name)


# ---- rules across knobs ------------------------------------------------------------------------------


def _check_untrained(space: SearchSpace) -> None:
    """`epochs: 0` means a quantization-only sweep: the given checkpoint is exported untouched, so
    there must be one, and nothing may distil into it."""
    epochs = space.possible_values("epochs")
    if min(epochs) > 0:
        return
    if "epochs" in space.params:
        raise ConfigError("search.epochs: 0 (no training) cannot be searched against training; fix epochs: 0 for "
                          "a quantization-only sweep, or search epochs >= 1")
    if SCRATCH in space.possible_values("student_init"):
        raise ConfigError("fixed.epochs: 0 exports the student_init checkpoint without training; set student.init "
                          "(or fixed.student_init) to a checkpoint, not scratch")
    distilling = [m for m in space.possible_values("kd_method") if m != "none"]
    if distilling:
        raise ConfigError(f"fixed.epochs: 0 trains nothing, so kd_method can only be none (the space has "
                          f"{', '.join(map(str, distilling))})")
    if set(space.possible_values("activation")) != {DEFAULT_ACTIVATION}:
        raise ConfigError(f"activation: fixed.epochs: 0 exports the checkpoint as it is, with its own activation; "
                          f"leave activation out (the space has {', '.join(map(str, space.possible_values('activation')))})")
    if max(space.possible_values("prune_ratio")) > 0:
        raise ConfigError("prune_ratio: fixed.epochs: 0 exports the checkpoint as it is, unpruned; leave prune_ratio out, "
                          "or prune a checkpoint once with `export --prune-structured R`")


def _check_user_onnx(space: SearchSpace) -> None:
    """A user's .onnx detector as student_init cannot be trained, nor converted to TFLite here."""
    if not any(is_user_model(v) for v in space.possible_values("student_init")):
        return
    if tuple(space.possible_values("epochs")) != (0,):
        raise ConfigError("student.init: an .onnx model cannot be trained; set fixed.epochs: 0 (quantize, time and "
                          "score it as it is)")
    pairs = [(r, q) for r in space.possible_values("runtime") for q in space.possible_values("quantization")]
    others = [fmt.name for r, q in pairs if not (fmt := format_for(r, q)).from_float_onnx]
    if others:
        able = ", ".join(f.name for f in FORMATS.values() if f.from_float_onnx)
        raise ConfigError(f"runtime: an .onnx student_init becomes only the formats built from a float ONNX ({able}); "
                          f"the space can also pick {', '.join(others)}")


def _warn_frozen_scratch(space: SearchSpace) -> None:
    if True in space.possible_values("freeze_backbone") and set(space.possible_values("student_init")) == {SCRATCH}:
        log.warning("freeze_backbone can be true while every student starts from scratch: a frozen random backbone "
                    "only trains the neck and head; set student.init to a pretrained checkpoint")
