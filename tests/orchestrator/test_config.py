"""The sweep file: every example loads, every mistake is a ConfigError naming its key path and what is allowed."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from dataclasses import asdict, fields
from pathlib import Path

import pytest
import yaml
from PIL import Image

from orchestrator import _knobs
from orchestrator.config import ConstraintsConfig, SweepConfig, load_config, parse_config
from orchestrator.datasets import data_splits
from orchestrator.errors import ConfigError
from orchestrator.pareto import violations
from search_spaces import Choice, Grid, LogUniform
from trainables.export.registry import format_for

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def write_coco_2017(root: Path, images_per_split: int = 3) -> Path:
    """A tiny data set in COCO 2017's layout, with real PNGs and real instances files."""
    (root / "annotations").mkdir(parents=True)
    for split in ("train2017", "val2017"):
        (root / split).mkdir()
        images, anns = [], []
        for k in range(images_per_split):
            Image.new("RGB", (40, 30), (80, 120, 160)).save(root / split / f"{k:012d}.jpg")
            images.append({"id": k + 1, "file_name": f"{k:012d}.jpg", "width": 40, "height": 30})
            anns.append({"id": k + 1, "image_id": k + 1, "category_id": 1, "bbox": [5, 5, 10, 8],
                         "area": 80, "iscrowd": 0})
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}))
    return root


def base_config() -> dict:
    return {"name": "t", "teachers": {"s": {"model": "s", "epochs": 3}},
            "search": {"kd_method": {"choice": ["none", "output", "feature"]},
                       "kd_factor": {"loguniform": [0.1, 10]}},
            "fixed": {"epochs": 4}, "searcher": {"algorithm": "tpe", "trials": 4}}


def error_of(data: dict, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, **kwargs)
    return str(info.value)


def with_change(path: str, value: object, data: dict | None = None) -> dict:
    """A copy of `data` (default: base_config()) with the dotted key set, or removed for `...`."""
    data = copy.deepcopy(data if data is not None else base_config())
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    if value is ...:
        node.pop(last, None)
    else:
        node[last] = value
    return data


# ---- the examples ---------------------------------------------------------------------------------


def test_demo_example_loads_as_is():
    cfg = load_config(EXAMPLES / "kd.yaml")
    assert cfg.name == "kd-demo" and cfg.data.source == "default"
    assert cfg.searcher.algorithm == "tpe" and cfg.searcher.uses_optuna and cfg.searcher.concurrency >= 2
    assert cfg.search.params["kd_method"] == Choice(("none", "output", "feature", "cwd"))
    assert isinstance(cfg.search.params["kd_factor"], LogUniform)
    assert set(cfg.search.fixed) == {"epochs", "img_size", "board_threads", "teacher"} and cfg.search.fixed["teacher"] == "s"
    assert cfg.output_dir == REPO / "runs" / "sweeps"  # relative to the file, not the working directory
    assert cfg.mlflow.tracking_uri == f"sqlite:///{REPO / 'runs' / 'sweeps' / 'kd-demo' / 'mlflow.db'}"
    assert cfg.board.name == "local" and cfg.board.emulate_if_missing


@pytest.mark.parametrize("example", ["kd-coco.yaml", "thesis-grid.yaml"])
def test_cluster_examples_load_once_their_paths_exist(example, tmp_path):
    raw = yaml.safe_load((EXAMPLES / example).read_text())
    with pytest.raises(ConfigError, match=r"data\.root: directory not found: /datasets/coco"):
        load_config(EXAMPLES / example)  # the paths are checked, not assumed
    raw["data"]["root"] = str(write_coco_2017(tmp_path / "coco"))
    if raw["student"]["init"] != "scratch":
        (tmp_path / "student.pt").write_bytes(b"checkpoint")
        raw["student"]["init"] = str(tmp_path / "student.pt")
    copy_path = tmp_path / example
    copy_path.write_text(yaml.safe_dump(raw))
    cfg = load_config(copy_path)
    assert cfg.board.name == "imx8mp" and not cfg.board.emulate_if_missing
    assert cfg.resources.train.gpu == 1 and cfg.mlflow.tracking_uri == "http://HEAD:5000"
    assert cfg.data.val.annotations == tmp_path / "coco" / "annotations" / "instances_val2017.json"


