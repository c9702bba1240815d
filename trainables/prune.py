"""Pruning a detector: structured (whole channels, with Torch-Pruning) and unstructured (single weights).

Structured pruning removes channels, so the pruned model is a narrower network: fewer parameters,
fewer MACs, a smaller and faster exported file. Its widths go into the model's `ModelSpec.channels`,
so its checkpoint rebuilds it (`trainables.models.yolo.build_model`). Torch-Pruning traces the
model's dependency graph, so the channels joined by a residual add or a concat are pruned together;
the head's output convolutions keep their outputs, so the output layout stays.

Unstructured pruning (`torch.nn.utils.prune`) only zeroes weights: the tensors keep their shapes,
so dense runtimes run exactly as many MACs as before; a compressed file gets smaller.
"""
from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune as torch_prune

from trainables.checkpoint import load_model, save_checkpoint
from trainables.hyper import MAX_PRUNE_RATIO, PRUNE_METHODS
from trainables.models.yolo import YOLO, conv_widths


def _importance(method: str) -> tp.importance.Importance:
    """Torch-Pruning's scorer for each of `PRUNE_METHODS`."""
    scorers = {
        # Li et al. 2017 ("Pruning Filters for Efficient ConvNets"): the L1 norm of each filter of the group's first conv
        "l1": lambda: tp.importance.MagnitudeImportance(p=1, normalizer=None, group_reduction="first"),
        # DepGraph (Fang et al. 2023): the L2 norm over every layer the channel's dependency group couples
        "group-norm": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        # network slimming (Liu et al. 2017): the BatchNorm scale of the channel
        "bn-scale": lambda: tp.importance.BNScaleImportance(),
    }
    if method not in scorers:
        raise ValueError(f"unknown pruning method {method!r}; known: {', '.join(PRUNE_METHODS)}")
    return scorers[method]()


def prune_channels(model: YOLO, *, ratio: float, method: str, img_size: int) -> YOLO:
    """Remove `ratio` of every layer's channels, the least important by `method`, in place; `model.spec`
    then records the new widths. The head's output convolutions keep their outputs."""
    if not 0 < ratio < MAX_PRUNE_RATIO:
        raise ValueError(f"pruning ratio must be in (0, {MAX_PRUNE_RATIO}), got {ratio}")
    was_training = model.training
    model.eval()  # tracing runs a forward pass: it must not move the BatchNorm statistics
    example = torch.zeros(1, 3, img_size, img_size, device=next(model.parameters()).device)
    pruner = tp.pruner.BasePruner(model, example, importance=_importance(method), pruning_ratio=ratio,
                                  ignored_layers=list(model.head.m))
    pruner.step()
    model.spec = replace(model.spec, channels=conv_widths(model))
    model.train(was_training)
    return model


def zero_weights(model: nn.Module, *, ratio: float, scope: Literal["layer", "global"]) -> nn.Module:
    """Zero `ratio` of the convolution weights with the smallest magnitude, per layer or over all of them
    at once (torch.nn.utils.prune's L1 unstructured pruning), made permanent; shapes stay."""
    if not 0 < ratio < 1:
        raise ValueError(f"pruning ratio must be in (0, 1), got {ratio}")
    convs = [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d)]
    if scope == "global":
        torch_prune.global_unstructured(convs, pruning_method=torch_prune.L1Unstructured, amount=ratio)
    else:
        for module, name in convs:
            torch_prune.l1_unstructured(module, name, amount=ratio)
    for module, name in convs:
        torch_prune.remove(module, name)
    return model


@dataclass(frozen=True)
class ModelCost:
    """What a model costs to hold and run at one image size."""

    parameters: int
    nonzero: int  # parameters that are not exactly zero (unstructured pruning zeroes, it does not remove)
    macs: int  # multiply-accumulates of one image (Torch-Pruning's counter)
    weights_gzip_bytes: int  # the float32 weights gzipped: what zeroed weights save in a compressed file

    @classmethod
    def of(cls, model: nn.Module, img_size: int) -> "ModelCost":
        example = torch.zeros(1, 3, img_size, img_size, device=next(model.parameters()).device)
        macs, params = tp.utils.count_ops_and_params(model.eval(), example)
        weights = b"".join(p.detach().float().cpu().numpy().tobytes() for p in model.parameters())
        return cls(parameters=int(params), nonzero=sum(int(torch.count_nonzero(p)) for p in model.parameters()),
                   macs=int(macs), weights_gzip_bytes=len(gzip.compress(weights, compresslevel=6)))


# The exporter's pruning (the reference thesis's prune-u, prune-ug, prune-s), none fine-tuned afterwards.
EXPORT_PRUNING: dict[str, Callable[[YOLO, float, int], YOLO]] = {
    "unstructured": lambda model, ratio, _: zero_weights(model, ratio=ratio, scope="layer"),
    "global": lambda model, ratio, _: zero_weights(model, ratio=ratio, scope="global"),
    "structured": lambda model, ratio, img_size: prune_channels(model, ratio=ratio, method="l1", img_size=img_size),
}


@dataclass(frozen=True)
class PrunedCheckpoint:
    path: Path
    before: ModelCost
    after: ModelCost


def prune_checkpoint(checkpoint: Path, out: Path, *, kind: str, ratio: float, img_size: int) -> PrunedCheckpoint:
    """`checkpoint`'s inference weights pruned as `kind` of `EXPORT_PRUNING` says, written to `out`,
    with what the model cost before and after."""
    model = load_model(checkpoint)
    before = ModelCost.of(model, img_size)
    model = EXPORT_PRUNING[kind](model, ratio, img_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, {"model_spec": model.spec.to_dict(), "model": model.state_dict(),
                          "pruning": {"kind": kind, "ratio": ratio, "from": str(checkpoint)}})
    return PrunedCheckpoint(path=out, before=before, after=ModelCost.of(model, img_size))
