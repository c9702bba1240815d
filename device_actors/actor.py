"""The board's latency actor: one per board, timing one artifact at a time for every sweep.

Measurements run in Ray's default concurrency group with `max_concurrency=1` and synchronous
methods, so two timings never overlap. Status queries (`lookup`, `announce`, `status`) run in
their own small group so a sweep can ask about the board while it is busy; they only read
state under a lock. The class is plain Python: the driver wraps it with `ray.remote` and the
placement options (see `device_actors.client`), and tests can run it in-process.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import ray

from detection.packed import PackedSplit
from device_actors.accuracy import evaluate_artifact
from device_actors.cache import SCORE_FILE, JsonLinesCache, LatencyCache
from device_actors.detect import Detected, detect
from device_actors.graph_reuse import GraphIndex
from device_actors.journal import InFlightJournal
from device_actors.ledger import QueueLedger, QueueSnapshot, Ticket
from device_actors.measure import emulation_of, measure_artifact, verify_artifact
from device_actors.naming import check_board_name
from device_actors.report import LatencyReport, MeasureRequest
from device_actors.runtimes import Session, check_runtimes, get_runtime
from device_actors.sysinfo import board_facts

log = logging.getLogger(__name__)

STATUS_GROUP = "status"
CACHE_ENV = "EDGESWEEP_BOARD_CACHE"  # overrides the cache directory on the board
PROJECT_CACHE_ENV = "EDGESWEEP_CACHE"  # the project's cache root (data, teachers); the board cache sits below it
RECENT_RESULTS = 10


def default_cache_dir(board: str, emulated: bool) -> Path:
    project = Path(os.environ.get(PROJECT_CACHE_ENV) or Path.home() / ".cache" / "edgesweep")
    root = Path(os.environ.get(CACHE_ENV) or project / "board")
    return root / (f"emulated-{board}" if emulated else board)


def current_node_id() -> str:
    """The Ray node id inside a Ray worker; 'local' when run in-process (tests, benchmarks)."""
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


@dataclass(frozen=True)
class BoardStatus:
    board: str
    node_id: str
    emulated: bool
    pid: int
    up_since: float
    cache_path: str
    cache_entries: int
    measured: int  # timed since the actor (re)started
    cache_hits: int
    queue: QueueSnapshot
    recent: tuple[LatencyReport, ...]  # newest last
    facts: dict  # as of the actor's start; every report carries its own
    runtime_versions: dict
    emulation: str | None = None  # see LatencyReport.emulation


class BoardLatencyActor:
    """Times artifacts on the machine it lives on; `measure` runs one at a time (default group)."""

    def __init__(self, board: str, emulated: bool = False, cache_dir: str | None = None, max_attempts: int = 3):
        logging.getLogger("device_actors").setLevel(logging.INFO)
        self._board = check_board_name(board)
        self._emulated = emulated
        directory = Path(cache_dir) if cache_dir else default_cache_dir(board, emulated)
        self._cache = LatencyCache(directory)
        self._graphs = GraphIndex(directory)
        self._scores = JsonLinesCache(directory / SCORE_FILE, "score", encode=dict, decode=dict)
        self._ledger = QueueLedger()
        self._lock = threading.Lock()
        self._recent: deque[LatencyReport] = deque(maxlen=RECENT_RESULTS)
        self._measured = 0
        self._cache_hits = 0
        self._node_id = current_node_id()
        self._detector: tuple[str, Session] | None = None  # the last artifact `detect` loaded, by request key
        self._journal = InFlightJournal(directory, max_attempts=max_attempts, node_id=self._node_id)
        self._up_since = time.time()
        # Read once: status queries run beside measurements and should cost them nothing.
        facts = board_facts()
        self._facts = facts.to_dict()
        self._emulation = emulation_of(facts, emulated)
        # Each runtime's import is tried in a child first: one that crashes (onnxruntime under qemu with
        # an x86 /proc/cpuinfo) is a named error for its artifacts, never a crash loop of this actor.
        self._runtimes = check_runtimes()
        self._runtime_versions = self._runtimes.versions
        for name, problem in self._runtimes.problems.items():
            log.error("board %r cannot run %s artifacts: %s", board, name, problem)
        log.info("board actor %r up on node %s (pid %d, emulated: %s, cache %s)", board, self._node_id,
                 os.getpid(), self._emulation or "no", self._cache.path)

    def _version(self, request: MeasureRequest) -> str:
        return self._runtimes.require(request.runtime, f"board {self._board!r}")

    def _key(self, request: MeasureRequest) -> str:
        return request.cache_key(self._version(request))

    def _remember(self, report: LatencyReport) -> LatencyReport:
        if report.cached and self._emulation and not report.emulation:  # cached before emulation was labelled
            report = dataclasses.replace(report, emulated=True, emulation=self._emulation)
        with self._lock:
            self._recent.append(report)
            if report.cached:
                self._cache_hits += 1
            else:
                self._measured += 1
        return report

    def measure(self, request: MeasureRequest, model: bytes, ticket_id: str | None = None,
                refresh: bool = False) -> LatencyReport:
        """Time `model` (bytes, usually an ObjectRef Ray resolved) or answer from the cache, or with
        the measurement of an artifact with the same graph (`device_actors.graph_reuse`).

        `refresh` times it again and replaces the cached report (after a firmware or BSP update).
        """
        self._ledger.start(ticket_id, request.describe())
        try:
            verify_artifact(model, request.artifact_sha256)
            key = self._key(request)
            cached = None if refresh else self._cache.get(key)
            if cached is not None:
                log.info("cache hit for %s", request.describe())
                return self._remember(cached)
            graph = self._graphs.match(request, model, self._version(request), refresh=refresh)
            if graph is not None and graph.reusable and not graph.recheck:
                self._cache.put(key, graph.reuse(request))
                log.info("%s has the graph of artifact %s, timed before: its measurement is reused",
                         request.describe(), graph.earlier.artifact_sha256[:12])
                return self._remember(self._cache.get(key))
            with self._journal.guard(key, request.describe()):  # its end is not reached when the process dies
                report = measure_artifact(model, request, board=self._board, node_id=self._node_id,
                                          emulated=self._emulated)
            if graph is not None:
                report = self._graphs.timed(graph, report, request)
            self._cache.put(key, report)
            log.info("%s: median %.3f ms (CV %.1f%%)", request.describe(), report.median_ms, 100 * report.cv)
            return self._remember(report)
        finally:
            self._ledger.finish()

    def score(self, request: MeasureRequest, model: bytes, split: PackedSplit) -> dict[str, float]:
        """COCO metrics of `model` on this board, run through the runtime, threads and delegate it is
        timed with (an NPU delegate's accuracy loss shows here, not on the export node), on the sweep's
        val images: `split` arrives once through the object store and is unpacked into the cache."""
        self._ledger.start(None, f"scoring {request.describe()}")
        try:
            verify_artifact(model, request.artifact_sha256)
            key = f"{split.sha256}:{self._key(request)}"
            scores = self._scores.get(key)
            if scores is None:
                data = split.unpack(self._cache.path.parent)
                with self._journal.guard(f"score:{key}", f"scoring {request.describe()}"):
                    m = evaluate_artifact(model, request.runtime, data, options=request.options).metrics
                scores = {"map50_95": m.map50_95, "map50": m.map50, "precision": m.precision, "recall": m.recall,
                          "images": float(len(data))}
                self._scores.put(key, scores)
                log.info("%s on %d val images: mAP@.5:.95 %.4f", request.describe(), len(data), m.map50_95)
            return scores
        finally:
            self._ledger.finish()

    def detect(self, request: MeasureRequest, model: bytes, frames: list, conf: float) -> list[Detected]:
        """Run `model` on this board over `frames` ((H, W, 3) uint8 RGB) and return what it finds, as
        `orchestrator detect --board` shows it. Serial with measurements (default group), so it never
        disturbs a timing; the session stays loaded for the next batch of the same artifact."""
        self._ledger.start(None, f"detecting with {request.describe()} on {len(frames)} frame(s)")
        try:
            key = self._key(request)
            with self._journal.guard(f"detect:{key}", f"detecting with {request.describe()}"):
                if self._detector is None or self._detector[0] != key:
                    verify_artifact(model, request.artifact_sha256)
                    self._detector = (key, get_runtime(request.runtime).load(model, request.options))
                return [detect(self._detector[1], frame, conf=conf) for frame in frames]
        finally:
            self._ledger.finish()

    @ray.method(concurrency_group=STATUS_GROUP)
    def lookup(self, request: MeasureRequest) -> LatencyReport | None:
        """The cached report for `request`, without sending the artifact."""
        report = self._cache.get(self._key(request))
        return self._remember(report) if report is not None else None

    @ray.method(concurrency_group=STATUS_GROUP)
    def announce(self, ticket: Ticket) -> None:
        self._ledger.announce(ticket)

    @ray.method(concurrency_group=STATUS_GROUP)
    def status(self) -> BoardStatus:
        with self._lock:
            recent, measured, hits = tuple(self._recent), self._measured, self._cache_hits
        return BoardStatus(board=self._board, node_id=self._node_id, emulated=self._emulation is not None,
                           emulation=self._emulation, pid=os.getpid(),
                           up_since=self._up_since, cache_path=str(self._cache.path), cache_entries=len(self._cache),
                           measured=measured, cache_hits=hits, queue=self._ledger.snapshot(), recent=recent,
                           facts=self._facts, runtime_versions=self._runtime_versions)
