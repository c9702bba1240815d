"""`inspect MODEL [--npu PROFILE]`: a model's operators in graph order, where each would run under a
delegate's profile and why not on its accelerator, then one summary line:
`delegated D of N ops in P partitions; F fall back` (P counts maximal runs of consecutive delegated
operators: `device_actors.npu.placement`). No torch: it runs on the board as well as here."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.errors import UserError
from device_actors.npu.profiles import DEFAULT_PROFILE


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="list a model's operators and where each runs under an NPU profile")
    p.add_argument("model", type=Path, help="a .tflite (operators placed under the profile) or .onnx file")
    p.add_argument("--npu", default=DEFAULT_PROFILE, metavar="PROFILE",
                   help="a shipped profile (vx: the i.MX8M Plus VX delegate; xnnpack: LiteRT's CPU delegate) or a "
                        f"profile .yaml of your own (schema: device_actors/npu/profiles.py); default {DEFAULT_PROFILE}")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from device_actors.npu import ModelReadError, load_profile, model_placement

    profile = load_profile(args.npu)
    path: Path = args.model
    if not path.is_file():
        raise UserError(f"{path}: no such model file")
    try:
        placement = model_placement(path.read_bytes(), profile)
    except ModelReadError as e:
        raise UserError(f"{path}: not a model file this command reads (.tflite, .onnx): {e}") from None
    sys.stdout.write(placement.table())
    return 0
