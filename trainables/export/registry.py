"""The artifact formats a trial can deploy, declared without torch so the config check can read them.

A format is a (runtime, quantization) pair with a name ("onnx-int8"), a file suffix, the
calibration methods it accepts (none: it needs no calibration) and the function that builds the
file (`module:function`, imported only when exporting). Adding a format is one entry here and one
builder function; the sweep's `runtime` and `quantization` choices follow from the registry.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.knobs import knob
from common.registry import Registry, load
from trainables.export.artifact import ExportError

ONNX_CALIB_METHODS = ("minmax", "percentile", "entropy")  # onnxruntime.quantization calibrators
TFLITE_CALIB_METHODS = ("minmax",)  # ai-edge-quantizer calibrates activations by min/max only


@dataclass(frozen=True)
class ArtifactFormat:
    name: str
    runtime: str  # the device_actors runtime that loads it
    quantization: str  # fp32, fp16, dynamic, int8
    suffix: str
    description: str
    builder: str | Callable  # "module:function"; (Intermediates, path, **options) -> settings dict
    calib_methods: tuple[str, ...] = ()  # empty: needs no calibration

    @property
    def needs_calibration(self) -> bool:
        return bool(self.calib_methods)

    def build(self, ctx: Any, path: Path) -> dict:
        """Write the file at `path` from the export run's shared intermediates; returns its settings."""
        return load(self.builder)(ctx, path)


FORMATS: Registry[ArtifactFormat] = Registry("export format", error=ExportError)


def register_format(fmt: ArtifactFormat) -> ArtifactFormat:
    clash = next((f for f in FORMATS.values() if (f.runtime, f.quantization) == (fmt.runtime, fmt.quantization)), None)
    if clash is not None:
        raise ValueError(f"format {fmt.name!r}: {fmt.runtime} {fmt.quantization} is format {clash.name!r} already")
    return FORMATS.register(fmt.name, fmt)


def get_format(name: str) -> ArtifactFormat:
    return FORMATS.get(name)


def runtimes() -> tuple[str, ...]:
    """Runtimes some format is built for, in registration order."""
    return tuple(dict.fromkeys(f.runtime for f in FORMATS.values()))


def quantizations() -> tuple[str, ...]:
    return tuple(dict.fromkeys(f.quantization for f in FORMATS.values()))


def format_for(runtime: str, quantization: str) -> ArtifactFormat:
    """The format of a (runtime, quantization) pair, e.g. onnxruntime + int8 -> onnx-int8."""
    for fmt in FORMATS.values():
        if (fmt.runtime, fmt.quantization) == (runtime, quantization):
            return fmt
    offered = ", ".join(f.quantization for f in FORMATS.values() if f.runtime == runtime)
    raise ExportError(f"no export format for runtime {runtime!r} with quantization {quantization!r}; "
                      + (f"{runtime} offers {offered}" if offered else f"runtimes: {', '.join(runtimes())}"))


@dataclass(frozen=True)
class ExportKnobs:
    """The export stage of one trial: which file to build and the input side it is built for."""

    img_size: int  # the train stage's knob (trainables.hyper.TrainKnobs.img_size)
    runtime: str = knob("onnxruntime", "runtime that loads and runs the artifact", noun="a runtime",
                        choices=runtimes)
    quantization: str = knob("fp32", "precision of the artifact", noun="a quantization", choices=quantizations)
    calib_method: str = knob("minmax", "how the int8 formats calibrate activations (percentile and entropy: ONNX "
                             "Runtime only)", noun="a calibration method", choices=ONNX_CALIB_METHODS)
    calib_images: int = knob(64, "training images that calibrate the int8 formats (default: data.calibration_images)",
                             minimum=1)
    onnx_layout: str = knob("yolov5", "output layout of a student_init that is a user's .onnx file: yolov5 "
                            "(1, N, 5+C) with objectness, or yolov8 (1, 4+C, N) without", noun="an ONNX layout",
                            choices=("yolov5", "yolov8"))

    @property
    def format(self) -> ArtifactFormat:
        return format_for(self.runtime, self.quantization)


_BUILD = "trainables.export.formats"
for _fmt in (
    ArtifactFormat("onnx", "onnxruntime", "fp32", ".onnx", "float32, decode in the graph", f"{_BUILD}:onnx_fp32"),
    ArtifactFormat("onnx-fp16", "onnxruntime", "fp16", ".onnx", "float16 weights and compute, float32 IO",
                   f"{_BUILD}:onnx_fp16"),
    ArtifactFormat("onnx-dynamic", "onnxruntime", "dynamic", ".onnx", "dynamic uint8 per-channel (the thesis's method)",
                   f"{_BUILD}:onnx_dynamic"),
    ArtifactFormat("onnx-int8", "onnxruntime", "int8", ".onnx", "static QDQ, int8 per-channel weights, calibrated",
                   f"{_BUILD}:onnx_int8", calib_methods=ONNX_CALIB_METHODS),
    ArtifactFormat("tflite", "tflite", "fp32", ".tflite", "float32 via litert-torch", f"{_BUILD}:tflite_fp32"),
    ArtifactFormat("tflite-fp16", "tflite", "fp16", ".tflite", "float16 weights", f"{_BUILD}:tflite_fp16"),
    ArtifactFormat("tflite-dynamic", "tflite", "dynamic", ".tflite", "dynamic-range int8 weights",
                   f"{_BUILD}:tflite_dynamic"),
    ArtifactFormat("tflite-int8", "tflite", "int8", ".tflite", "full int8, calibrated, float decode tail",
                   f"{_BUILD}:tflite_int8", calib_methods=TFLITE_CALIB_METHODS),
):
    register_format(_fmt)
