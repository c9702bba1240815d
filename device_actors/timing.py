"""The timing protocol, after TFLite's benchmark_model and MLPerf practice.

Warm-up runs first (caches, lazy allocation, a delegate's first-run compile), then timed runs until
both a minimum count and a minimum duration are reached, so fast models get enough samples and
slow ones do not run forever. Medians and tail percentiles, not means, are the headline numbers.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Callable

import numpy as np
from pydantic import Field


@dataclass(frozen=True)
class TimingProtocol:
    """How the board times an artifact (the sweep file's `board.timing`; pydantic reads the bounds)."""

    __pydantic_config__ = {"extra": "forbid"}
    warmup_runs: Annotated[int, Field(ge=0, description="untimed runs first")] = 10
    min_runs: Annotated[int, Field(ge=1, description="timed runs at least")] = 50
    min_seconds: Annotated[float, Field(ge=0, description="seconds of timed runs at least")] = 2.0
    max_runs: Annotated[int, Field(ge=1, description="timed runs at most (>= min_runs)")] = 10_000
    cooldown_seconds: Annotated[float, Field(ge=0, description="a pause before each model, so heat from the last "
                                             "one does not carry over")] = 0.0
    # When to time at all, and when: these leave a measurement's number alone, so they are not in `key`.
    reuse_graphs: Annotated[bool, Field(description=(
        "an artifact whose graph this board timed before (same operators, shapes and quantization layout; other "
        "weight, scale and zero-point values), with the same runtime, threads and protocol, gets that measurement "
        "(its report names the artifact timed in reused_from); false for boards whose kernels depend on weight "
        "values (sparse kernels)"))] = True
    recheck_every: Annotated[int, Field(ge=0, description=(
        "time every Nth reused measurement again anyway; a difference of medians beyond the two measurements' "
        "spreads (p90 - median each) is logged, recorded in the report (recheck) and stops the reuse of that graph "
        "on that board (0: never)"))] = 5
    quiet_wait_s: Annotated[float, Field(ge=0, description=(
        "before timing, wait up to this long for EdgeSweep training processes on the board's machine to pause at "
        "a batch boundary (they resume after it); past it the report says quiet: false. A board on a machine of "
        "its own waits for nothing (0: do not ask)"))] = 60.0

    def key(self) -> tuple:
        """What decides the measurement itself (the latency cache key)."""
        return (self.warmup_runs, self.min_runs, self.min_seconds, self.max_runs, self.cooldown_seconds)


@dataclass(frozen=True)
class LatencyStats:
    runs: int
    median_ms: float
    mean_ms: float
    p90_ms: float
    p99_ms: float
    std_ms: float
    cv: float  # std / mean
    fps: float  # 1000 / median

    @classmethod
    def from_samples(cls, samples_ms: np.ndarray) -> "LatencyStats":
        s = np.asarray(samples_ms, dtype=np.float64)
        median, mean, std = float(np.median(s)), float(s.mean()), float(s.std())
        return cls(runs=len(s), median_ms=median, mean_ms=mean, p90_ms=float(np.percentile(s, 90)),
                   p99_ms=float(np.percentile(s, 99)), std_ms=std, cv=std / mean if mean else 0.0,
                   fps=1000.0 / median if median else 0.0)


def time_call(fn: Callable[[], object], protocol: TimingProtocol) -> tuple[LatencyStats, np.ndarray]:
    """Time `fn` under the protocol; returns the statistics and the raw samples in ms."""
    if protocol.cooldown_seconds:
        time.sleep(protocol.cooldown_seconds)
    for _ in range(protocol.warmup_runs):
        fn()
    samples = []
    started = time.perf_counter()
    while len(samples) < protocol.max_runs:
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
        if len(samples) >= protocol.min_runs and time.perf_counter() - started >= protocol.min_seconds:
            break
    arr = np.asarray(samples)
    return LatencyStats.from_samples(arr), arr
