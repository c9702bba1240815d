"""Knowledge distillation: the registry of methods (torch-free) and the one way to build one.

    from trainables.kd import KD_METHODS, build_distiller

The registry (`trainables.kd.registry`) declares each method: `none` (the baseline), `output`
(Mehta & Ozturk 2018), `feature` (Wang et al. 2019), `cwd` (Shu et al. 2021), `pkd` (Cao et al.
2022). The torch side (`Distiller`, `build_distiller`) is imported on first use, so reading the
registry never imports torch.
"""
from __future__ import annotations

from trainables.kd.registry import (KD_METHODS, KDConfigError, KDMethod, distilling_methods, kd_method,
                                    register_kd_method)

__all__ = ["KD_METHODS", "DistillContext", "Distiller", "KDConfigError", "KDMethod", "build_distiller",
           "distilling_methods", "kd_method", "register_kd_method"]

_TORCH_SIDE = {"Distiller", "DistillContext", "build_distiller"}


def __getattr__(name: str):
    if name in _TORCH_SIDE:
        from trainables.kd import base

        return getattr(base, name)
    raise AttributeError(f"module 'trainables.kd' has no attribute {name!r}")
