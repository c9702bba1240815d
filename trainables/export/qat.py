"""Quantization-aware training (QAT) of a trained student, ending in a TFLite int8 and an ONNX QDQ file.

The flow is PyTorch's PT2E (`torchao.quantization.pt2e`: `prepare_qat_pt2e`, `convert_pt2e`; it left
`torch.ao` for torchao, 0.18 here), with LiteRT's own `PT2EQuantizer` (litert-torch) choosing what to
quantize. Why PT2E and not NNCF or torchao's eager QAT: litert-torch converts a PT2E-converted graph
with `quant_config=QuantConfig(pt2e_quantizer=...)` straight into an int8 .tflite whose scales are the
ones QAT learned, which is the file the i.MX8M Plus runs; NNCF ends in OpenVINO or ONNX, and torchao's
eager QAT targets its own int8 kernels. The same converted graph gives the ONNX file: each
quantize/dequantize pair becomes `fake_quantize_*_affine`, which the TorchScript exporter writes as
QuantizeLinear/DequantizeLinear with the learned scales (activations as uint8 with their zero point
moved by 128, the same grid, because ONNX Runtime fuses QDQ convolutions only with uint8 activations).

What is done to the student before fake quantization, and why:
- BatchNorm is folded into its convolution (frozen statistics). LiteRT's QAT conv-bn annotator fails
  under torch 2.13 (it exports a function), and folding is what the exported file holds anyway.
- SiLU is written as x * sigmoid(x): LiteRT's quantizer annotates sigmoid and mul but not silu, which
  would otherwise stay float between a DEQUANTIZE and a QUANTIZE after every convolution.
Fine-tuning is plain detection loss (no KD) on the training split, AdamW at a tenth of the student's
default learning rate, for `qat_epochs` epochs; the decode stays float (as in post-training int8).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from trainables.export.artifact import ExportError
from trainables.export.graph import ExportGraph
from trainables.export.registry import ArtifactShape

if TYPE_CHECKING:
    from detection.coco import CocoDataset
    from trainables.models.yolo import YOLO

log = logging.getLogger(__name__)

QAT_LR_FACTOR = 0.1  # of the student's default AdamW learning rate (trainables.train.adamw_lr0)
QAT_BATCH = 16


def require_qat_tools() -> None:
    """Fail fast when torchao (PT2E) or litert-torch (its quantizer and converter) is missing."""
    import importlib.util

    missing = [name for name in ("torchao", "litert_torch") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"QAT formats need the Python package(s) {', '.join(missing)}, which are not installed; "
                          f"install the TFLite extra: `pip install -e '.[tflite]'` (litert-torch brings torchao)")


class _SiLU(nn.Module):
    """SiLU as the two ops LiteRT's PT2E quantizer annotates (sigmoid with fixed scales, mul)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class _Raw(nn.Module):
    """The detector's head logits only, as a tuple: what the loss reads and `torch.export` traces."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.detector(images)[0])


class QATDetector(nn.Module):
    """A converted PT2E graph standing in for the YOLO inside `ExportGraph`: same call, anchors, strides."""

    def __init__(self, converted: nn.Module, detector: "YOLO"):
        super().__init__()
        from torchao.quantization.pt2e import allow_exported_model_train_eval

        allow_exported_model_train_eval(converted)  # ExportGraph calls .eval()
        self.converted = converted
        self.spec = detector.spec
        self.strides = detector.strides
        self.register_buffer("anchors", detector.anchors.clone(), persistent=False)

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], None]:
        return list(self.converted(images)), None


class QATExportGraph(ExportGraph):
    """`ExportGraph` over a QAT detector; a host decode reads the head logits back into the convs' layout."""

    def forward(self, images: torch.Tensor):
        if self.shape.decode != "host":
            return super().forward(images)
        raw, _ = self.detector(images)  # (B, A, H, W, O) -> (B, H, W, A*O), as the head conv wrote it
        return tuple(r.permute(0, 2, 3, 1, 4).reshape(r.shape[0], r.shape[2], r.shape[3], -1) for r in raw)


