"""Checkpoints: one self-describing file per training run, loaded with `weights_only=True`.

A checkpoint holds the model spec, the EMA weights used for inference and export, and everything
needed to resume training exactly (raw weights, optimizer, scaler, EMA counter, epoch, history).
Only tensors and plain Python values go in, so loading never unpickles code.
"""
from __future__ import annotations

from pathlib import Path

import torch

from common.atomic import replacing
from common.errors import UserError
from trainables.models.yolo import YOLO, ModelSpec, build_model

FORMAT = "edgesweep-checkpoint/1"


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, unreadable, or not the model the caller expects."""


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write atomically: a crash mid-write never leaves a truncated checkpoint behind."""
    with replacing(path) as tmp:
        torch.save({"format": FORMAT, **payload}, tmp)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a usable checkpoint"
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an EdgeSweep checkpoint (expected format {FORMAT!r})")
    missing = [key for key in ("model_spec", "model") if not isinstance(ckpt.get(key), dict)]
    if missing:
        raise CheckpointError(f"{path}: an EdgeSweep checkpoint without {' or '.join(missing)}; it is damaged or was "
                              f"not written by EdgeSweep: train or import it again")
    try:
        checkpoint_spec(ckpt)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its model_spec cannot be read ({type(e).__name__}: {e}); it is damaged or "
                              f"was not written by EdgeSweep") from None
    return ckpt


def checkpoint_spec(ckpt: dict) -> ModelSpec:
    return ModelSpec.from_dict(ckpt["model_spec"])


def load_model(path: Path, *, expect: ModelSpec | None = None,
               map_location: str | torch.device = "cpu") -> YOLO:
    """The inference (EMA) weights of a checkpoint, in eval mode.

    With `expect`, a checkpoint of another architecture is refused with both specs named, instead of
    failing later with a shape mismatch deep inside `load_state_dict`.
    """
    ckpt = load_checkpoint(path, map_location)
    spec = checkpoint_spec(ckpt)
    if expect is not None and spec != expect:
        raise CheckpointError(
            f"checkpoint {path} holds a YOLO-{spec.size} with {spec.num_classes} classes, "
            f"but a YOLO-{expect.size} with {expect.num_classes} classes was expected")
    model = build_model(spec)
    model.load_state_dict(ckpt["model"])
    return model.eval()