def _cluster_example(name: str, tmp_path) -> SweepConfig:
    """A cluster example with its data set and student checkpoint made to exist under `tmp_path`."""
    raw = yaml.safe_load((EXAMPLES / name).read_text())
    raw["data"]["root"] = str(write_coco_2017(tmp_path / "coco"))
    (tmp_path / "student.pt").write_bytes(b"checkpoint")
    raw["student"]["init"] = str(tmp_path / "student.pt")
    return parse_config(raw)


def test_quantize_example_is_the_format_grid_of_one_checkpoint_without_training(tmp_path):
    cfg = _cluster_example("quantize.yaml", tmp_path)
    assert cfg.search.fixed["epochs"] == 0 and cfg.searcher.trials == cfg.search.grid_size() == 2 * 4 * 2
    assert cfg.search.base_value("student_init") == str(tmp_path / "student.pt")
    assert cfg.board.name == "imx8mp" and not cfg.board.emulate_if_missing


def test_thesis_grid_runs_each_distinct_combination_once(tmp_path):
    cfg = _cluster_example("thesis-grid.yaml", tmp_path)
    assert all(isinstance(p, Grid) for p in cfg.search.params.values())
    assert cfg.searcher.trials == cfg.search.grid_size() == (1 + 2 * 2 * 3) * 2 * 2 * 2
    points = list(cfg.search.grid_points())
    assert len({json.dumps(p, sort_keys=True) for p in points}) == len(points) == 104
    assert {format_for(p["runtime"], p["quantization"]).name for p in points} == {"onnx", "onnx-dynamic"}


# ---- every mistake names its key path and what is allowed -------------------------------------------


