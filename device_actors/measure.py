"""One latency measurement of one artifact, as the deployed program would run it.

Order matters: load the session, run once (a delegate compiles its graph here, so that run is
reported as `first_run_ms` and never enters the statistics), warm up and time inference under
the protocol, and only then time pre- and post-processing, so their work cannot disturb the
inference numbers. Pre-processing is `letterbox` + `to_input` of a camera-sized frame, and
post-processing is `postprocess` of the model's real output for that frame: the same functions
the evaluator uses.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from common.errors import UserError
from detection.letterbox import letterbox, to_input
from detection.postprocess import postprocess
from device_actors.memory import PeakRssTracker
from device_actors.quiet import quiet
from device_actors.report import LatencyReport, MeasureRequest
from device_actors.runtimes import RUNTIMES, check_runtimes, get_runtime
from device_actors.sysinfo import BoardFacts, SystemRoots, ThermalSnapshot, board_facts, thermal_snapshot
from device_actors.timing import TimingProtocol, time_call

log = logging.getLogger(__name__)

# Pre/post-processing are cheap and secondary: fewer runs than the inference protocol.
AUX_PROTOCOL = TimingProtocol(warmup_runs=3, min_runs=20, min_seconds=0.2, max_runs=500)


class ArtifactError(UserError, ValueError):
    """Artifact bytes that do not match their hash, or a model that is not a detector."""


@dataclass(frozen=True)
class WarningLimits:
    """When a measurement is flagged as untrustworthy."""
    cv: float = 0.05  # run-to-run coefficient of variation
    temperature_c: float = 80.0  # i.MX8M Plus starts passive cooling at 85 degC
    temperature_rise_c: float = 15.0
    frequency_drop: float = 0.05  # relative drop of the mean CPU frequency during the run


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sniff_runtime(model: bytes) -> str:
    """The first registered runtime that recognises the bytes as its file (e.g. 'tflite' for a TFLite
    flatbuffer)."""
    for runtime in RUNTIMES.values():
        if runtime.recognises(model):
            return runtime.name
    raise ArtifactError(f"no registered runtime ({', '.join(RUNTIMES)}) recognises these {len(model)} bytes as "
                        f"its file; name the runtime")


def verify_artifact(model: bytes, expected_sha256: str) -> None:
    actual = sha256_hex(model)
    if actual != expected_sha256:
        raise ArtifactError(f"artifact bytes hash to sha256 {actual[:16]}..., the request says "
                            f"{expected_sha256[:16]}...: refusing to time a different model")


def installed_runtime_versions() -> dict[str, str]:
    """Versions of every runtime this machine can load, for the report and `board status`."""
    return check_runtimes().versions


def camera_frame(height_width: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A deterministic (H, W, 3) uint8 frame: pre-processing cost depends on its size only."""
    return np.random.default_rng(seed).integers(0, 256, (*height_width, 3), dtype=np.uint8)


def _preprocessor(frame: np.ndarray, input_hw: tuple[int, int]) -> Callable[[], np.ndarray]:
    height, width = input_hw
    size = max(height, width)

    def preprocess() -> np.ndarray:
        x = to_input(letterbox(frame, size)[0])
        return x if (height, width) == (size, size) else np.ascontiguousarray(x[:, :, :height, :width])
    return preprocess


def _check_output(output: np.ndarray, request: MeasureRequest) -> np.ndarray:
    if output.ndim != 3 or output.shape[0] != 1 or output.shape[2] <= 5:
        raise ArtifactError(f"{request.describe()} outputs shape {tuple(output.shape)}; the board expects "
                            f"decoded predictions (1, N, 5 + classes)")
    return output[0]


def measurement_warnings(stats_cv: float, start: ThermalSnapshot, end: ThermalSnapshot, facts: BoardFacts,
                         *, emulated: bool, limits: WarningLimits = WarningLimits(),
                         quiet: bool | None = None) -> list[str]:
    """Why a number may not be trusted: noise, training beside it, throttling, frequency scaling, or no
    real board."""
    out = []
    if stats_cv > limits.cv:
        out.append(f"high run-to-run variation: CV {stats_cv:.1%} > {limits.cv:.0%}; something else may be "
                   f"running on the board")
    if quiet is False:
        out.append("not quiet: a training process on the board's machine ran during the timing (it did not pause "
                   "at a batch boundary within board.timing.quiet_wait_s)")
    if (start.frequency_mhz and end.frequency_mhz
            and end.frequency_mhz < start.frequency_mhz * (1 - limits.frequency_drop)):
        out.append(f"CPU frequency dropped from {start.frequency_mhz:.0f} to {end.frequency_mhz:.0f} MHz during "
                   f"the run: throttled")
    if start.max_frequency_mhz and end.max_frequency_mhz and end.max_frequency_mhz < start.max_frequency_mhz:
        out.append(f"CPU frequency cap fell from {start.max_frequency_mhz:.0f} to {end.max_frequency_mhz:.0f} MHz "
                   f"during the run: thermal throttling")
    if end.temperature_c is not None and end.temperature_c >= limits.temperature_c:
        out.append(f"SoC at {end.temperature_c:.1f} degC (limit {limits.temperature_c:.0f}): throttling likely; "
                   f"add a heatsink or a cooldown")
    elif (start.temperature_c is not None and end.temperature_c is not None
          and end.temperature_c - start.temperature_c >= limits.temperature_rise_c):
        out.append(f"SoC temperature rose {end.temperature_c - start.temperature_c:.1f} degC during the run")
    if facts.governor and facts.governor != "performance":
        out.append(f"CPU governor is {facts.governor!r}, not 'performance': frequency scaling adds variation")
    if facts.emulation:
        out.append(f"emulated board: timed under {facts.emulation}, at emulation speed, not on the target board")
    elif emulated:
        out.append(f"emulated board: timed on the local {facts.cpu_model}, not on the target board")
    return out


