"""Accuracy-aware mixed precision for ONNX Runtime: static int8 with the most sensitive convolutions
kept float until the mAP drop against the float model is within `max_map_drop`.

A sensitivity search of our own rather than NNCF's accuracy control: NNCF is not installed here
(it would bring OpenVINO-oriented dependencies into the training environment), and ONNX Runtime's
`quantize_static` already takes the one thing the search needs, `nodes_to_exclude`. So:
1. quantize everything (as `onnx-int8` does) and score it; within the bound, that file is the result;
2. otherwise rank the layers (a Conv and the activation nodes reading it) by the error each adds:
   the relative squared error of its output in the all-int8 model against the float model, minus
   that of its input, averaged over the calibration images (one run of each model);
3. keep the top 1, 2, 4, ... layers float, re-quantizing and scoring each candidate, until the drop is
   within the bound. Doubling needs about log2(layers) scorings instead of one per layer.
The drop is measured on images of the training split (the caller's `accuracy`), never on
the val split the trial is scored on, so the bound does not leak the evaluation set into the model.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx

from trainables.export.artifact import ExportError
from trainables.export.onnx_quant import DECODE_NODE_PREFIX, STEM_ACTIVATION_OPS, quantize_onnx_static

log = logging.getLogger(__name__)

FLOAT_LAYERS_KEY = "edgesweep.float_layers"  # ONNX metadata: the convolutions int8-mixed kept float


def conv_layers(model: onnx.ModelProto) -> list[tuple[str, list[str], str]]:
    """(input tensor, node names, output tensor) of each Conv outside the decode, with the activation
    nodes reading its output (SiLU: Sigmoid and Mul), in graph order; the first reads the image."""
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    layers = []
    for node in model.graph.node:
        if node.op_type != "Conv" or node.name.startswith(DECODE_NODE_PREFIX):
            continue
        acts = [r for r in readers.get(node.output[0], ()) if r.op_type in STEM_ACTIVATION_OPS]
        last = acts[-1].output[0] if acts else node.output[0]
        layers.append((node.input[0], [node.name, *(a.name for a in acts)], last))
    return layers


def _with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> bytes:
    """The model with extra graph outputs (ONNX Runtime infers their types)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    known = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in dict.fromkeys(names) if n not in known)
    return model.SerializeToString()


def _tensors(model_bytes: bytes, names: list[str], images: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor by name
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    return [session.run(names, {feed: np.asarray(image, np.float32)}) for image in images]


def rank_layers(float_model: onnx.ModelProto, int8_model: onnx.ModelProto,
                images: Sequence[np.ndarray]) -> list[tuple[list[str], float]]:
    """Layers (their node names) with the relative error each adds in `int8_model`, most sensitive first."""
    layers = conv_layers(float_model)[1:]  # the stem stays float in every candidate
    names = sorted({t for layer in layers for t in (layer[0], layer[2])})
    ref = _tensors(_with_outputs(float_model, names), names, images)
    got = _tensors(_with_outputs(int8_model, names), names, images)
    error = {}
    for i, name in enumerate(names):
        num = sum(float(np.mean((g[i] - r[i]) ** 2)) for g, r in zip(got, ref))
        den = sum(float(np.mean(r[i] ** 2)) for r in ref)
        error[name] = num / max(den, 1e-12)
    ranked = [(nodes, error[out] - error[inp]) for inp, nodes, out in layers]
    return sorted(ranked, key=lambda item: -item[1])


def quantize_onnx_mixed(fp32_model: Path, path: Path, calibration: Sequence[np.ndarray], *,
                        accuracy: Callable[[bytes], float], max_map_drop: float, calib_method: str = "minmax",
                        per_channel: bool = True, decode_in_graph: bool = True) -> dict:
    """Static int8 of `fp32_model` with the fewest sensitive layers kept float for a drop <= `max_map_drop`."""
    from onnxruntime.quantization import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="edgesweep-mixed-") as tmp:
        prepared = Path(tmp) / "float.onnx"
        quant_pre_process(str(fp32_model), str(prepared))  # the names quantize_static sees
        float_map = accuracy(prepared.read_bytes())
        candidate = Path(tmp) / "candidate.onnx"

        def drop_with(keep: list[str]) -> float:
            quantize_onnx_static(prepared, candidate, calibration, calib_method=calib_method, per_channel=per_channel,
                                 decode_in_graph=decode_in_graph, keep_float=keep)
            return float_map - accuracy(candidate.read_bytes())

        drop, kept, tried = drop_with([]), [], []
        tried.append((0, drop))
        if drop > max_map_drop:
            ranked = rank_layers(onnx.load(str(prepared)), onnx.load(str(candidate)), calibration)
            count = 1
            while True:
                kept = ranked[:count]
                drop = drop_with([n for nodes, _ in kept for n in nodes])
                tried.append((count, drop))
                if drop <= max_map_drop or count == len(ranked):
                    break
                count = min(2 * count, len(ranked))
            if drop > max_map_drop:
                raise ExportError(f"int8-mixed: even with every convolution float the mAP drop is {drop:.4f}, above "
                                  f"max_map_drop {max_map_drop}; raise max_map_drop or use fp32")
        float_layers = [nodes[0] for nodes, _ in kept]
        model = onnx.load(str(candidate))
        onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                            FLOAT_LAYERS_KEY: ",".join(float_layers)})
        onnx.save(model, str(path), save_as_external_data=False)
    log.info("int8-mixed: %d layers kept float, mAP drop %.4f (bound %.4f); tried %s", len(float_layers), drop,
             max_map_drop, tried)
    return {"quantizer": "onnxruntime quantize_static + sensitivity search", "weights":
            f"int8 per-{'channel' if per_channel else 'tensor'}", "activations": "uint8", "calib_method": calib_method,
            "calib_images": len(calibration), "max_map_drop": max_map_drop, "float_map_control": round(float_map, 4),
            "map_drop_control": round(drop, 4), "float_layers": float_layers,
            "mixed_search": [{"float_layers": c, "map_drop": round(d, 4)} for c, d in tried],
            "float_ops": "stem conv, decode tail" + (f", {len(float_layers)} sensitive convs" if float_layers else "")}