def _foldable(detector: "YOLO") -> "YOLO":
    """BatchNorm folded into each conv; SiLU as x * sigmoid(x) (see the module docstring)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    detector = detector.eval()
    for module in detector.modules():
        if isinstance(getattr(module, "bn", None), nn.BatchNorm2d):
            module.conv = fuse_conv_bn_eval(module.conv, module.bn)
            module.bn = nn.Identity()
        if isinstance(getattr(module, "act", None), nn.SiLU):
            module.act = _SiLU()
    return detector


def quantizer(shape: ArtifactShape):
    """LiteRT's PT2E quantizer: int8 symmetric weights (per channel or per tensor), int8 activations,
    fake-quantized in training. Its QAT-only conv-bn patterns are off: BatchNorm is folded already."""
    from litert_torch.quantize import pt2e_quantizer as pt2e

    config = pt2e.get_symmetric_quantization_config(is_per_channel=shape.per_channel, is_qat=True)
    return pt2e.PT2EQuantizer().set_global(dataclasses.replace(config, is_qat=False))


@dataclasses.dataclass(frozen=True)
class QATResult:
    graph: QATExportGraph  # the converted model with the float decode, as ExportGraph shapes it
    quantizer: object  # the PT2EQuantizer, which litert-torch's converter takes back
    settings: dict


def fine_tune(detector: "YOLO", train: "CocoDataset", *, img_size: int, epochs: int, shape: ArtifactShape,
              seed: int = 0) -> QATResult:
    """Fake-quantized fine-tuning of `detector` for `epochs` on `train`, converted (PT2E) for export."""
    from litert_torch.quantize.quant_config import QuantConfig  # noqa: F401 - fails early if litert-torch is missing
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    from trainables.data import DetectionDataset, make_loader
    from trainables.hyper import LossWeights, TrainSettings
    from trainables.loss import DetectionLoss
    from trainables.train import adamw_lr0

    started = time.perf_counter()
    torch.manual_seed(seed)
    model = _foldable(detector)
    batch = torch.zeros(2, 3, img_size, img_size)
    try:
        exported = torch.export.export(_Raw(model), (batch,), dynamic_shapes=({0: torch.export.Dim.AUTO},)).module()
    except Exception as e:  # noqa: BLE001 - torch.export raises many types
        raise ExportError(f"QAT: torch.export could not capture the student: {e}") from e
    pt2e = quantizer(shape)
    prepared = prepare_qat_pt2e(exported, pt2e)
    num_classes = detector.spec.num_classes
    criterion = DetectionLoss(detector.anchors, detector.strides, num_classes,
                              LossWeights().scaled(num_classes, img_size))
    lr = adamw_lr0(num_classes) * QAT_LR_FACTOR
    optimizer = torch.optim.AdamW([p for p in prepared.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    dataset = DetectionDataset(train, img_size, TrainSettings().augment, seed=seed)
    losses = []
    for epoch in range(epochs):
        move_exported_model_to_train(prepared)
        total, seen = 0.0, 0
        for images, targets, _ in make_loader(dataset, batch_size=QAT_BATCH, shuffle=True, workers=0, seed=seed,
                                              epoch=epoch):
            loss, _ = criterion(list(prepared(images)), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(prepared.parameters(), max_norm=10.0)
            optimizer.step()
            total += float(loss.detach()) * images.shape[0]
            seen += images.shape[0]
        losses.append(total / max(seen, 1))
        if not math.isfinite(losses[-1]):
            raise ExportError(f"QAT: the loss is {losses[-1]} after epoch {epoch + 1}")
    move_exported_model_to_eval(prepared)
    converted = convert_pt2e(prepared, fold_quantize=False)
    graph = QATExportGraph(QATDetector(converted, detector), img_size, shape)  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    log.info("QAT: %d epochs in %.0f s, loss %s", epochs, seconds, ", ".join(f"{x:.3f}" for x in losses))
    settings = {"quantizer": "PT2E QAT (torchao prepare_qat_pt2e, litert-torch PT2EQuantizer)",
                "qat_epochs": epochs, "qat_lr": lr, "qat_kd": "none", "qat_loss": [round(x, 4) for x in losses],
                "qat_seconds": round(seconds, 1), "weights": f"int8 {shape.int8_granularity}", "activations": "int8",
                "float_ops": "decode tail", "batchnorm": "folded before QAT"}
    return QATResult(graph=graph, quantizer=pt2e, settings=settings)


_Q = "quantize_per_tensor", "quantize_per_channel"


def _int32_attr(graph_module: nn.Module, node) -> object:
    """A get_attr node of the same tensor as int32 (what fake_quantize_per_channel_affine takes)."""
    name = f"{node.target}_int32"
    if not hasattr(graph_module, name):
        graph_module.register_buffer(name, getattr(graph_module, node.target).to(torch.int32))
    return graph_module.graph.get_attr(name)


def _as_fake_quant(graph_module: nn.Module) -> nn.Module:
    """Each quantize -> dequantize pair of a converted PT2E graph as one `fake_quantize_*_affine`, which
    the TorchScript ONNX exporter writes as QuantizeLinear -> DequantizeLinear with the same scales.
    int8 activations ([-128, 127], zero point z) become uint8 ([0, 255], z + 128): the same grid."""
    g = graph_module.graph
    for node in list(g.nodes):
        name = getattr(node.target, "__name__", str(node.target))
        if node.op != "call_function" or not name.startswith("dequantize_per_"):
            continue
        source = node.args[0]
        if not (hasattr(source, "target") and getattr(source.target, "__name__", "").startswith(_Q)):
            continue
        x = source.args[0]
        with g.inserting_before(node):
            if name.startswith("dequantize_per_tensor"):
                _, scale, zero_point, qmin, qmax, _dtype = source.args[:6]
                if (qmin, qmax) == (-128, 127):
                    zero_point, qmin, qmax = zero_point + 128, 0, 255
                fake = g.call_function(torch.fake_quantize_per_tensor_affine,
                                       (x, float(scale), int(zero_point), qmin, qmax))
            else:
                _, scales, zero_points, axis, qmin, qmax, _dtype = source.args[:7]
                zp32 = _int32_attr(graph_module, zero_points)
                fake = g.call_function(torch.fake_quantize_per_channel_affine,
                                       (x, scales, zp32, axis, -128, 127) if (qmin, qmax) == (-127, 127)
                                       else (x, scales, zp32, axis, qmin, qmax))
        node.replace_all_uses_with(fake)
    g.eliminate_dead_code()
    graph_module.recompile()
    return graph_module


def export_qat_onnx(result: QATResult, path: Path) -> dict:
    """The QAT model as an ONNX QDQ file (QuantizeLinear/DequantizeLinear with the learned scales)."""
    import copy

    from trainables.export.onnx_export import export_onnx

    graph = copy.deepcopy(result.graph)
    _as_fake_quant(graph.detector.converted)
    made = export_onnx(graph, path, opset=17)
    _unshare_scalars(path)
    return {**made, **result.settings, "precision": "int8 QDQ (QAT scales)", "activations": "uint8 (int8 grid + 128)"}


def _unshare_scalars(path: Path) -> None:
    """Give every use of a scalar constant (a scale, a zero point) its own initializer. The exporter
    merges constants of equal value, so two scales that happen to be equal would wire the graph by
    value, and the file's graph key (the board's timing reuse) would depend on the learned scales."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    scalars = {t.name: t for t in graph.initializer if not t.dims}
    seen: set[str] = set()
    for node in graph.node:
        for slot, name in enumerate(node.input):
            if name not in scalars:
                continue
            if name in seen:
                copy = onnx.TensorProto()
                copy.CopyFrom(scalars[name])
                copy.name = f"{name}__{node.name or len(graph.initializer)}_{slot}"
                graph.initializer.append(copy)
                node.input[slot] = copy.name
            seen.add(name)
    onnx.save(model, str(path), save_as_external_data=False)


def export_qat_tflite(result: QATResult, path: Path) -> dict:
    """The QAT model as an int8 .tflite through litert-torch's PT2E path (its scales, not recalibrated)."""
    from litert_torch.quantize.quant_config import QuantConfig

    from trainables.export.tflite import convert_tflite

    made = convert_tflite(result.graph, path, quant_config=QuantConfig(pt2e_quantizer=result.quantizer))
    return {**made, **result.settings, "precision": "int8 (QAT scales)"}