@pytest.mark.parametrize("data, expected", [
    (with_change("serch", {}), ["serch: unknown key (did you mean 'search'?)", "allowed keys: name, seed, output_dir"]),
    (with_change("searcher.algoritm", "tpe"),
     ["searcher.algoritm: unknown key", "allowed keys: algorithm, trials, concurrency, max_failures, seed"]),
    (with_change("board.timing.warmup", 3), ["board.timing.warmup: unknown key", "warmup_runs, min_runs"]),
    (with_change("training.epochs", 3), ["training.epochs: unknown key (epochs is a trial knob: set it under fixed: "
                                         "or search:)", "allowed keys: batch_size"]),
    (with_change("data.val_subset", -3), ["data.val_subset: must be an integer >= 1, got -3"]),
    (with_change("data.val_subset", "500"), ["data.val_subset: must be an integer >= 1, got '500' (a string)"]),
    (with_change("training.ema", "yes"), ["training.ema: must be true or false, got 'yes' (a string)"]),
    (with_change("training.lr_schedule", "step"), ["training.lr_schedule: 'step' is not a learning-rate schedule; "
                                                   "allowed: linear, cosine"]),
    (with_change("training.augment", {"scale": 2}), ["training.augment.scale: must be a number >= 0 and <= 0.9, got 2"]),
    (with_change("search.kd_method", {"choice": ["none", "output", "attn"]}),
     ["search.kd_method.choice[2]: 'attn' is not a KD method; allowed: none, output, feature, cwd, pkd"]),
    (with_change("search.kd_method", {"uniform": [0, 1]}),
     ["search.kd_method.uniform: not allowed for kd_method", "allowed: choice, grid"]),
    (with_change("search.kd_method", ["none", "output"]),
     ["search.kd_method: must be a mapping with one of choice, grid", "got ['none', 'output'] (a list)"]),
    (with_change("search.kd_factor", {"loguniform": [0, 10]}), ["search.kd_factor.loguniform[0]: must be a number > 0, "
                                                                "got 0"]),
    (with_change("search.kd_factor", {"uniform": [2, 1]}), ["search.kd_factor.uniform: needs low < high, got [2, 1]"]),
    (with_change("search.img_size", {"int": [96, 320], "step": 16}),
     ["search.img_size.step: must be a multiple of 32 so that every img_size is, got 16"]),
    (with_change("fixed.img_size", 100), ["fixed.img_size: must be a multiple of 32 that is >= 32", "got 100"]),
    (with_change("fixed.epohcs", 3), ["fixed.epohcs: unknown key (did you mean 'epochs'?)", "allowed keys: student, "
                                                                                           "student_init"]),
    (with_change("fixed.kd_method", "none"), ["fixed.kd_method: also in search; a knob is either searched or fixed"]),
    (with_change("search", {}), ["search: nothing to search", "allowed knobs: student, student_init"]),
    (with_change("search", ...), ["search: nothing to search"]),
    (with_change("searcher.algorithm", "grid"),
     ["search.kd_factor.loguniform: the grid searcher enumerates finite sets only; allowed: grid, choice"]),
    (with_change("searcher.algorithm", "bayes"),
     ["searcher.algorithm: 'bayes' is not a search algorithm; allowed: tpe, nsga2, gp, random, grid"]),
    (with_change("searcher.trials", ...), ["searcher.trials: required for algorithm tpe"]),
    (with_change("search.teacher", {"choice": ["s", "xl"]}),
     ["search.teacher.choice[1]: 'xl' is not a teacher (a key of teachers:); allowed: s"]),
    (with_change("teachers", ...), ["teachers: kd_method can be 'output' but no teacher is defined"]),
    (with_change("search.calib_method", {"choice": ["minmax", "entropy"]},
                 with_change("search.runtime", {"choice": ["onnxruntime", "tflite"]},
                             with_change("fixed.quantization", "int8"))),
     ["search.calib_method: tflite-int8 takes calib_method minmax only, but calib_method can be 'entropy'"]),
    (with_change("search.calib_images", {"choice": [16, 64]}, with_change("search.quantization", ...)),
     ["search.calib_images: only used when quantization is one of int8, int8-mixed, but quantization is always 'fp32'"]),
    (with_change("teachers.m", {"model": "m"}), ["fixed.teacher: required when several teachers are defined (s, m)"]),
    (with_change("teachers.s", {"model": "xxl"}),
     ["teachers.s.model: 'xxl' is not a model size; allowed: n, s, m, l, x"]),
    (with_change("teachers.s", {"model": "s", "checkpoint": "a.pt"}),
     ["teachers.s: give either model", "or checkpoint"]),
    (with_change("fixed.kd_off_last_epochs", 4),
     ["fixed.kd_off_last_epochs: must be < epochs", "kd_off_last_epochs can be 4 while fixed.epochs can be 4"]),
    (with_change("search.kd_method", {"choice": ["none"]}),
     ["search.kd_factor: only used when kd_method is one of output, feature, cwd, pkd", "kd_method is always 'none'"]),
    (with_change("objectives", [{"metric": "latency_ms", "mode": "max"}]),
     ["objectives[0].mode: latency_ms can only be minimized here (mode: min), got max"]),
    (with_change("objectives", [{"metric": "fps"}]),
     ["objectives[0].metric: 'fps' is not a metric; allowed: map50_95, map50, latency_ms, size_mb"]),
    (with_change("constraints.map50_95_min", 5), ["constraints.map50_95_min: must be a number > 0 and <= 1, got 5"]),
    (with_change("resources.train", {"gpu": 1.5}), ["resources.train.gpu: Ray takes fractions only below 1"]),
    (with_change("resources", {"train": {"gpu": 1}, "export": {"gpu": 0.5}}),
     ["resources.export.gpu: must be 0 when resources.train.gpu is set", "keeps its GPU for the whole sweep"]),
    (with_change("board.name", "iMX 8"), ["board.name: board name 'iMX 8' is not allowed", "lowercase letters"]),
    (with_change("board.names", ["imx8mp", "rpi4"], with_change("board.name", "imx8mp")),
     ["board: give name (one board) or names (several), not both"]),
    (with_change("board", {"names": ["imx8mp", "imx8mp"]}), ["board.names[1]: imx8mp is listed twice"]),
    (with_change("objectives", [{"metric": "latency_ms@rpi4"}], with_change("board", {"names": ["imx8mp", "jetson"]})),
     ["objectives[0].metric: 'latency_ms@rpi4' names a board the sweep does not time on",
      "per-board metrics are latency_ms@imx8mp, latency_ms@jetson"]),
    (with_change("constraints.latency_ms_max", {"rpi4": 80}, with_change("board", {"names": ["imx8mp", "jetson"]})),
     ["constraints.latency_ms_max.rpi4: not one of board.names (imx8mp, jetson)"]),
    (with_change("constraints.latency_ms_max", {"imx8mp": 80}),
     ["constraints.latency_ms_max: a mapping of board -> limit needs several board.names"]),
    (with_change("board.providers", ["CPU"]), ["board.providers[0]: 'CPU' is not an onnxruntime execution provider"]),
    (with_change("name", "my sweep"), ["name: must be 1-100 letters, digits, '.', '_' or '-'"]),
    (with_change("data.source", "voc"), ["data.source: 'voc' is not a data source; allowed: default, coco"]),
    (with_change("data.root", "/data"), ["data.root: only with data.source: coco"]),
    (with_change("data.source", "coco"), ["data.train: required with data.source: coco unless data.root is given"]),
    ([1, 2], ["the config: must be a mapping with keys name, seed"]),
])
def test_mistakes_raise_config_error_naming_key_path_and_allowed_values(data, expected):
    message = error_of(data, source="kd.yaml")
    assert message.startswith("kd.yaml: ")
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_missing_data_paths_are_named(tmp_path):
    coco = write_coco_2017(tmp_path / "coco")
    missing = tmp_path / "nowhere"
    message = error_of(with_change("data", {"source": "coco", "root": str(missing)}))
    assert f"data.root: directory not found: {missing}" in message
    (coco / "annotations" / "instances_val2017.json").unlink()
    message = error_of(with_change("data", {"source": "coco", "root": str(coco)}))
    assert f"data.root: {coco} lacks annotations/instances_val2017.json" in message
    message = error_of(with_change("data", {"source": "coco", "root": str(tmp_path)}))
    assert f"data.root: no COCO-format splits found in {tmp_path}; expected one of these layouts" in message
    explicit = {"source": "coco", "train": {"images": str(coco / "train2017"),
                                            "annotations": str(coco / "annotations" / "instances_train2017.json")},
                "val": {"images": str(coco / "val2017"), "annotations": str(coco / "annotations" / "missing.json")}}
    message = error_of(with_change("data", explicit))
    assert f"data.val.annotations: file not found: {coco / 'annotations' / 'missing.json'}" in message
    message = error_of(with_change("student.init", "weights/best.pt"), base_dir=tmp_path)
    assert f"student.init: file not found: {tmp_path / 'weights' / 'best.pt'}" in message


