"""Export the graph to one self-contained, simplified ONNX file.

The TorchScript exporter (`dynamo=False`) is used: the dynamo exporter needs `onnxscript`, which
the training environment does not install, and a traced CNN with a fixed input size is the case
the TorchScript exporter handles well. Weights are inlined: torch >= 2.9 may otherwise write a
sibling `.onnx.data` file, and a model sent to the board as bytes would then fail to load.
"""
from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import torch

from detection.outputs import METADATA_KEY, OutputLayout
from trainables.export.artifact import ExportError
from trainables.export.graph import ExportGraph

log = logging.getLogger(__name__)

MIN_OPSET = 17  # the oldest opset EdgeSweep exports
MAX_OPSET = 20  # the newest the TorchScript exporter writes
INPUT_NAME = "images"


def export_onnx(graph: ExportGraph, path: Path, *, opset: int = MIN_OPSET) -> dict:
    """Write `graph` as a float32 ONNX model with decode inside; returns the settings to record."""
    import onnx
    import onnxslim

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"ONNX opset must be in {MIN_OPSET}..{MAX_OPSET}, got {opset}")
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="edgesweep-onnx-") as tmp:
        traced = Path(tmp) / "traced.onnx"
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of dynamo, which needs onnxscript.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(graph.eval(), (graph.example_input(),), str(traced), dynamo=False,
                              opset_version=opset, input_names=[INPUT_NAME],
                              output_names=list(graph.output_layout().names),
                              do_constant_folding=True)
        # load() pulls in any external data, so the model saved below carries its weights inline.
        model = onnx.load(str(traced))
    nodes_before = len(model.graph.node)
    model = onnxslim.slim(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(path), save_as_external_data=False)
    log.info("exported %s: %d nodes (%d before onnxslim), opset %d", path, len(model.graph.node), nodes_before, opset)
    return {"exporter": "torch.onnx (TorchScript)", "opset": opset, "simplifier": f"onnxslim {onnxslim.__version__}",
            "precision": "float32"}


def describe_onnx(path: Path, layout: OutputLayout) -> None:
    """Store what the outputs hold in the file's metadata (`detection.outputs`), which ONNX Runtime reads back."""
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                        METADATA_KEY: layout.to_json()})
    onnx.save(model, str(path), save_as_external_data=False)
