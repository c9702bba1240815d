"""The registry of export formats: name -> how to build the file and which runtime loads it.

Quantized variants start from a float file (ONNX or TFLite) that several of them share, so
`Intermediates` makes each float file and the calibration set at most once per export run.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trainables.export.artifact import ExportError
from trainables.export.calibration import calibration_images, provenance
from trainables.export.graph import ExportGraph
from trainables.export.onnx_export import export_onnx
from trainables.export.onnx_quant import (CALIB_METHODS, convert_onnx_fp16, quantize_onnx_dynamic,
                                          quantize_onnx_static)
from trainables.export.tflite import TFLITE_CALIB_METHODS, convert_tflite, quantize_tflite

if TYPE_CHECKING:
    from detection.coco import CocoDataset


class Intermediates:
    """Float models and calibration images shared by the formats of one export run, made on first use."""

    def __init__(self, graph: ExportGraph, work_dir: Path, *, calibration: "CocoDataset | None",
                 calib_images: int, calib_method: str, calib_seed: int = 0):
        self.graph = graph
        self.work_dir = Path(work_dir)
        self.calib_method = calib_method
        self._calibration_data = calibration
        self._calib_images = calib_images
        self._calib_seed = calib_seed
        self._onnx: tuple[Path, dict] | None = None
        self._tflite: tuple[Path, dict] | None = None
        self._images: list[np.ndarray] | None = None

    def float_onnx(self) -> tuple[Path, dict]:
        if self._onnx is None:
            path = self.work_dir / "float32.onnx"
            self._onnx = (path, export_onnx(self.graph, path))
        return self._onnx

    def float_tflite(self) -> tuple[Path, dict]:
        if self._tflite is None:
            path = self.work_dir / "float32.tflite"
            self._tflite = (path, convert_tflite(self.graph, path))
        return self._tflite

    def calibration_images(self) -> list[np.ndarray]:
        if self._calibration_data is None:
            raise ExportError("this format needs calibration images: pass a training split as `calibration`")
        if self._images is None:
            self._images = calibration_images(self._calibration_data, count=self._calib_images,
                                              img_size=self.graph.img_size, seed=self._calib_seed)
        return self._images

    def calibration_provenance(self) -> dict:
        return provenance(self._calibration_data, self._calib_images, self._calib_seed)


Build = Callable[[Intermediates, Path], dict]  # writes the file at the path, returns its settings


@dataclass(frozen=True)
class ExportFormat:
    name: str
    runtime: str  # device_actors runtime name
    suffix: str
    description: str
    build: Build
    calib_methods: tuple[str, ...] = ()  # empty: needs no calibration

    @property
    def needs_calibration(self) -> bool:
        return bool(self.calib_methods)


def _copy_of(source: Callable[[Intermediates], tuple[Path, dict]]) -> Build:
    def build(ctx: Intermediates, path: Path) -> dict:
        float_path, settings = source(ctx)
        shutil.copyfile(float_path, path)
        return settings
    return build


def _derived(source: Callable[[Intermediates], tuple[Path, dict]],
             make: Callable[[Path, Path, Intermediates], dict], *, calibrated: bool = False) -> Build:
    def build(ctx: Intermediates, path: Path) -> dict:
        float_path, base = source(ctx)
        settings = {**base, **make(float_path, path, ctx)}
        if calibrated:
            settings.update(ctx.calibration_provenance())
        return settings
    return build


FORMATS: dict[str, ExportFormat] = {}


def register(fmt: ExportFormat) -> None:
    if fmt.name in FORMATS:
        raise ValueError(f"export format {fmt.name!r} is registered twice")
    FORMATS[fmt.name] = fmt


def get_format(name: str) -> ExportFormat:
    if name not in FORMATS:
        raise ExportError(f"unknown export format {name!r}; known formats: {', '.join(FORMATS)}")
    return FORMATS[name]


def known_formats() -> list[str]:
    return list(FORMATS)


_onnx = Intermediates.float_onnx
_tflite = Intermediates.float_tflite
for _fmt in (
    ExportFormat("onnx", "onnxruntime", ".onnx", "float32, decode in the graph", _copy_of(_onnx)),
    ExportFormat("onnx-fp16", "onnxruntime", ".onnx", "float16 weights and compute, float32 IO",
                 _derived(_onnx, lambda src, dst, ctx: convert_onnx_fp16(src, dst))),
    ExportFormat("onnx-dynamic", "onnxruntime", ".onnx", "dynamic uint8 per-channel (the thesis's method)",
                 _derived(_onnx, lambda src, dst, ctx: quantize_onnx_dynamic(src, dst))),
    ExportFormat("onnx-int8", "onnxruntime", ".onnx", "static QDQ, int8 per-channel weights, calibrated",
                 _derived(_onnx, lambda src, dst, ctx: quantize_onnx_static(
                     src, dst, ctx.calibration_images(), calib_method=ctx.calib_method), calibrated=True),
                 calib_methods=CALIB_METHODS),
    ExportFormat("tflite", "tflite", ".tflite", "float32 via litert-torch", _copy_of(_tflite)),
    ExportFormat("tflite-fp16", "tflite", ".tflite", "float16 weights",
                 _derived(_tflite, lambda src, dst, ctx: quantize_tflite(src, dst, mode="fp16"))),
    ExportFormat("tflite-dynamic", "tflite", ".tflite", "dynamic-range int8 weights",
                 _derived(_tflite, lambda src, dst, ctx: quantize_tflite(src, dst, mode="dynamic"))),
    ExportFormat("tflite-int8", "tflite", ".tflite", "full int8, calibrated, float decode tail",
                 _derived(_tflite, lambda src, dst, ctx: quantize_tflite(
                     src, dst, mode="int8", calibration=ctx.calibration_images()), calibrated=True),
                 calib_methods=TFLITE_CALIB_METHODS),
):
    register(_fmt)
