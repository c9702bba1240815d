"""Export a trained detector to the files a board runs: ONNX and TFLite, float and quantized.

`export_formats(checkpoint, ["onnx", "onnx-int8", "tflite-int8"], out_dir, img_size=128,
calibration=train_split)` returns one `Artifact` per format. Every graph ends in the decode, so
the board only runs NMS (`detection.postprocess`); `device_actors.accuracy` scores the files.
"""
from trainables.export.artifact import Artifact, ExportError, describe
from trainables.export.calibration import calibration_images
from trainables.export.formats import FORMATS, ExportFormat, get_format, known_formats
from trainables.export.graph import ExportGraph, GridDecode
from trainables.export.onnx_export import export_onnx
from trainables.export.pipeline import artifact_filename, export_formats

__all__ = ["FORMATS", "Artifact", "ExportError", "ExportFormat", "ExportGraph", "GridDecode", "artifact_filename",
           "calibration_images", "describe", "export_formats", "export_onnx", "get_format", "known_formats"]
