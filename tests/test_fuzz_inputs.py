"""Property-based fuzzing (Hypothesis) of everything a user hands a sweep: COCO json, YOLO label files,
`data.yaml` and the sweep YAML. Each case writes real files and runs the real readers and config check
(and, for sweep files, the real `sweep` command up to the point where Ray would start): a case either
passes or ends in the project's user-facing error (`UserError`, exit 2). Any other exception is a
traceback a user would see, and fails the test with the input that caused it.

The default suite runs a few hundred cases with a fixed seed (`derandomize`); the slow step runs
thousands with fresh ones.
"""
from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from common.errors import UserError
from detection.coco import CocoDataset, SplitSpec
from detection.yolo_format import read_data_yaml
from orchestrator.config import load_config

QUICK = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
THOROUGH = settings(QUICK, max_examples=800, derandomize=False)

# ---- values a hostile or broken file may hold -----------------------------------------------------

SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.integers(min_value=-10**400, max_value=10**400),  # JSON has no integer limit
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0, -1, 0.5, 1e308, -0.0]),
    st.text(max_size=20), st.sampled_from(["", "a.png", "../x.png", "/etc/passwd", "a\x00b", "1", "nan", "ü.png"]))
JSON_DEEP, YAML_DEEP = 1000, 600  # nesting that exceeds Python's recursion limit in json.load and yaml.safe_load
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=12)


def json_text(value: object) -> str:
    return json.dumps(value, allow_nan=True)  # NaN and Infinity as Python's json writes and reads them


@st.composite
def text_damage(draw, text: str, deep: int) -> str:
    """`text` as it is, cut short, with a line dropped or repeated, or nested `deep` levels (past what the
    parser's recursion allows)."""
    kind = draw(st.sampled_from(["whole", "cut", "drop_line", "repeat_line", "nest", "junk"]))
    lines = text.splitlines(keepends=True)
    if kind == "cut":
        return text[:draw(st.integers(0, max(len(text) - 1, 0)))]
    if kind in ("drop_line", "repeat_line") and lines:
        i = draw(st.integers(0, len(lines) - 1))
        return "".join(lines[:i] + (lines[i:i + 1] * 2 if kind == "repeat_line" else []) + lines[i + 1:])
    if kind == "nest":
        depth = draw(st.sampled_from([10, deep]))
        return "[" * depth + "]" * depth
    if kind == "junk":
        return text + draw(st.text(max_size=30))
    return text


# ---- COCO json --------------------------------------------------------------------------------------

VALID_COCO = {
    "images": [{"id": 1, "file_name": "a.png", "height": 32, "width": 32},
               {"id": 2, "file_name": "b.png", "height": 32, "width": 32}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
                    {"id": 2, "image_id": 2, "category_id": 2, "bbox": [2.5, 3, 10, 4], "iscrowd": 0, "area": 40}],
    "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "disc"}],
}


@st.composite
def mutated_tree(draw, tree: object, max_edits: int = 3) -> object:
    """`tree` with up to a few edits at random places: a value replaced, a key removed or added, an entry
    dropped or duplicated."""
    tree = copy.deepcopy(tree)
    for _ in range(draw(st.integers(0, max_edits))):  # 0: the valid file itself, now and then
        node, parent, key = tree, None, None
        while isinstance(node, (dict, list)) and node and draw(st.booleans()):
            parent = node
            key = draw(st.sampled_from(sorted(node, key=str) if isinstance(node, dict) else range(len(node))))
            node = node[key]
        action = draw(st.sampled_from(["replace", "remove", "add", "duplicate"]))
        if parent is None:
            if action == "replace":
                tree = draw(JSON_VALUES)
            continue
        if action == "replace":
            parent[key] = draw(JSON_VALUES)
        elif action == "remove":
            del parent[key]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(JSON_VALUES)
        elif isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
    return tree


@st.composite
def coco_files(draw) -> str:
    return draw(text_damage(json_text(draw(mutated_tree(VALID_COCO))), deep=JSON_DEEP))


@pytest.fixture(scope="module")
def workdir():
    root = Path(tempfile.mkdtemp(prefix="edgesweep-fuzz-"))
    (root / "coco").mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (32, 32), (40, 80, 120)).save(root / "coco" / name)
    for split in ("images/train", "labels/train"):
        (root / "yolo" / split).mkdir(parents=True)
    for name in ("a", "b"):
        Image.new("RGB", (40, 30)).save(root / "yolo" / "images" / "train" / f"{name}.png")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def read_or_refuse(read) -> None:
    """The property: a reader returns, or raises the project's user-facing error."""
    try:
        read()
        event("read")
    except UserError as e:
        event(f"refused: {type(e).__name__}")


def check_coco(workdir: Path, text: str) -> None:
    path = workdir / "instances.json"
    path.write_text(text)
    read_or_refuse(lambda: CocoDataset(SplitSpec(workdir / "coco", path, bad_images="fail")))


@settings(QUICK, max_examples=120)  # milliseconds each
@given(text=coco_files())
def test_a_mutated_coco_file_is_read_or_refused(workdir, text):
    check_coco(workdir, text)


