"""How each registered format's file is built (`trainables.export.registry` names these functions).

Quantized variants start from a float file (ONNX or TFLite) that several of them share, so
`Intermediates` makes each float file and the calibration set at most once per export run. The
run's `ArtifactShape` (the NPU knobs) shapes the graph as each format reads it: a format that does
not read `int8_io` gets the NCHW graph, so one run may hold two float TFLite files.
"""
from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trainables.export.artifact import ExportError
from trainables.export.calibration import calibration_images, provenance
from trainables.export.graph import ExportGraph
from trainables.export.onnx_export import export_onnx
from trainables.export.onnx_quant import convert_onnx_fp16, quantize_onnx_dynamic, quantize_onnx_static
from trainables.export.registry import ArtifactFormat, ArtifactShape, ExportKnobs
from trainables.export.tflite import convert_tflite, quantize_tflite

if TYPE_CHECKING:
    from detection.coco import CocoDataset

Accuracy = Callable[[bytes], float]  # an ONNX file's mAP@.5:.95 on the accuracy-control images


class Intermediates:
    """Float models and calibration images shared by the formats of one export run, made on first use."""

    def __init__(self, graph: ExportGraph | None, work_dir: Path, *, calibration: "CocoDataset | None",
                 calib_images: int, calib_method: str, calib_seed: int = 0, img_size: int | None = None,
                 given_onnx: tuple[Path, dict] | None = None, shape: ArtifactShape = ArtifactShape(),
                 qat_epochs: int = 1, max_map_drop: float = ExportKnobs.max_map_drop, accuracy: "Accuracy | None" = None):
        """From our model's `graph`, or (graph None) from a user's float ONNX file `given_onnx`
        (path, settings) of input side `img_size`, which only formats built from a float ONNX can start from.
        `qat_epochs` is QAT's length; `max_map_drop` int8-mixed's bound, measured by `accuracy` (an ONNX
        file's mAP@.5:.95 on training images, given by the caller: scoring runs the board's code)."""
        if graph is None and shape != ArtifactShape():
            raise ExportError(f"a user's ONNX model is exported as it is: its decode stays in its graph, with its "
                              f"NCHW input and its one output; got {shape.settings()}")
        self.graph = graph
        self.shape = shape
        self.img_size = graph.img_size if graph is not None else img_size
        self.work_dir = Path(work_dir)
        self.calib_method = calib_method
        self._calibration_data = calibration
        self._calib_images = calib_images
        self._calib_seed = calib_seed
        self.qat_epochs = qat_epochs
        self.max_map_drop = max_map_drop
        self.accuracy = accuracy
        # float files by (kind, graph shape) and the calibration images: shared by every format's view
        self._made: dict = {} if given_onnx is None else {self._key("onnx"): given_onnx}

    def for_format(self, fmt: ArtifactFormat) -> Intermediates:
        """This run's intermediates as `fmt` sees them: the shape it reads (`ArtifactShape.for_format`),
        the float files and calibration images shared with the run."""
        view = copy.copy(self)
        view.shape = self.shape.for_format(fmt)
        if view.graph is not None and view.shape != self.graph.shape:
            view.graph = ExportGraph(self.graph.detector, self.img_size, view.shape)
        return view

    def _key(self, kind: str) -> tuple:
        return kind, self.shape.nhwc, self.shape.decode, self.shape.outputs

    def float_onnx(self) -> tuple[Path, dict]:
        key = self._key("onnx")
        if key not in self._made:
            path = self.work_dir / f"float32-{len(self._made)}.onnx"
            self._made[key] = (path, export_onnx(self.graph, path))
        return self._made[key]

    def float_tflite(self) -> tuple[Path, dict]:
        if self.graph is None:
            raise ExportError("a user's ONNX model has no float TFLite: it only becomes formats built from a float ONNX")
        key = self._key("tflite")
        if key not in self._made:
            path = self.work_dir / f"float32-{len(self._made)}.tflite"
            self._made[key] = (path, convert_tflite(self.graph, path))
        return self._made[key]

    def qat_model(self):
        """The student fine-tuned with fake quantization (`trainables.export.qat`), once per shape."""
        from trainables.export.qat import fine_tune

        if self.graph is None:
            raise ExportError("a user's ONNX model cannot be quantization-aware trained: QAT needs our checkpoint")
        if self._calibration_data is None:
            raise ExportError("QAT needs the training split: pass it as `calibration`")
        key = ("qat", self.shape)
        if key not in self._made:
            self._made[key] = fine_tune(copy.deepcopy(self.graph.detector), self._calibration_data,
                                        img_size=self.img_size, epochs=self.qat_epochs, shape=self.shape,
                                        seed=self._calib_seed)
        return self._made[key]

    def calibration_images(self) -> list[np.ndarray]:
        if self._calibration_data is None:
            raise ExportError("this format needs calibration images: pass a training split as `calibration`")
        if "images" not in self._made:
            self._made["images"] = calibration_images(self._calibration_data, count=self._calib_images,
                                                      img_size=self.img_size, seed=self._calib_seed)
        return self._made["images"]

    def calibration_provenance(self) -> dict:
        return provenance(self._calibration_data, self._calib_images, self._calib_seed)


