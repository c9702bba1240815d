"""A user's own ONNX detector as a sweep's model: checked against a declared output layout and
brought to the artifact contract every runtime and scorer here reads, (1, N, 5+C): cx, cy, w, h in
input pixels, objectness, class probabilities (what YOLOv5's own ONNX export writes).

Layouts: `yolov5` (1, N, 5+C), taken as it is; `yolov8` (1, 4+C, N) without objectness, to which
a Transpose, a Slice pair and a Concat with a constant objectness of 1 are appended, so its class
score is its confidence (its timed graph carries those three cheap ops). The input must be a fixed
square (1, 3, S, S) image in [0, 1], letterboxed as YOLOv5 and YOLOv8 do. onnx only, no torch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.external_data_helper import uses_external_data

from detection.outputs import METADATA_KEY
from trainables.export.artifact import ExportError

LAYOUTS = ("yolov5", "yolov8")
OUTPUT = "predictions"


def _dims(value_info) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in value_info.type.tensor_type.shape.dim]


def _fixed_square(shape: list) -> bool:
    """(1 or a symbolic batch, 3, S, S) with S fixed."""
    return (len(shape) == 4 and (shape[0] == 1 or isinstance(shape[0], str)) and shape[1] == 3
            and isinstance(shape[2], int) and shape[2] > 0 and shape[2] == shape[3])


def check_onnx_model(path: Path, *, layout: str, num_classes: int) -> int:
    """The file's input side S; raises ExportError naming the file and what was expected."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ONNX model not found: {path}")
    if layout not in LAYOUTS:
        raise ExportError(f"{path}: onnx_layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - any parse failure means "not an ONNX model"
        raise ExportError(f"{path} is not a readable ONNX model: {e}") from e
    external = [t for t in model.graph.initializer if uses_external_data(t)]
    if external:
        files = sorted({e.value for t in external for e in t.external_data if e.key == "location"})
        raise ExportError(f"{path}: {len(external)} of its weights are in external data ({', '.join(files)}), but a "
                          f"trial ships the model as one file; save it self-contained: onnx.save(onnx.load(path), "
                          f"new_path) (models under 2 GB)")
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1 or not _fixed_square(_dims(inputs[0])):
        got = ", ".join(f"{i.name} {tuple(_dims(i))}" for i in inputs) or "none"
        raise ExportError(f"{path}: inputs {got}; expected one fixed square image input (1, 3, S, S) "
                          f"(re-export it with a fixed image size)")
    side = int(_dims(inputs[0])[2])
    out = _dims(model.graph.output[0]) if model.graph.output else []
    c = num_classes
    fits = {"yolov5": len(out) == 3 and out[2] == 5 + c and isinstance(out[1], int) and out[1] > 0,
            "yolov8": len(out) == 3 and out[1] == 4 + c and isinstance(out[2], int) and out[2] > 0}
    if not fits[layout]:
        hint = next((f"; it fits {other}: set onnx_layout: {other}" for other in LAYOUTS if fits[other]), "")
        raise ExportError(f"{path}: output {tuple(out)} fits neither layout for the data's {c} classes as "
                          f"onnx_layout {layout}: yolov5 is (1, N, {5 + c}) (box, objectness, classes), yolov8 is "
                          f"(1, {4 + c}, N) (box, classes){hint}")
    return side


def normalised_onnx(src: Path, dst: Path, *, layout: str, num_classes: int) -> tuple[int, dict]:
    """Write `src` as an artifact-contract ONNX at `dst`; returns (input side, export settings)."""
    side = check_onnx_model(src, layout=layout, num_classes=num_classes)
    model = onnx.load(str(src))
    for i, node in enumerate(model.graph.node):  # quantizers keep nodes float by name
        node.name = node.name or f"edgesweep/unnamed{i}"
    if layout == "yolov8":
        graph = model.graph
        raw = graph.output[0].name
        taken = {t for node in graph.node for t in node.output}
        output = OUTPUT if OUTPUT not in taken else f"edgesweep_{OUTPUT}"
        rows = _dims(graph.output[0])[2]
        const = lambda name, array: graph.initializer.append(numpy_helper.from_array(array, name))  # noqa: E731
        const("es_zero", np.array([0], np.int64))
        const("es_four", np.array([4], np.int64))
        const("es_end", np.array([4 + num_classes], np.int64))
        const("es_axis", np.array([2], np.int64))
        const("es_objectness", np.ones((1, rows, 1), np.float32))
        graph.node.extend([
            helper.make_node("Transpose", [raw], ["es_rows"], perm=[0, 2, 1], name="edgesweep/transpose"),
            helper.make_node("Slice", ["es_rows", "es_zero", "es_four", "es_axis"], ["es_box"],
                             name="edgesweep/box"),
            helper.make_node("Slice", ["es_rows", "es_four", "es_end", "es_axis"], ["es_classes"],
                             name="edgesweep/classes"),
            helper.make_node("Concat", ["es_box", "es_objectness", "es_classes"], [output], axis=2,
                             name="edgesweep/objectness"),
        ])
        del graph.output[:]
        graph.output.append(helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT,
                                                          [1, rows, 5 + num_classes]))
        # what the file said of its old outputs no longer holds: without it, its one output reads as joined
        kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
        onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return side, {"source_model": Path(src).name, "onnx_layout": layout}