def test_malformed_yaml_reports_file_line_and_column(tmp_path):
    path = tmp_path / "kd.yaml"
    path.write_text("name: t\nsearch:\n  kd_method: {choice: [none, output]\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=rf"^{path}:4:\d+: malformed YAML: .*expected ',' or '}}'"):
        load_config(path)


def test_duplicate_yaml_keys_are_refused_with_both_lines(tmp_path):
    path = tmp_path / "kd.yaml"
    path.write_text("name: t\nfixed:\n  epochs: 3\n  epochs: 30\n")
    with pytest.raises(ConfigError, match=rf"^{path}:4:3: malformed YAML: duplicate key 'epochs' \(first at line 3\)"):
        load_config(path)


def test_empty_and_missing_files_are_config_errors(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match=r"empty.yaml: the file is empty; expected a mapping with keys name"):
        load_config(empty)
    with pytest.raises(ConfigError, match=r"nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


# ---- semantics ------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_file_directory(tmp_path, monkeypatch):
    project = tmp_path / "project"
    write_coco_2017(project / "data" / "coco")
    (project / "ckpt").mkdir()
    (project / "ckpt" / "teacher.pt").write_bytes(b"x")
    config = {**base_config(), "data": {"source": "coco", "root": "data/coco"},
              "teachers": {"big": {"checkpoint": "ckpt/teacher.pt"}}}
    (project / "kd.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)  # somewhere else
    cfg = load_config(Path("project/kd.yaml"))
    assert cfg.data.root == project / "data" / "coco"
    assert cfg.teachers["big"].checkpoint == project / "ckpt" / "teacher.pt"
    assert cfg.output_dir == project / "runs" / "sweeps" and cfg.sweep_dir == project / "runs" / "sweeps" / "t"
    assert cfg.search.defaults["teacher"] == "big"  # the only teacher is the default


def test_to_dict_is_plain_and_parses_back_to_the_same_config(tmp_path):
    coco = write_coco_2017(tmp_path / "coco")
    data = with_change("data", {"source": "coco", "root": str(coco), "val_subset": 2})
    data["constraints"] = {"latency_ms_max": 50}
    data["board"] = {"name": "imx8mp", "delegate": "/usr/lib/libvx_delegate.so",
                     "delegate_options": {"cache": True, "level": 2}}
    cfg = parse_config(data)
    plain = cfg.to_dict()
    assert yaml.safe_load(yaml.safe_dump(plain)) == plain  # only plain values
    assert parse_config(plain) == cfg
    assert plain["board"]["delegate_options"] == {"cache": "true", "level": "2"}


def test_several_boards_give_a_latency_per_board_that_objectives_and_constraints_can_name():
    data = with_change("board", {"names": ["imx8mp", "rpi4"]})
    data["objectives"] = [{"metric": "map50_95"}, {"metric": "latency_ms@rpi4"}]
    data["constraints"] = {"latency_ms_max": {"imx8mp": 50, "rpi4": 80}}
    cfg = parse_config(data)
    assert cfg.board.name == "imx8mp" and cfg.board.latency_keys == ("latency_ms@imx8mp", "latency_ms@rpi4")
    assert [o.metric for o in cfg.objectives] == ["map50_95", "latency_ms@rpi4"]
    assert violations(cfg.constraints, {"latency_ms@imx8mp": 40, "latency_ms@rpi4": 90}) == {
        "latency_ms_max.imx8mp": -10, "latency_ms_max.rpi4": 10}
    assert parse_config(cfg.to_dict()) == cfg
    assert parse_config(with_change("board", {"name": "imx8mp"})).board.latency_keys == ()  # one board: latency_ms


def test_grid_choices_are_sampled_as_categorical_by_optuna_searchers_and_enumerated_by_grid():
    data = with_change("search", {"kd_method": {"grid": ["none", "output"]},
                                  "quantization": {"choice": ["fp32", "int8"]}})
    assert parse_config(data).search.params["kd_method"] == Choice(("none", "output"))
    grid = parse_config(with_change("searcher", {"algorithm": "grid"}, data))
    assert grid.search.params["quantization"] == Grid(("fp32", "int8")) and grid.searcher.trials == 4
    message = error_of(with_change("searcher", {"algorithm": "grid", "trials": 5}, data))
    assert "searcher.trials: the grid has 4 distinct trials; omit trials or set it to 4, got 5" in message


def test_constraint_values_follow_optunas_feasible_at_or_below_zero():
    from orchestrator.pareto import violations

    constraints = ConstraintsConfig(latency_ms_max=50.0, map50_95_min=0.3, size_mb_max=4.0)
    values = violations(constraints, {"latency_ms": 40.0, "map50_95": 0.25, "size_mb": 4.0})
    assert values == pytest.approx({"latency_ms_max": -10.0, "map50_95_min": 0.05, "size_mb_max": 0.0})
    assert violations(ConstraintsConfig(), {}) == {}
    with pytest.raises(ValueError, match="latency_ms_max needs the metric latency_ms"):
        violations(constraints, {"map50_95": 0.5})


def test_coco_splits_load_as_real_datasets(tmp_path):
    from detection.coco import CocoDataset

    coco = write_coco_2017(tmp_path / "coco", images_per_split=4)
    cfg = parse_config(with_change("data", {"source": "coco", "root": str(coco), "train_subset": 3,
                                            "bad_images": "fail"}), base_dir=tmp_path)
    splits = data_splits(cfg.data, seed=cfg.seed)
    train, val = CocoDataset(splits.train), CocoDataset(splits.val)
    assert len(train) == 3 and len(val) == 4 and splits.train.bad_images == "fail"


def test_default_source_generates_and_splits_the_synthetic_set(tmp_path, monkeypatch):
    from detection.coco import CocoDataset

    monkeypatch.setenv("EDGESWEEP_CACHE", str(tmp_path / "cache"))
    cfg = parse_config(with_change("data", {"synth": {"train": 4, "val": 2, "size": 64, "seed": 1}, "val_subset": 1}))
    splits = data_splits(cfg.data, seed=0)
    assert splits.train.annotations.is_relative_to(tmp_path / "cache")
    assert len(CocoDataset(splits.train)) == 4 and len(CocoDataset(splits.val)) == 1


# ---- the config stays in step with the code it configures -------------------------------------------


def test_cli_train_defaults_are_the_sweep_knobs_defaults():
    from orchestrator.cli import build_parser

    args = build_parser().parse_args(["train"])
    cfg = parse_config(base_config())
    defaults = cfg.search.defaults
    assert (args.model, args.epochs, args.img_size, args.seed, args.kd, args.kd_factor, args.kd_off_last) == (
        defaults["student"], defaults["epochs"], defaults["img_size"], defaults["seed"], defaults["kd_method"],
        defaults["kd_factor"], defaults["kd_off_last_epochs"])
    assert (args.batch_size, args.lr_schedule, args.workers) == (cfg.training.batch_size, cfg.training.lr_schedule,
                                                                 cfg.training.workers)
    assert parse_config(with_change("teachers.s", {"model": "s"})).teachers["s"].epochs == args.teacher_epochs


def test_training_section_builds_the_trainer_config():
    from trainables.hyper import TrainConfig

    cfg = parse_config(with_change("training", {"batch_size": 8, "lr_schedule": "cosine", "loss": {"obj": 0.7},
                                                "augment": {"fliplr": 0.0}}))
    train = TrainConfig.from_settings(cfg.training, device="cpu", torch_threads=1)
    assert (train.batch_size, train.lr_schedule, train.device, train.torch_threads) == (8, "cosine", "cpu", 1)
    assert train.loss.obj == 0.7 and train.augment.fliplr == 0.0 and train.nominal_batch == 16


def test_board_section_builds_runtime_options_and_timing_protocol():
    cfg = load_config(EXAMPLES / "kd.yaml")
    options = cfg.board.runtime_options(threads=2)
    assert options.threads == 2 and options.providers == ("CPUExecutionProvider",) and options.delegate is None
    assert (cfg.board.timing.warmup_runs, cfg.board.timing.min_runs, cfg.board.timing.min_seconds) == (5, 30, 1.0)


def test_validation_imports_neither_torch_nor_ray():
    code = ("import sys; from pathlib import Path; from orchestrator.config import load_config; "
            "load_config(Path('examples/kd.yaml')); print(','.join(m for m in ('torch', 'ray', 'optuna') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == ""


def test_byo_example_reads_a_yolo_data_yaml_and_imported_checkpoints_once_they_exist(tmp_path):
    raw = yaml.safe_load((EXAMPLES / "byo.yaml").read_text())
    with pytest.raises(ConfigError, match=r"data\.root: .*/datasets/parts/data\.yaml"):
        load_config(EXAMPLES / "byo.yaml")  # the paths are checked, not assumed
    for split in ("train", "val"):
        (tmp_path / "parts" / "images" / split).mkdir(parents=True)
    (tmp_path / "parts" / "data.yaml").write_text(yaml.safe_dump(
        {"path": ".", "train": "images/train", "val": "images/val", "names": {0: "bolt", 1: "nut"}}))
    raw["data"]["root"] = str(tmp_path / "parts" / "data.yaml")
    for name in ("yolov5n-parts.pt", "yolov5s-parts.pt"):
        (tmp_path / name).write_bytes(b"checkpoint")
    raw["student"]["init"] = str(tmp_path / "yolov5n-parts.pt")
    raw["teachers"]["s"]["checkpoint"] = str(tmp_path / "yolov5s-parts.pt")
    cfg = parse_config(raw)
    assert cfg.data.source == "yolo" and cfg.teachers["s"].checkpoint == tmp_path / "yolov5s-parts.pt"
    assert cfg.search.base_value("student_init") == str(tmp_path / "yolov5n-parts.pt")
    assert cfg.constraints.map50_95_min == 0.25 and cfg.board.name == "imx8mp"


@pytest.mark.parametrize("data, expected", [
    # a key that happens to equal a union member's tag ("coco") is still part of the path
    (with_change("teachers", {"coco": {"model": "s", "epochs": 0}}, with_change("fixed.teacher", "coco")),
     "teachers.coco.epochs: must be an integer >= 1, got 0"),
    # of a union's members, the one that takes the value's type says what is wrong
    (with_change("constraints.latency_ms_max", {"imx8mp": -1}, with_change("board", {"names": ["imx8mp", "rpi4"]})),
     "constraints.latency_ms_max.imx8mp: must be a number > 0, got -1"),
])
def test_union_members_never_leak_into_the_key_path(data, expected):
    assert expected in error_of(data)
