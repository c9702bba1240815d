"""The artifact formats a trial can deploy, declared without torch so the config check can read them.

A format is a (runtime, quantization) pair with a name ("onnx-int8") and every fact the rest of
the project asks about it: its file suffix, the calibration methods it accepts (none: it needs no
calibration), the function that builds the file and the check that its tools are installed
(`module:function`, imported only when exporting), whether a float ONNX alone is enough to build
it, the MLflow flavour that logs it and the mAP loss its tests allow. Adding a format is one entry
here and one builder function; the sweep's `runtime` and `quantization` choices follow from the
registry.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from common.knobs import knob
from common.registry import Registry, load
from trainables.export.artifact import ExportError

ONNX_CALIB_METHODS = ("minmax", "percentile", "entropy")  # onnxruntime.quantization calibrators
TFLITE_CALIB_METHODS = ("minmax",)  # ai-edge-quantizer calibrates activations by min/max only
MAP_EQUAL = 0.002  # mAP@.5:.95 (0.2 points) within which two files are "the same model"
# The NPU knobs (issue "The board's NPU"); the first value of each is its default, today's artifact.
INT8_GRANULARITIES = ("per-channel", "per-tensor")  # weight scales: VeriSilicon NPUs run per-tensor only
INT8_IO = ("nchw", "nhwc-uint8", "nhwc-int8")  # nchw: NCHW int8 image in, float32 out (CPU-shaped)
DECODE_PLACEMENTS = ("graph", "host")  # host: the artifact ends in the head convs, numpy decodes
OUTPUT_LAYOUTS = ("joined", "split")  # split: boxes and scores as two tensors, each with its own int8 scale
# Knobs that only formats declaring them read, with the format field that lists the values each takes.
FORMAT_KNOBS = {"calib_method": "calib_methods", "int8_granularity": "int8_granularities", "int8_io": "int8_io"}


@dataclass(frozen=True)
class ArtifactFormat:
    name: str
    runtime: str  # the device_actors runtime that loads it
    quantization: str  # fp32, fp16, dynamic, int8
    suffix: str
    description: str
    builder: str | Callable  # "module:function"; (Intermediates, path, **options) -> settings dict
    calib_methods: tuple[str, ...] = ()  # empty: needs no calibration
    int8_granularities: tuple[str, ...] = ()  # weight granularities it can write; empty: not int8
    int8_io: tuple[str, ...] = ()  # input/output layouts and types it can write; empty: not int8
    # Raises ExportError naming what to install when the builder's packages are missing ("module:function").
    requires: str | Callable | None = None
    from_float_onnx: bool = False  # built from the float ONNX alone, so a user's ONNX detector can become it
    mlflow_flavor: str | None = None  # the `mlflow.<flavor>` module that logs it; None: the file as a plain LoggedModel
    max_map_drop: float = MAP_EQUAL  # mAP@.5:.95 its tests let it lose against the float32 ONNX (0.01 = 1 point)
    # Why building it takes minutes, not seconds ("fine-tunes the student"); empty: a conversion. Tests: slow ones.
    slow_build: str = ""

    @property
    def needs_calibration(self) -> bool:
        return bool(self.calib_methods)

    def accepted(self, knob: str) -> tuple[str, ...]:
        """The values of format knob `knob` (a key of FORMAT_KNOBS) this format takes; empty: it does not read it."""
        return getattr(self, FORMAT_KNOBS[knob])

    def check_tools(self) -> None:
        """Raise ExportError when a package the builder needs is not installed (before any slow step)."""
        if self.requires is not None:
            load(self.requires)()

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


def calib_methods() -> tuple[str, ...]:
    """Calibration methods some format accepts, in registration order."""
    return tuple(dict.fromkeys(m for f in FORMATS.values() for m in f.calib_methods))


def suffixes() -> tuple[str, ...]:
    """The file suffixes of every format's artifact (.onnx, .tflite), in registration order."""
    return tuple(dict.fromkeys(f.suffix for f in FORMATS.values()))


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
                             "Runtime only)", noun="a calibration method", choices=calib_methods)
    calib_images: int = knob(64, "training images that calibrate the int8 formats (default: data.calibration_images)",
                             minimum=1)
    int8_granularity: str = knob(INT8_GRANULARITIES[0], "int8 weight scales: one per output channel, or one per "
                                 "weight tensor (what VeriSilicon NPUs such as the i.MX8M Plus's run)",
                                 noun="an int8 granularity", choices=INT8_GRANULARITIES)
    int8_io: str = knob(INT8_IO[0], "an int8 artifact's input and outputs: nchw (NCHW int8 image in, float32 out), or the "
                        "camera's NHWC layout with uint8 or int8 in and out (TFLite only)", noun="an int8 io",
                        choices=INT8_IO)
    decode: str = knob(DECODE_PLACEMENTS[0], "where boxes are decoded: in the graph, or on the host in numpy from "
                       "the head convs' outputs (NPUs run convolutions, not box arithmetic)",
                       noun="a decode placement", choices=DECODE_PLACEMENTS)
    outputs: str = knob(OUTPUT_LAYOUTS[0], "a graph-decoded artifact's outputs: joined (1, N, 5+C), or split into "
                        "boxes (1, N, 4) and scores (1, N, 1+C)", noun="an output layout", choices=OUTPUT_LAYOUTS)
    qat_epochs: int = knob(0, "quantization: qat: epochs of fake-quantized fine-tuning after training; 0: as many "
                           "as the trial's epochs", minimum=0)
    max_map_drop: float = knob(0.01, "quantization: int8-mixed: the mAP@.5:.95 the artifact may lose against the float "
                               "model on training images (never the val split); its most sensitive convolutions "
                               "stay float until it does", minimum=0, maximum=1)
    epochs: int = 0  # the train stage's knob (trainables.hyper.TrainKnobs.epochs): QAT's length when qat_epochs is 0
    onnx_layout: str = knob("yolov5", "output layout of a student_init that is a user's .onnx file: yolov5 "
                            "(1, N, 5+C) with objectness, or yolov8 (1, 4+C, N) without", noun="an ONNX layout",
                            choices=("yolov5", "yolov8"))

    @property
    def format(self) -> ArtifactFormat:
        return format_for(self.runtime, self.quantization)

    @property
    def qat_length(self) -> int:
        """Epochs of QAT fine-tuning: `qat_epochs`, or the trial's epochs where it is 0."""
        return self.qat_epochs or self.epochs

    @property
    def shape(self) -> "ArtifactShape":
        """The NPU knobs as this trial's format reads them (a knob its format ignores at its default)."""
        return ArtifactShape(int8_granularity=self.int8_granularity, int8_io=self.int8_io, decode=self.decode,
                             outputs=self.outputs).for_format(self.format)


