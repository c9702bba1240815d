"""The sweep file (`kd.yaml`): its schema as frozen dataclasses, and validation before anything runs.

`load_config` reads and checks the whole file in milliseconds (no torch, no Ray), so a typo in the
last section fails before hours of training, with a `ConfigError` that names the key path and what
is allowed there. This module only parses and validates: sections that configure another part are
that part's own dataclasses (the trainer's `TrainSettings`, the board's `TimingProtocol`, the data
set's `EmbeddedDefault`), so each default lives in one place, and code downstream reads attributes,
never `.get(key, default)`. Relative paths resolve against the file's directory (default
`output_dir` included), so a sweep resumes from any working directory.
See docs/config-reference.md for every key.
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from common.errors import UserError
from detection.coco import BAD_IMAGE_POLICIES
from device_actors.naming import BoardNameError, check_board_name
from device_actors.runtimes.base import RuntimeOptions
from device_actors.timing import TimingProtocol
from orchestrator import _schema as s
from orchestrator._knobs import KnobContext, check_knob, knob_table, parse_space
from orchestrator.algorithms import ALGORITHMS
from orchestrator.datasets import LAYOUTS, DataConfig, EmbeddedDefault, SplitPaths, find_layout
from orchestrator.errors import ConfigError
from search_spaces import SearchSpace
from trainables.augment import AugmentConfig
from trainables.hyper import SCRATCH, LossWeights, TeacherSpec, TrainKnobs, TrainSettings
from trainables.models.family import DEFAULT_ACTIVATION, SIZES

log = logging.getLogger(__name__)

__all__ = ["METRICS", "BoardConfig", "ConfigError", "ConstraintsConfig", "MlflowConfig", "Objective",
           "Resources", "ResourcesConfig", "SearcherConfig", "StudentConfig", "SweepConfig", "load_config",
           "parse_config"]

# metric -> its direction; board_* is the artifact's accuracy measured on the board (board.score_on_board)
METRICS = {"map50_95": "max", "map50": "max", "latency_ms": "min", "size_mb": "min", "board_map50_95": "max",
           "board_map50": "max"}
PER_BOARD = "latency_ms"  # the one metric timed on every board a sweep names: latency_ms@NAME per board
DEFAULT_OUTPUT_DIR = "runs/sweeps"
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}"
_NAME_RULE = "1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"


# ---- sections ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudentConfig:
    """Defaults of the `student` and `student_init` knobs."""

    model: str = TrainKnobs.student
    init: str = TrainKnobs.student_init  # "scratch" or an absolute checkpoint path


@dataclass(frozen=True)
class Objective:
    metric: str  # one of METRICS
    mode: str  # "min" or "max"


@dataclass(frozen=True)
class ConstraintsConfig:
    """Feasibility limits: a trial outside them never sits on the front (`orchestrator.pareto.violations`)."""

    latency_ms_max: float | dict[str, float] | None = None  # a number: the first board; a mapping: per board
    map50_95_min: float | None = None
    size_mb_max: float | None = None


@dataclass(frozen=True)
class SearcherConfig:
    algorithm: str = "tpe"
    trials: int = 20  # for grid: the grid size
    concurrency: int = 1  # trials running at once
    max_failures: int = 1  # retries of a crashed trial (Tune FailureConfig.max_failures)
    seed: int = 0  # sampler seed (defaults to the top-level seed)

    @property
    def uses_optuna(self) -> bool:
        """Optuna samplers take `SearchSpace.suggest`; random and grid take `tune_param_space`."""
        return ALGORITHMS.get(self.algorithm).uses_optuna


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0


@dataclass(frozen=True)
class ResourcesConfig:
    """What a trial's Ray tasks request. The trial process itself only waits (for its training task,
    its export task and the board) and reserves memory alone, so while one trial exports or waits for
    the board, the next one already trains: `train` is the accelerator slot (a GPU on a cluster),
    `export` the CPUs that export, quantize and score the artifact."""

    train: Resources = Resources()
    export: Resources = Resources()


def board_metric(metric: str, board: str) -> str:
    """The per-board key of a metric, e.g. latency_ms@rpi4: every artifact is timed on every board."""
    return f"{metric}@{board}"


def latency_keys(boards) -> tuple[str, ...]:
    """latency_ms@NAME for every board when there are several, else nothing (latency_ms says it)."""
    names = tuple(boards)
    return tuple(board_metric(PER_BOARD, n) for n in names) if len(names) > 1 else ()


@dataclass(frozen=True)
class BoardConfig:
    # boards joined with `board join --name NAME`, or emulated on the driver; the first is "the"
    # board (latency_ms, score_on_board); with more than one, each adds its own latency_ms@NAME
    names: tuple[str, ...] = ("local",)
    emulate_if_missing: bool = True
    timeout_s: float = 3600.0  # per measurement, queue included
    timing: TimingProtocol = TimingProtocol()
    providers: tuple[str, ...] = ("CPUExecutionProvider",)  # onnxruntime execution providers
    delegate: str | None = None  # TFLite external delegate library, a path on the board
    delegate_options: dict[str, str] = field(default_factory=dict)
    score_on_board: bool = False  # also score each artifact on the board, through its runtime and delegate

    @property
    def name(self) -> str:
        return self.names[0]

    @property
    def latency_keys(self) -> tuple[str, ...]:
        return latency_keys(self.names)

    def runtime_options(self, threads: int) -> RuntimeOptions:
        return RuntimeOptions(threads=threads, providers=self.providers, delegate=self.delegate,
                              delegate_options=dict(self.delegate_options))


@dataclass(frozen=True)
class MlflowConfig:
    tracking_uri: str  # default $MLFLOW_TRACKING_URI, else sqlite:///<sweep dir>/mlflow.db (absolute)
    experiment: str  # default the sweep's name


@dataclass(frozen=True)
class SweepConfig:
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
        data = self.data
        data_dict: dict = {"source": data.source}
        if data.source == "default":
            data_dict["synth"] = asdict(data.synth)
        elif data.root is not None:
            data_dict["root"] = str(data.root)
        else:
            data_dict.update({split: {"images": str(paths.images), "annotations": str(paths.annotations)}
                              for split, paths in (("train", data.train), ("val", data.val))})
        data_dict.update(train_subset=data.train_subset, val_subset=data.val_subset,
                         calibration_images=data.calibration_images, bad_images=data.bad_images)
        teachers = {}
        for name, t in self.teachers.items():
            teachers[name] = {"model": t.model, "epochs": t.epochs} if t.model else {"checkpoint": str(t.checkpoint)}
        board = asdict(self.board)
        board["providers"], board["names"] = list(self.board.providers), list(self.board.names)
        return {
            "name": self.name, "seed": self.seed, "output_dir": str(self.output_dir), "data": data_dict,
            "student": asdict(self.student), "teachers": teachers, "training": asdict(self.training),
            **self.search.to_dict(),
            "objectives": [asdict(o) for o in self.objectives], "constraints": asdict(self.constraints),
            "searcher": asdict(self.searcher), "resources": asdict(self.resources), "board": board,
            "mlflow": asdict(self.mlflow),
        }


# ---- parsing -------------------------------------------------------------------------------------

TOP_KEYS = ("name", "seed", "output_dir", "data", "student", "teachers", "training", "search", "fixed",
            "objectives", "constraints", "searcher", "resources", "board", "mlflow")
DATA_KEYS = tuple(f.name for f in fields(DataConfig))
SYNTH_KEYS = tuple(f.name for f in fields(EmbeddedDefault))
SPLIT_KEYS = ("images", "annotations")
STUDENT_KEYS = tuple(f.name for f in fields(StudentConfig))
TEACHER_KEYS = ("model", "epochs", "checkpoint")
TRAINING_KEYS = tuple(f.name for f in fields(TrainSettings))
LOSS_KEYS = tuple(f.name for f in fields(LossWeights))
AUGMENT_KEYS = tuple(f.name for f in fields(AugmentConfig))
OBJECTIVE_KEYS = ("metric", "mode")
CONSTRAINT_KEYS = tuple(f.name for f in fields(ConstraintsConfig))
SEARCHER_KEYS = tuple(f.name for f in fields(SearcherConfig))
RESOURCES_KEYS = ("train", "export")
RESOURCE_KEYS = ("cpu", "gpu")
BOARD_KEYS = ("name", *(f.name for f in fields(BoardConfig)))
TIMING_KEYS = tuple(f.name for f in fields(TimingProtocol))
MLFLOW_KEYS = ("tracking_uri", "experiment")


def load_config(path: Path) -> SweepConfig:
    """Read and validate a sweep file; every problem raises ConfigError naming the key path."""
    path = Path(path)
    return parse_config(s.read_yaml(path), source=str(path), base_dir=path.resolve().parent)


def parse_config(data: object, *, source: str = "<dict>", base_dir: Path | None = None) -> SweepConfig:
    """Validate a parsed sweep file; relative paths resolve against `base_dir` (default: the CWD)."""
    base = Path(base_dir).resolve() if base_dir is not None else Path.cwd()
    try:
        return _parse(data, base, source)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def _parse(data: object, base: Path, source: str) -> SweepConfig:
    if data is None:
        raise ConfigError(f"the file is empty; expected a mapping with keys {', '.join(TOP_KEYS)}")
    top = s.allowed_keys(data, "", TOP_KEYS)
    name = s.name(s.required(top, "", "name", f"the sweep's name: {_NAME_RULE}"), "name", _NAME, _NAME_RULE)
    seed = s.integer(top.get("seed", 0), "seed", minimum=0)
    output_dir = top.get("output_dir", DEFAULT_OUTPUT_DIR)
    if not isinstance(output_dir, str) or not output_dir:
        raise ConfigError(f"output_dir: must be a directory path, {s.got(output_dir)}")
    output_dir = (base / Path(output_dir).expanduser()).resolve()
    data_cfg = _data(top.get("data"), base)
    teachers = _teachers(top.get("teachers"), base)
    ctx = KnobContext(base_dir=base, teachers=tuple(teachers), knobs=knob_table())
    student = _student(top.get("student"), ctx)
    training = _training(top.get("training"))
    searcher_raw = s.allowed_keys(top.get("searcher"), "searcher", SEARCHER_KEYS)
    algorithm = s.one_of(searcher_raw.get("algorithm", SearcherConfig.algorithm), "searcher.algorithm",
                         ALGORITHMS.names(), "a search algorithm")
    defaults = {k: knob.default for k, knob in ctx.knobs.items()}
    defaults.update(student=student.model, student_init=student.init, seed=seed, calib_images=data_cfg.calibration_images,
                    teacher=next(iter(teachers)) if len(teachers) == 1 else None)
    space = parse_space(top.get("search"), top.get("fixed"), defaults, ctx,
                        grid=ALGORITHMS.get(algorithm).enumerates)
    searcher = _searcher(searcher_raw, algorithm, space, seed)
    _warn_frozen_scratch(space)
    _check_untrained(space)
    _check_user_onnx(space)
    board = _board(top.get("board"))
    objectives = _objectives(top.get("objectives"), board)
    for i, objective in enumerate(objectives):
        if objective.metric.startswith("board_") and not board.score_on_board:
            raise ConfigError(f"objectives[{i}].metric: {objective.metric} is the accuracy measured on the board; "
                              f"set board.score_on_board: true, or use {objective.metric.removeprefix('board_')}")
    return SweepConfig(
        name=name, seed=seed, output_dir=output_dir, data=data_cfg, student=student, teachers=teachers,
        training=training, search=space, objectives=objectives, constraints=_constraints(top.get("constraints"), board),
        searcher=searcher, resources=_resources(top.get("resources")), board=board,
        mlflow=_mlflow(top.get("mlflow"), output_dir / name, name), source=source)


def _optional_int(raw: dict, path: str, key: str, minimum: int) -> int | None:
    value = raw.get(key)
    return None if value is None else s.integer(value, s.child(path, key), minimum=minimum)


def _data(raw: object, base: Path) -> DataConfig:
    raw = s.allowed_keys(raw, "data", DATA_KEYS)
    source = s.one_of(raw.get("source", "default"), "data.source", ("default", "coco", "yolo"), "a data source")
    common = dict(train_subset=_optional_int(raw, "data", "train_subset", 1),
                  val_subset=_optional_int(raw, "data", "val_subset", 1),
                  calibration_images=s.integer(raw.get("calibration_images", DataConfig.calibration_images),
                                               "data.calibration_images", minimum=1),
                  bad_images=s.one_of(raw.get("bad_images", "skip"), "data.bad_images", BAD_IMAGE_POLICIES,
                                      "a bad-image policy"))
    if source == "default":
        for key in ("root", "train", "val"):
            if key in raw:
                raise ConfigError(f"data.{key}: only with data.source: coco or yolo (source is 'default', the generated "
                                  f"data set; its size is set by data.synth)")
        synth = s.allowed_keys(raw.get("synth"), "data.synth", SYNTH_KEYS)
        checked = {k: s.integer(synth.get(k, getattr(EmbeddedDefault, k)), f"data.synth.{k}",
                                minimum=32 if k == "size" else 0 if k == "seed" else 1) for k in SYNTH_KEYS}
        return DataConfig(source=source, synth=EmbeddedDefault(**checked), **common)
    if "synth" in raw:
        raise ConfigError("data.synth: only with data.source: default (the generated data set)")
    if source == "yolo":
        for key in ("train", "val"):
            if key in raw:
                raise ConfigError(f"data.{key}: not with data.source: yolo (its data.yaml names the splits)")
        given = raw.get("root")
        if given is None:
            raise ConfigError("data.root: required with data.source: yolo (an Ultralytics data.yaml, or the "
                              "directory holding one)")
        root = s.existing_path(given, "data.root", base, kind="file" if str(given).endswith((".yaml", ".yml"))
                               else "dir")
        try:
            train, val = find_layout(root)
        except UserError as e:
            raise ConfigError(f"data.root: {e}") from None
        return DataConfig(source=source, root=root, train=train, val=val, **common)
    if "root" in raw:
        for key in ("train", "val"):
            if key in raw:
                raise ConfigError(f"data.{key}: give either data.root or data.train + data.val, not both")
        root = s.existing_path(raw["root"], "data.root", base, kind="dir")
        try:
            train, val = find_layout(root)
        except UserError as e:  # a COCO layout it lacks, or a data.yaml it cannot read
            raise ConfigError(f"data.root: {e}") from None
        return DataConfig(source=source, root=root, train=train, val=val, **common)
    layouts = "; ".join(f"{a} + {b}/" for a, b, _, _ in LAYOUTS)
    splits = {}
    for split in ("train", "val"):
        path = f"data.{split}"
        if split not in raw:
            raise ConfigError(f"{path}: required with data.source: coco unless data.root is given "
                              f"(a directory with {layouts}); e.g. {split}: {{images: DIR, annotations: FILE}}")
        entry = s.allowed_keys(raw[split], path, SPLIT_KEYS)
        images = s.existing_path(s.required(entry, path, "images", "a directory of images"), f"{path}.images",
                                 base, kind="dir")
        annotations = s.existing_path(s.required(entry, path, "annotations", "a COCO instances json"),
                                      f"{path}.annotations", base, kind="file")
        splits[split] = SplitPaths(images, annotations)
    return DataConfig(source=source, **splits, **common)


def _teachers(raw: object, base: Path) -> dict[str, TeacherSpec]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"teachers: must be a mapping NAME -> {{model: SIZE, epochs: N}} or {{checkpoint: PATH}}, "
                          f"{s.got(raw)}")
    teachers = {}
    for name, entry in raw.items():
        path = s.child("teachers", str(name))
        s.name(name, f"{path} (the name)", _NAME, _NAME_RULE)
        entry = s.allowed_keys(entry, path, TEACHER_KEYS)
        if ("model" in entry) == ("checkpoint" in entry):
            raise ConfigError(f"{path}: give either model (a size trained once and cached, with epochs) or "
                              f"checkpoint (a trained model's path)")
        if "checkpoint" in entry:
            if "epochs" in entry:
                raise ConfigError(f"{path}.epochs: only with model (a checkpoint is already trained)")
            teachers[name] = TeacherSpec(checkpoint=s.existing_path(entry["checkpoint"], f"{path}.checkpoint",
                                                                     base, kind="file"))
        else:
            teachers[name] = TeacherSpec(
                model=s.one_of(entry["model"], f"{path}.model", tuple(SIZES), "a model size"),
                epochs=s.integer(entry.get("epochs", TeacherSpec.epochs), f"{path}.epochs", minimum=1))
    return teachers


def _student(raw: object, ctx: KnobContext) -> StudentConfig:
    raw = s.allowed_keys(raw, "student", STUDENT_KEYS)
    return StudentConfig(model=check_knob("student", raw.get("model", StudentConfig.model), "student.model", ctx),
                         init=check_knob("student_init", raw.get("init", StudentConfig.init), "student.init", ctx))


def _fraction(v, p):
    return s.number(v, p, minimum=0, below=1)


_TRAINING_CHECKS = {
    "batch_size": lambda v, p: s.integer(v, p, minimum=1),
    "nominal_batch": lambda v, p: s.integer(v, p, minimum=1),
    "optimizer": lambda v, p: s.one_of(v, p, ("auto", "sgd", "adamw"), "an optimizer"),
    "lr0": lambda v, p: None if v is None else s.number(v, p, above=0),
    "lrf": lambda v, p: s.number(v, p, above=0, maximum=1),
    "lr_schedule": lambda v, p: s.one_of(v, p, ("linear", "cosine"), "a learning-rate schedule"),
    "momentum": _fraction,
    "weight_decay": lambda v, p: s.number(v, p, minimum=0),
    "warmup_epochs": lambda v, p: s.number(v, p, minimum=0),
    "warmup_momentum": _fraction,
    "warmup_bias_lr": lambda v, p: None if v is None else s.number(v, p, minimum=0),
    "ema": s.boolean,
    "amp": s.boolean,
    "channels_last": s.boolean,
    "workers": lambda v, p: s.integer(v, p, minimum=0),
    "cache_images": s.boolean,
    "val_every": lambda v, p: s.integer(v, p, minimum=1),
}
_KNOB_HINTS = {k: f"{k} is a trial knob: set it under fixed: or search:" for k in
               ("epochs", "img_size", "freeze_backbone", "activation", "init", "seed", "teacher", "kd_method",
                "kd_factor")}
_KNOB_HINTS.update(device="the device follows resources.train.gpu", threads="threads follow resources.train.cpu")


def _training(raw: object) -> TrainSettings:
    raw = s.allowed_keys(raw, "training", TRAINING_KEYS, hints=_KNOB_HINTS)
    values = {k: check(raw[k], f"training.{k}") for k, check in _TRAINING_CHECKS.items() if k in raw}
    loss = s.allowed_keys(raw.get("loss"), "training.loss", LOSS_KEYS)
    values["loss"] = LossWeights(**{k: s.number(v, f"training.loss.{k}", above=1 if k == "anchor_t" else None,
                                               minimum=None if k == "anchor_t" else 0) for k, v in loss.items()})
    augment = s.allowed_keys(raw.get("augment"), "training.augment", AUGMENT_KEYS)
    try:
        values["augment"] = AugmentConfig(**augment)
    except ValueError as e:  # AugmentConfig's own range checks name the key ("augment.scale must be ...")
        raise ConfigError(f"training.{e}") from None
    return TrainSettings(**values)


def _searcher(raw: dict, algorithm: str, space: SearchSpace, seed: int) -> SearcherConfig:
    trials = raw.get("trials")
    if ALGORITHMS.get(algorithm).enumerates:
        size = space.grid_size()
        if trials is not None and trials != size:
            raise ConfigError(f"searcher.trials: the grid has {size} distinct trials; omit trials or set it to "
                              f"{size}, got {trials!r}")
        trials = size
    elif trials is None:
        raise ConfigError(f"searcher.trials: required for algorithm {algorithm} (an integer >= 1)")
    return SearcherConfig(
        algorithm=algorithm, trials=s.integer(trials, "searcher.trials", minimum=1),
        concurrency=s.integer(raw.get("concurrency", SearcherConfig.concurrency), "searcher.concurrency", minimum=1),
        max_failures=s.integer(raw.get("max_failures", SearcherConfig.max_failures), "searcher.max_failures",
                               minimum=0),
        seed=s.integer(raw.get("seed", seed), "searcher.seed", minimum=0))


def _objectives(raw: object, board: BoardConfig) -> tuple[Objective, ...]:
    if raw is None:
        return Objective("map50_95", "max"), Objective("latency_ms", "min")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"objectives: must be a non-empty list of {{metric, mode}}, {s.got(raw)}")
    allowed = (*METRICS, *board.latency_keys)
    objectives = []
    for i, entry in enumerate(raw):
        path = s.child("objectives", i)
        entry = s.allowed_keys(entry, path, OBJECTIVE_KEYS)
        metric = entry.get("metric")
        if isinstance(metric, str) and "@" in metric and metric not in allowed:
            raise ConfigError(f"{path}.metric: {metric!r} names a board the sweep does not time on; per-board "
                              f"metrics are {', '.join(board.latency_keys) or 'only there with several board.names'}")
        metric = s.one_of(s.required(entry, path, "metric", f"one of {', '.join(allowed)}"), f"{path}.metric",
                          allowed, "a metric")
        natural = METRICS[metric.split("@")[0]]
        mode = s.one_of(entry.get("mode", natural), f"{path}.mode", ("min", "max"), "a mode")
        if mode != natural:
            raise ConfigError(f"{path}.mode: {metric} can only be {natural}imized here (mode: {natural}), got {mode}")
        if any(o.metric == metric for o in objectives):
            raise ConfigError(f"{path}.metric: {metric} is listed twice")
        objectives.append(Objective(metric, mode))
    return tuple(objectives)


def _constraints(raw: object, board: BoardConfig) -> ConstraintsConfig:
    raw = dict(s.allowed_keys(raw, "constraints", CONSTRAINT_KEYS))
    checks = {"latency_ms_max": dict(above=0), "map50_95_min": dict(above=0, maximum=1), "size_mb_max": dict(above=0)}
    per_board = raw.pop("latency_ms_max", None) if isinstance(raw.get("latency_ms_max"), dict) else None
    out = {k: s.number(v, f"constraints.{k}", **checks[k]) for k, v in raw.items() if v is not None}
    if per_board is not None:
        if len(board.names) < 2:
            raise ConfigError("constraints.latency_ms_max: a mapping of board -> limit needs several board.names; "
                              "with one board give a number")
        for name in per_board:
            if name not in board.names:
                raise ConfigError(f"constraints.latency_ms_max.{name}: not one of board.names "
                                  f"({', '.join(board.names)})")
        out["latency_ms_max"] = {n: s.number(v, f"constraints.latency_ms_max.{n}", above=0)
                                 for n, v in per_board.items()}
    return ConstraintsConfig(**out)


def _ray_quantity(value: object, path: str) -> float:
    quantity = s.number(value, path, minimum=0)
    if quantity > 1 and not quantity.is_integer():
        raise ConfigError(f"{path}: Ray takes fractions only below 1; use a whole number or a value in [0, 1], "
                          f"got {value!r}")
    return quantity


def _resources(raw: object) -> ResourcesConfig:
    raw = s.allowed_keys(raw, "resources", RESOURCES_KEYS)
    parts = {}
    for key in RESOURCES_KEYS:
        entry = s.allowed_keys(raw.get(key), f"resources.{key}", RESOURCE_KEYS)
        parts[key] = Resources(**{k: _ray_quantity(v, f"resources.{key}.{k}") for k, v in entry.items()})
    if parts["train"].gpu and parts["export"].gpu:
        raise ConfigError("resources.export.gpu: must be 0 when resources.train.gpu is set: each GPU training slot "
                          "is a trainer that keeps its GPU for the whole sweep, so an export task asking for one "
                          "could wait forever; export, quantization and scoring run on CPUs")
    return ResourcesConfig(**parts)


def _board_names(raw: dict) -> tuple[str, ...]:
    """board.name (one board) or board.names (a list, the first is the main one)."""
    if "name" in raw and "names" in raw:
        raise ConfigError("board: give name (one board) or names (several), not both")
    if "names" not in raw:
        names, paths = [raw.get("name", BoardConfig.names[0])], ["board.name"]
    else:
        names = s.string_list(raw["names"], "board.names")
        paths = [s.child("board.names", i) for i in range(len(names))]
    for i, (name, path) in enumerate(zip(names, paths)):
        try:
            check_board_name(name)
        except BoardNameError as e:
            raise ConfigError(f"{path}: {e}") from None
        if names.index(name) != i:
            raise ConfigError(f"{path}: {name} is listed twice")
    return tuple(names)


def _board(raw: object) -> BoardConfig:
    raw = s.allowed_keys(raw, "board", BOARD_KEYS)
    names = _board_names(raw)
    timing = s.allowed_keys(raw.get("timing"), "board.timing", TIMING_KEYS)
    defaults = TimingProtocol()
    protocol = TimingProtocol(
        warmup_runs=s.integer(timing.get("warmup_runs", defaults.warmup_runs), "board.timing.warmup_runs", minimum=0),
        min_runs=s.integer(timing.get("min_runs", defaults.min_runs), "board.timing.min_runs", minimum=1),
        min_seconds=s.number(timing.get("min_seconds", defaults.min_seconds), "board.timing.min_seconds", minimum=0),
        max_runs=s.integer(timing.get("max_runs", defaults.max_runs), "board.timing.max_runs", minimum=1),
        cooldown_seconds=s.number(timing.get("cooldown_seconds", defaults.cooldown_seconds),
                                  "board.timing.cooldown_seconds", minimum=0))
    if protocol.max_runs < protocol.min_runs:
        raise ConfigError(f"board.timing.max_runs: must be >= min_runs ({protocol.min_runs}), got {protocol.max_runs}")
    providers = s.string_list(raw.get("providers", list(BoardConfig.providers)), "board.providers")
    for i, provider in enumerate(providers):
        if not provider.endswith("ExecutionProvider"):
            raise ConfigError(f"board.providers[{i}]: {provider!r} is not an onnxruntime execution provider name "
                              f"(they end in ExecutionProvider, e.g. CPUExecutionProvider)")
    delegate = raw.get("delegate")
    if delegate is not None and (not isinstance(delegate, str) or not delegate):
        raise ConfigError(f"board.delegate: must be a library path on the board or null, {s.got(delegate)}")
    options = raw.get("delegate_options") or {}
    if not isinstance(options, dict):
        raise ConfigError(f"board.delegate_options: must be a mapping of option -> value, {s.got(options)}")
    for key, value in options.items():
        if not isinstance(key, str) or isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"board.delegate_options.{key}: must be a scalar value, {s.got(value)}")
    if options and delegate is None:
        raise ConfigError("board.delegate_options: only with board.delegate")
    return BoardConfig(
        names=names, emulate_if_missing=s.boolean(raw.get("emulate_if_missing", True), "board.emulate_if_missing"),
        timeout_s=s.number(raw.get("timeout_s", BoardConfig.timeout_s), "board.timeout_s", above=0),
        timing=protocol, providers=tuple(providers), delegate=delegate,
        delegate_options={k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in options.items()},
        score_on_board=s.boolean(raw.get("score_on_board", BoardConfig.score_on_board), "board.score_on_board"))


def _mlflow(raw: object, sweep_dir: Path, name: str) -> MlflowConfig:
    raw = s.allowed_keys(raw, "mlflow", MLFLOW_KEYS)
    uri = raw.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if uri is None:
        uri = f"sqlite:///{(sweep_dir / 'mlflow.db').as_posix()}"
    elif not isinstance(uri, str) or not uri:
        raise ConfigError(f"mlflow.tracking_uri: must be a URI (http://HOST:5000, sqlite:///PATH) or null, "
                          f"{s.got(uri)}")
    experiment = raw.get("experiment", name)
    if not isinstance(experiment, str) or not experiment.strip():
        raise ConfigError(f"mlflow.experiment: must be a non-empty name, {s.got(experiment)}")
    return MlflowConfig(tracking_uri=uri, experiment=experiment)


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


def _check_user_onnx(space: SearchSpace) -> None:
    """A user's .onnx detector as student_init cannot be trained, nor converted to TFLite here."""
    if not any(str(v).endswith(".onnx") for v in space.possible_values("student_init")):
        return
    if tuple(space.possible_values("epochs")) != (0,):
        raise ConfigError("student.init: an .onnx model cannot be trained; set fixed.epochs: 0 (quantize, time and "
                          "score it as it is)")
    others = [r for r in space.possible_values("runtime") if r != "onnxruntime"]
    if others:
        raise ConfigError(f"runtime: an .onnx student_init becomes ONNX Runtime formats only; the space also has "
                          f"{', '.join(map(str, others))}")


def _warn_frozen_scratch(space: SearchSpace) -> None:
    if True in space.possible_values("freeze_backbone") and set(space.possible_values("student_init")) == {SCRATCH}:
        log.warning("freeze_backbone can be true while every student starts from scratch: a frozen random backbone "
                    "only trains the neck and head; set student.init to a pretrained checkpoint")
