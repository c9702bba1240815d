"""How close two float32 results of the same computation must be.

Two float32 evaluations of one network differ by rounding that grows with the magnitude of what is
summed, not with each output element: a box coordinate of 900 px carries an ulp of 6e-5 and a
convolution's rounding is relative to its largest terms. So the tolerance is a number of float32
ulps of the largest expected value, the same for every element of the array.
"""
from __future__ import annotations

import numpy as np

FLOAT32_EPS = float(np.finfo(np.float32).eps)  # 1.19e-7


def float32_atol(expected: np.ndarray, *, ulps: float = 64) -> float:
    """`ulps` float32 ulps of the largest magnitude in `expected` (at least of 1.0)."""
    scale = max(float(np.abs(expected).max(initial=0.0)), 1.0)
    return ulps * FLOAT32_EPS * scale


def assert_float32_close(got: np.ndarray, expected: np.ndarray, *, ulps: float = 64) -> None:
    np.testing.assert_allclose(got, expected, rtol=0, atol=float32_atol(expected, ulps=ulps))