@dataclass(frozen=True)
class ArtifactShape:
    """How an artifact is shaped for its target beyond its format: int8 weight granularity, input
    and output layout, where the decode runs. Defaults are today's CPU-shaped artifact."""

    int8_granularity: str = INT8_GRANULARITIES[0]
    int8_io: str = INT8_IO[0]
    decode: str = DECODE_PLACEMENTS[0]
    outputs: str = OUTPUT_LAYOUTS[0]

    def __post_init__(self) -> None:
        for name, allowed in (("int8_granularity", INT8_GRANULARITIES), ("int8_io", INT8_IO),
                              ("decode", DECODE_PLACEMENTS), ("outputs", OUTPUT_LAYOUTS)):
            if getattr(self, name) not in allowed:
                raise ExportError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")

    def for_format(self, fmt: ArtifactFormat) -> "ArtifactShape":
        """The knobs `fmt` reads, the others at their defaults; a value it reads but cannot write is an ExportError."""
        values = {}
        for name in ("int8_granularity", "int8_io"):
            accepted = fmt.accepted(name)
            value = getattr(self, name) if accepted else getattr(ArtifactShape, name)
            if accepted and value not in accepted:
                raise ExportError(f"format {fmt.name} takes {name} {', '.join(accepted)}; got {value!r}")
            values[name] = value
        return ArtifactShape(**values, decode=self.decode, outputs=self.outputs if self.decode == "graph" else "joined")

    @property
    def per_channel(self) -> bool:
        return self.int8_granularity == "per-channel"

    @property
    def nhwc(self) -> bool:
        """NHWC input (the camera's layout) with integer input and outputs."""
        return self.int8_io != INT8_IO[0]

    @property
    def io_type(self) -> str | None:
        """uint8 or int8 input and outputs; None: int8 input, float32 outputs (today's)."""
        return self.int8_io.removeprefix("nhwc-") if self.nhwc else None

    def settings(self) -> dict:
        """What to record beside an artifact's other settings."""
        return {"int8_granularity": self.int8_granularity, "int8_io": self.int8_io, "decode": self.decode,
                "outputs": self.outputs}