def emulation_of(facts: BoardFacts, stand_in: bool) -> str | None:
    """What emulated the board, in words; None on the board itself."""
    if facts.emulation:
        return facts.emulation
    return f"stand-in: the driver's machine ({facts.cpu_model})" if stand_in else None


def measure_artifact(model: bytes, request: MeasureRequest, *, board: str, node_id: str, emulated: bool,
                     roots: SystemRoots = SystemRoots(), limits: WarningLimits = WarningLimits()) -> LatencyReport:
    """Time `model` (bytes whose sha256 is `request.artifact_sha256`) under `request`."""
    verify_artifact(model, request.artifact_sha256)
    runtime = get_runtime(request.runtime)
    protocol = request.protocol
    if protocol.cooldown_seconds:
        time.sleep(protocol.cooldown_seconds)  # before the first thermal reading, so it sees the cooled SoC
    with quiet(protocol.quiet_wait_s, what=f"{request.describe()} on {board}") as fence:
        facts = board_facts(roots)
        thermal_start = thermal_snapshot(roots)
        started_at = time.time()
        memory = PeakRssTracker()
        memory.start()

        t0 = time.perf_counter()
        session = runtime.load(model, request.options)
        load_ms = (time.perf_counter() - t0) * 1e3
        frame = camera_frame(request.camera_hw)
        preprocess = _preprocessor(frame, session.input_hw)
        image = preprocess()
        t0 = time.perf_counter()
        prediction = _check_output(session.run(image), request)
        first_run_ms = (time.perf_counter() - t0) * 1e3
        stats, _ = time_call(lambda: session.run(image), dataclasses.replace(protocol, cooldown_seconds=0.0))
        peak_mb = memory.increase_mb()

        pre_stats, _ = time_call(preprocess, AUX_PROTOCOL)
        post_stats, _ = time_call(lambda: postprocess(prediction), AUX_PROTOCOL)
        thermal_end = thermal_snapshot(roots)
        ended_at = time.time()
        fence.held()
    input_hw = session.input_hw

    warnings = measurement_warnings(stats.cv, thermal_start, thermal_end, facts, emulated=emulated, limits=limits,
                                    quiet=fence.quiet)
    for w in warnings:
        log.warning("%s on %s: %s", request.describe(), board, w)
    version = runtime.version()
    emulation = emulation_of(facts, emulated)
    return LatencyReport(
        board=board, node_id=node_id, emulated=emulation is not None, emulation=emulation, cached=False, artifact_sha256=request.artifact_sha256,
        runtime=request.runtime, runtime_version=version, threads=request.options.threads,
        providers=tuple(request.options.providers), delegate=request.options.delegate,
        input_hw=(int(input_hw[0]), int(input_hw[1])), **dataclasses.asdict(stats), load_ms=load_ms,
        first_run_ms=first_run_ms, preprocess_ms=pre_stats.median_ms,
        postprocess_ms=post_stats.median_ms, camera_hw=tuple(request.camera_hw), peak_rss_increase_mb=peak_mb,
        temperature_start_c=thermal_start.temperature_c, temperature_end_c=thermal_end.temperature_c,
        frequency_start_mhz=thermal_start.frequency_mhz, frequency_end_mhz=thermal_end.frequency_mhz,
        protocol=dataclasses.asdict(protocol), facts=facts.to_dict(),
        runtime_versions=installed_runtime_versions(), started_at=started_at, ended_at=ended_at,
        warnings=tuple(warnings), quiet=fence.quiet, paused_trainers=fence.paused, quiet_wait_s=fence.waited_s,
        **_delegation(session))


def _delegation(session) -> dict:
    """What the session's interpreter delegated, for runtimes that say (`LiteRtSession.delegation`)."""
    taken = getattr(session, "delegation", None)
    if taken is None:
        return {}
    return {"delegated_ops": taken.delegated_ops, "delegate_partitions": taken.partitions,
            "ops_in_graph": taken.ops}
