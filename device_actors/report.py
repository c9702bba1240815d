"""What a latency measurement asks for and what it returns.

Both are frozen dataclasses of plain values, so they cross Ray's object store, land in MLflow
params and JSON files, and compare equal after a round trip. The request's `cache_key` is the
identity of a measurement: the same artifact bytes, runtime (and its version), threads and
delegate, timing protocol and camera size give the same number, so it is timed only once.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from device_actors.runtimes import RuntimeOptions
from device_actors.timing import TimingProtocol

# A typical camera frame (height, width): pre-processing is timed on an image of this size.
DEFAULT_CAMERA_HW = (480, 640)


@dataclass(frozen=True)
class MeasureRequest:
    artifact_sha256: str
    runtime: str  # a registered runtime's name (device_actors.runtimes)
    options: RuntimeOptions = RuntimeOptions()
    protocol: TimingProtocol = TimingProtocol()
    camera_hw: tuple[int, int] = DEFAULT_CAMERA_HW

    def cache_key(self, runtime_version: str) -> str:
        """A stable string; the model's input size is fixed by the artifact, hence by its hash."""
        return self._key(self.artifact_sha256, runtime_version)

    def graph_cache_key(self, graph_key: str, runtime_version: str) -> str:
        """The key of every artifact with this graph (`Runtime.graph_key`) timed the same way."""
        return self._key(f"graph:{graph_key}", runtime_version)

    def _key(self, artifact: str, runtime_version: str) -> str:
        return json.dumps([artifact, self.runtime, runtime_version, self.options.key(), self.protocol.key(),
                           list(self.camera_hw)], separators=(",", ":"))

    def describe(self) -> str:
        return (f"{self.runtime} artifact {self.artifact_sha256[:12]} threads={self.options.threads}"
                + (f" delegate={self.options.delegate}" if self.options.delegate else ""))


@dataclass(frozen=True)
class LatencyReport:
    """One artifact timed on one board; all times in milliseconds, timestamps in Unix seconds."""
    board: str
    node_id: str
    emulated: bool  # not the target board's own timing: a stand-in machine or an emulator
    cached: bool
    artifact_sha256: str
    runtime: str
    runtime_version: str
    threads: int
    providers: tuple[str, ...]
    delegate: str | None
    input_hw: tuple[int, int]
    # the inference itself, over the timed runs
    runs: int
    median_ms: float
    mean_ms: float
    p90_ms: float
    p99_ms: float
    std_ms: float
    cv: float
    fps: float
    # what surrounds it
    load_ms: float  # session creation (graph optimisation, delegate set-up)
    first_run_ms: float  # the first inference, where a delegate compiles its graph; never in the stats
    preprocess_ms: float  # median of letterbox + to_input on a camera-sized frame
    postprocess_ms: float  # median of decode-free NMS post-processing of the model's real output
    camera_hw: tuple[int, int]
    peak_rss_increase_mb: float | None
    temperature_start_c: float | None
    temperature_end_c: float | None
    frequency_start_mhz: float | None
    frequency_end_mhz: float | None
    protocol: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)
    runtime_versions: dict = field(default_factory=dict)
    started_at: float = 0.0
    ended_at: float = 0.0
    warnings: tuple[str, ...] = ()
    emulation: str | None = None  # what stood in: "qemu-aarch64 (cortex-a53)", or the local stand-in
    # Another artifact's measurement, given because its graph is this one's (`Runtime.graph_key`):
    # the sha256 of the artifact actually timed; None when this artifact was timed itself.
    reused_from: str | None = None
    # A sampled re-time of a reused measurement: what it was compared with and whether they agree
    # (`device_actors.graph_reuse.Recheck`, as a dict); None otherwise.
    recheck: dict | None = None
    # Whether the board's machine was quiet: no EdgeSweep training process there ran while this was
    # timed (True also where none trains there); None when the board did not ask (quiet_wait_s 0).
    quiet: bool | None = None
    paused_trainers: int = 0  # training processes on the board's machine that paused for this timing
    quiet_wait_s: float = 0.0  # how long the board waited for them to pause
    # What the board's interpreter delegated (`device_actors.npu.delegated`): operators taken by a delegate
    # (board.delegate, or LiteRT's default XNNPACK) and the partitions (DELEGATE nodes) they ran in, of ops_in_graph;
    # None for runtimes without delegates
    delegated_ops: int | None = None
    delegate_partitions: int | None = None
    ops_in_graph: int | None = None

    def to_dict(self) -> dict:
        """JSON-ready: tuples become lists."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> "LatencyReport":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown LatencyReport keys {unknown}; known keys: {sorted(known)}")
        values = dict(data)
        for name in ("providers", "input_hw", "camera_hw", "warnings"):
            if name in values and values[name] is not None:
                values[name] = tuple(values[name])
        return cls(**values)