_BUILD = "trainables.export.formats"


def _onnx(name: str, quantization: str, description: str, builder: str, **facts) -> ArtifactFormat:
    return ArtifactFormat(name, "onnxruntime", quantization, ".onnx", description, f"{_BUILD}:{builder}",
                          from_float_onnx=True, mlflow_flavor="onnx", **facts)


def _tflite(name: str, quantization: str, description: str, builder: str, **facts) -> ArtifactFormat:
    return ArtifactFormat(name, "tflite", quantization, ".tflite", description, f"{_BUILD}:{builder}",
                          requires="trainables.export.tflite:require_tflite_tools", **facts)


for _fmt in (
    _onnx("onnx", "fp32", "float32, decode in the graph", "onnx_fp32"),
    _onnx("onnx-fp16", "fp16", "float16 weights and compute, float32 IO", "onnx_fp16"),
    _onnx("onnx-dynamic", "dynamic", "dynamic uint8 per-channel (the thesis's method)", "onnx_dynamic",
          max_map_drop=0.015),
    _onnx("onnx-int8", "int8", "static QDQ, int8 per-channel weights, calibrated", "onnx_int8",
          calib_methods=ONNX_CALIB_METHODS, int8_granularities=INT8_GRANULARITIES, int8_io=INT8_IO[:1],
          max_map_drop=0.02),
    ArtifactFormat("onnx-int8-mixed", "onnxruntime", "int8-mixed", ".onnx", "static QDQ int8 with the most "
                   "sensitive convolutions kept float until the mAP drop is within max_map_drop",
                   f"{_BUILD}:onnx_int8_mixed", calib_methods=ONNX_CALIB_METHODS, int8_granularities=INT8_GRANULARITIES,
                   int8_io=INT8_IO[:1], mlflow_flavor="onnx", max_map_drop=0.02,
                   slow_build="scores several candidate files on training images"),
    ArtifactFormat("onnx-qat", "onnxruntime", "qat", ".onnx", "quantization-aware trained (PT2E), QDQ with the "
                   "learned scales", f"{_BUILD}:onnx_qat", requires="trainables.export.qat:require_qat_tools",
                   int8_granularities=INT8_GRANULARITIES, int8_io=INT8_IO[:1], mlflow_flavor="onnx",
                   max_map_drop=0.02, slow_build="fine-tunes the student with fake quantization"),
    _tflite("tflite", "fp32", "float32 via litert-torch", "tflite_fp32"),
    _tflite("tflite-fp16", "fp16", "float16 weights", "tflite_fp16"),
    _tflite("tflite-dynamic", "dynamic", "dynamic-range int8 weights", "tflite_dynamic", max_map_drop=0.015),
    _tflite("tflite-int8", "int8", "full int8, calibrated, float decode tail", "tflite_int8",
            calib_methods=TFLITE_CALIB_METHODS, int8_granularities=INT8_GRANULARITIES, int8_io=INT8_IO,
            max_map_drop=0.02),
    ArtifactFormat("tflite-qat", "tflite", "qat", ".tflite", "quantization-aware trained (PT2E), int8 via "
                   "litert-torch with the learned scales", f"{_BUILD}:tflite_qat",
                   requires="trainables.export.qat:require_qat_tools", int8_granularities=INT8_GRANULARITIES,
                   int8_io=INT8_IO[:1], max_map_drop=0.02, slow_build="fine-tunes the student with fake quantization"),
):
    register_format(_fmt)


SHAPE_KNOBS = tuple(f.name for f in fields(ArtifactShape))  # the NPU knobs, as ExportKnobs declares them