@pytest.mark.slow
@settings(THOROUGH, max_examples=2000)
@given(text=coco_files())
def test_thousands_of_mutated_coco_files_are_read_or_refused(workdir, text):
    check_coco(workdir, text)


# ---- YOLO labels and data.yaml ----------------------------------------------------------------------

NUMBER_TOKENS = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers().map(str),
                          st.sampled_from(["nan", "inf", "-inf", "1e400", "0x10", "1_0", "", "½", "0.5"]))
LABEL_LINES = st.lists(st.one_of(st.lists(NUMBER_TOKENS, min_size=4, max_size=6).map(" ".join), st.text(max_size=20)),
                       max_size=5).map("\n".join)
LABEL_BYTES = st.one_of(LABEL_LINES.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=40))
VALID_DATA_YAML = {"path": ".", "train": "images/train", "val": "images/train", "names": {0: "box", 1: "disc"}}


@st.composite
def data_yaml_files(draw) -> str:
    tree = draw(mutated_tree(VALID_DATA_YAML, max_edits=2)) if draw(st.booleans()) else VALID_DATA_YAML
    return draw(text_damage(yaml.safe_dump(tree, allow_unicode=True), deep=YAML_DEEP))


def check_yolo(workdir: Path, labels: list[bytes], data_yaml: str, bad_images: str) -> None:
    root = workdir / "yolo"
    for name, content in zip(("a", "b"), labels):
        (root / "labels" / "train" / f"{name}.txt").write_bytes(content)
    (root / "data.yaml").write_text(data_yaml, encoding="utf-8", errors="surrogateescape")
    read_or_refuse(lambda: read_data_yaml(root / "data.yaml"))
    read_or_refuse(lambda: CocoDataset(SplitSpec(root / "images" / "train", root / "data.yaml", bad_images=bad_images)))


YOLO_CASES = dict(labels=st.lists(LABEL_BYTES, min_size=2, max_size=2), data_yaml=data_yaml_files(),
                  bad_images=st.sampled_from(["skip", "fail"]))


@QUICK
@given(**YOLO_CASES)
def test_mutated_yolo_labels_and_data_yaml_are_read_or_refused(workdir, labels, data_yaml, bad_images):
    check_yolo(workdir, labels, data_yaml, bad_images)


@pytest.mark.slow
@THOROUGH
@given(**YOLO_CASES)
def test_thousands_of_mutated_yolo_sets_are_read_or_refused(workdir, labels, data_yaml, bad_images):
    check_yolo(workdir, labels, data_yaml, bad_images)


# ---- the sweep YAML ---------------------------------------------------------------------------------

VALID_SWEEP = {
    "name": "fuzz", "seed": 0, "output_dir": "runs",
    "data": {"source": "coco", "train": {"images": "coco", "annotations": "instances.json"},
             "val": {"images": "coco", "annotations": "instances.json"}, "calibration_images": 2},
    "student": {"model": "n"}, "teachers": {"t": {"model": "s", "epochs": 1}},
    "search": {"kd_method": {"choice": ["none", "output"]}, "kd_factor": {"loguniform": [0.25, 4.0]},
               "quantization": {"choice": ["fp32", "int8"]}},
    "fixed": {"epochs": 1, "img_size": 64, "teacher": "t", "runtime": "onnxruntime"},
    "searcher": {"algorithm": "tpe", "trials": 2, "storage": None},
    "board": {"name": "local", "timing": {"warmup_runs": 2, "min_runs": 5}},
    "mlflow": {"experiment": "fuzz"},
}


@st.composite
def sweep_files(draw) -> str:
    return draw(text_damage(yaml.safe_dump(draw(mutated_tree(VALID_SWEEP)), allow_unicode=True), deep=YAML_DEEP))


def check_sweep_file(workdir: Path, text: str) -> None:
    (workdir / "instances.json").write_text(json_text(VALID_COCO))
    path = workdir / "kd.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    read_or_refuse(lambda: load_config(path))


@QUICK
@given(text=sweep_files())
def test_a_mutated_sweep_file_is_checked_or_refused(workdir, text):
    check_sweep_file(workdir, text)


@pytest.mark.slow
@THOROUGH
@given(text=sweep_files())
def test_thousands_of_mutated_sweep_files_are_checked_or_refused(workdir, text):
    check_sweep_file(workdir, text)


# ---- the sweep command, as a user runs it ---------------------------------------------------------


class ChecksPassed(Exception):
    """The sweep passed every check and would now take its directory: the case is accepted."""


@settings(QUICK, max_examples=15)
@given(text=sweep_files())
def test_the_sweep_command_on_a_mutated_file_exits_2_with_one_message_or_passes_its_checks(workdir, text, monkeypatch,
                                                                                           capsys):
    from orchestrator.cli import main
    from orchestrator.sweep_state import SweepLock

    def passed(*args, **kwargs):
        raise ChecksPassed

    monkeypatch.setattr(SweepLock, "acquire", passed)  # the first step after the checks: nothing is created
    (workdir / "instances.json").write_text(json_text(VALID_COCO))
    path = workdir / "kd.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    capsys.readouterr()  # this case's output only
    try:
        code = main(["sweep", str(path)])
    except ChecksPassed:
        event("passed every check")
        return
    event("exit 2")
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and [line for line in err.splitlines() if line.startswith("error: ")]
