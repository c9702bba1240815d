"""A graph timed once: the board's index of the graphs it timed, by graph and how it was timed.

A dense network runs as fast with any weights, so an artifact whose graph (`Runtime.graph_key`:
operators, shapes, quantization layout, never weight or scale values) was timed on this board with
the same runtime version, options, protocol and camera size gets that measurement: the report is
the timed artifact's, with this artifact's hash and `reused_from` naming the one timed. Every
`recheck_every`-th such reuse is timed anyway and compared; a difference beyond the two
measurements' spread is logged, recorded in the report and ends the reuse of that graph on this
board (its entry keeps the verdict until a refresh). `board.timing.reuse_graphs: false` turns it
off for boards whose kernels depend on weight values.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from device_actors.cache import LatencyCache
from device_actors.report import LatencyReport, MeasureRequest
from device_actors.runtimes import graph_key

log = logging.getLogger(__name__)

GRAPH_FILE = "graph-cache.jsonl"


@dataclass(frozen=True)
class Recheck:
    """A reused measurement timed again: the report's `recheck`, as a dict."""

    of: str  # sha256 of the artifact whose measurement was reused
    median_ms: float  # that measurement's median
    difference_ms: float  # this median minus that one
    spread_ms: float  # the two measurements' spreads added up, each its p90 - median (robust to a rare stall)
    agrees: bool  # |difference| <= spread

    @classmethod
    def compare(cls, fresh: LatencyReport, earlier: LatencyReport) -> Recheck:
        difference = fresh.median_ms - earlier.median_ms
        spread = sum(max(r.p90_ms - r.median_ms, 0.0) for r in (fresh, earlier))
        return cls(of=earlier.artifact_sha256, median_ms=earlier.median_ms, difference_ms=difference,
                   spread_ms=spread, agrees=abs(difference) <= spread)


@dataclass(frozen=True)
class GraphMatch:
    """What the index knows of one request's graph."""

    key: str  # the graph cache key
    earlier: LatencyReport | None  # the measurement of an artifact with this graph, if any
    recheck: bool  # this reuse is sampled: time it anyway and compare

    @property
    def reusable(self) -> bool:
        return self.earlier is not None and (self.earlier.recheck is None or self.earlier.recheck["agrees"])

    def reuse(self, request: MeasureRequest) -> LatencyReport:
        return dataclasses.replace(self.earlier, artifact_sha256=request.artifact_sha256,
                                   reused_from=self.earlier.artifact_sha256, recheck=None)


class GraphIndex:
    """Graph cache key -> the report of the artifact timed for it, on the board's disk."""

    def __init__(self, directory: Path):
        self._cache = LatencyCache(directory, GRAPH_FILE)
        self._reuses = 0  # since the actor started: every recheck_every-th is re-timed

    def match(self, request: MeasureRequest, model: bytes, runtime_version: str, *,
              refresh: bool = False) -> GraphMatch | None:
        """None where the request turns reuse off or the runtime cannot read the graph."""
        if not request.protocol.reuse_graphs:
            return None
        graph = graph_key(request.runtime, model)
        if graph is None:
            return None
        key = request.graph_cache_key(graph, runtime_version)
        earlier = None if refresh else self._cache.get(key)
        match = GraphMatch(key, earlier, recheck=False)
        if not match.reusable:
            return match
        self._reuses += 1
        every = request.protocol.recheck_every
        return dataclasses.replace(match, recheck=bool(every) and self._reuses % every == 0)

    def timed(self, match: GraphMatch, report: LatencyReport, request: MeasureRequest) -> LatencyReport:
        """Record `report`, just timed, for its graph; a sampled recheck is compared with the reused
        measurement first, and the report says how they compare."""
        if match.recheck:
            check = Recheck.compare(report, match.earlier)
            report = dataclasses.replace(report, recheck=dataclasses.asdict(check))
            if check.agrees:
                log.info("%s re-timed: median %.3f ms, within %.3f ms of the reused %.3f ms", request.describe(),
                         report.median_ms, check.spread_ms, check.median_ms)
            else:
                warning = (f"re-timed artifact of an already timed graph: median {report.median_ms:.3f} ms against "
                           f"{check.median_ms:.3f} ms for artifact {check.of[:12]}, {check.difference_ms:+.3f} ms, "
                           f"beyond the two measurements' spread of {check.spread_ms:.3f} ms: weight values matter "
                           f"here, so artifacts of this graph are each timed from now on")
                log.warning("%s: %s", request.describe(), warning)
                report = dataclasses.replace(report, warnings=(*report.warnings, warning))
        if match.earlier is None or match.recheck:
            self._cache.put(match.key, report)  # a graph whose recheck disagreed keeps that verdict
        return report
