"""Export a trained detector to the files a board runs: ONNX and TFLite, float and quantized.

`export_formats(checkpoint, ["onnx", "onnx-int8", "tflite-int8"], out_dir, img_size=128,
calibration=train_split)` returns one `Artifact` per format. Every graph ends in the decode, so
the board only runs NMS (`detection.postprocess`); `device_actors.accuracy` scores the files.

The registry of formats (`trainables.export.registry`) imports no torch; the exporters do, and
are imported on first use.
"""
from __future__ import annotations

from trainables.export.artifact import Artifact, ExportError, describe
from trainables.export.registry import (FORMATS, ArtifactFormat, ExportKnobs, format_for, get_format, quantizations,
                                        register_format, runtimes, suffixes)

__all__ = ["FORMATS", "Artifact", "ArtifactFormat", "ExportError", "ExportGraph", "ExportKnobs", "GridDecode",
           "artifact_filename", "calibration_images", "describe", "export_formats", "export_onnx", "export_onnx_model",
           "format_for",
           "get_format", "quantizations", "register_format", "runtimes", "suffixes"]

_TORCH_SIDE = {"ExportGraph": "graph", "GridDecode": "graph", "export_onnx": "onnx_export",
               "calibration_images": "calibration", "artifact_filename": "pipeline", "export_formats": "pipeline",
               "export_onnx_model": "pipeline"}


def __getattr__(name: str):
    if name in _TORCH_SIDE:
        import importlib

        return getattr(importlib.import_module(f"trainables.export.{_TORCH_SIDE[name]}"), name)
    raise AttributeError(f"module 'trainables.export' has no attribute {name!r}")