def _copy(source: tuple[Path, dict], path: Path) -> dict:
    shutil.copyfile(source[0], path)
    return source[1]


def onnx_fp32(ctx: Intermediates, path: Path) -> dict:
    return _copy(ctx.float_onnx(), path)


def onnx_fp16(ctx: Intermediates, path: Path) -> dict:
    src, base = ctx.float_onnx()
    return {**base, **convert_onnx_fp16(src, path, float_tail=ctx.graph is None,
                                        decode_in_graph=ctx.shape.decode == "graph")}


def onnx_dynamic(ctx: Intermediates, path: Path) -> dict:
    src, base = ctx.float_onnx()
    return {**base, **quantize_onnx_dynamic(src, path)}


def onnx_int8(ctx: Intermediates, path: Path) -> dict:
    src, base = ctx.float_onnx()
    made = quantize_onnx_static(src, path, ctx.calibration_images(), calib_method=ctx.calib_method,
                                per_channel=ctx.shape.per_channel, float_tail=ctx.graph is None,
                                decode_in_graph=ctx.shape.decode == "graph")  # a user's model: its tail after the last Convs
    return {**base, **made, **ctx.calibration_provenance()}


def tflite_fp32(ctx: Intermediates, path: Path) -> dict:
    return _copy(ctx.float_tflite(), path)


def tflite_fp16(ctx: Intermediates, path: Path) -> dict:
    src, base = ctx.float_tflite()
    return {**base, **quantize_tflite(src, path, mode="fp16")}


def tflite_dynamic(ctx: Intermediates, path: Path) -> dict:
    src, base = ctx.float_tflite()
    return {**base, **quantize_tflite(src, path, mode="dynamic")}


def tflite_int8(ctx: Intermediates, path: Path) -> dict:
    src, base = ctx.float_tflite()
    made = quantize_tflite(src, path, mode="int8", calibration=ctx.calibration_images(), shape=ctx.shape)
    return {**base, **made, **ctx.calibration_provenance()}


def onnx_int8_mixed(ctx: Intermediates, path: Path) -> dict:
    from trainables.export.mixed import quantize_onnx_mixed

    if ctx.accuracy is None:
        raise ExportError("int8-mixed needs an accuracy function (an ONNX file's mAP on training images) to "
                          "measure its drop")
    src, base = ctx.float_onnx()
    made = quantize_onnx_mixed(src, path, ctx.calibration_images(), accuracy=ctx.accuracy,
                               max_map_drop=ctx.max_map_drop, calib_method=ctx.calib_method,
                               per_channel=ctx.shape.per_channel, decode_in_graph=ctx.shape.decode == "graph")
    return {**base, **made, **ctx.calibration_provenance()}


def onnx_qat(ctx: Intermediates, path: Path) -> dict:
    from trainables.export.qat import export_qat_onnx

    return export_qat_onnx(ctx.qat_model(), path)


def tflite_qat(ctx: Intermediates, path: Path) -> dict:
    from trainables.export.qat import export_qat_tflite

    return export_qat_tflite(ctx.qat_model(), path)
