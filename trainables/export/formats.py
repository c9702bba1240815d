"""How each registered format's file is built (`trainables.export.registry` names these functions).

Quantized variants start from a float file (ONNX or TFLite) that several of them share, so
`Intermediates` makes each float file and the calibration set at most once per export run.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trainables.export.artifact import ExportError
from trainables.export.calibration import calibration_images, provenance
from trainables.export.graph import ExportGraph
from trainables.export.onnx_export import export_onnx
from trainables.export.onnx_quant import convert_onnx_fp16, quantize_onnx_dynamic, quantize_onnx_static
from trainables.export.tflite import convert_tflite, quantize_tflite

if TYPE_CHECKING:
    from detection.coco import CocoDataset


class Intermediates:
    """Float models and calibration images shared by the formats of one export run, made on first use."""

    def __init__(self, graph: ExportGraph | None, work_dir: Path, *, calibration: "CocoDataset | None",
                 calib_images: int, calib_method: str, calib_seed: int = 0, img_size: int | None = None,
                 given_onnx: tuple[Path, dict] | None = None):
        """From our model's `graph`, or (graph None) from a user's float ONNX file `given_onnx`
        (path, settings) of input side `img_size`, which only formats built from a float ONNX can start from."""
        self.graph = graph
        self.img_size = graph.img_size if graph is not None else img_size
        self.work_dir = Path(work_dir)
        self.calib_method = calib_method
        self._calibration_data = calibration
        self._calib_images = calib_images
        self._calib_seed = calib_seed
        self._onnx: tuple[Path, dict] | None = given_onnx
        self._tflite: tuple[Path, dict] | None = None
        self._images: list[np.ndarray] | None = None

    def float_onnx(self) -> tuple[Path, dict]:
        if self._onnx is None:
            path = self.work_dir / "float32.onnx"
            self._onnx = (path, export_onnx(self.graph, path))
        return self._onnx

    def float_tflite(self) -> tuple[Path, dict]:
        if self.graph is None:
            raise ExportError("a user's ONNX model has no float TFLite: it only becomes formats built from a float ONNX")
        if self._tflite is None:
            path = self.work_dir / "float32.tflite"
            self._tflite = (path, convert_tflite(self.graph, path))
        return self._tflite

    def calibration_images(self) -> list[np.ndarray]:
        if self._calibration_data is None:
            raise ExportError("this format needs calibration images: pass a training split as `calibration`")
        if self._images is None:
            self._images = calibration_images(self._calibration_data, count=self._calib_images,
                                              img_size=self.img_size, seed=self._calib_seed)
        return self._images

    def calibration_provenance(self) -> dict:
        return provenance(self._calibration_data, self._calib_images, self._calib_seed)


def _copy(source: tuple[Path, dict], path: Path) -> dict:
    shutil.copyfile(source[0], path)
    return source[1]


def onnx_fp32(ctx: Intermediates, path: Path) -> dict:
    return _copy(ctx.float_onnx(), path)


def onnx_fp16(ctx: Intermediates, path: Path) -> dict:
    src, base = ctx.float_onnx()
    return {**base, **convert_onnx_fp16(src, path, float_tail=ctx.graph is None)}


def onnx_dynamic(ctx: Intermediates, path: Path) -> dict:
    src, base = ctx.float_onnx()
    return {**base, **quantize_onnx_dynamic(src, path)}


def onnx_int8(ctx: Intermediates, path: Path) -> dict:
    src, base = ctx.float_onnx()
    made = quantize_onnx_static(src, path, ctx.calibration_images(), calib_method=ctx.calib_method,
                                float_tail=ctx.graph is None)  # a user's model: its tail after the last Convs
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
    made = quantize_tflite(src, path, mode="int8", calibration=ctx.calibration_images())
    return {**base, **made, **ctx.calibration_provenance()}
