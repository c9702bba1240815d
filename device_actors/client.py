"""Driver and trial side of the board: find it, create its actor, send artifacts, wait.

The sweep driver calls `connect_board(name)` once, before `tuner.fit()` (an actor created inside
a trial would be captured by the trial's placement group), and hands the returned `Board` to
trials, or trials look it up with `get_board(name)`. The actor is detached, so every sweep
(driver) shares it and the board's queue stays one queue.

No board, no problem: with `emulate_if_missing=True` and no live node offering `board_<name>`,
the actor runs on the driver's own node instead (pinned there by node affinity, `num_cpus=0`,
owned by the driver so it goes away with it), and every report says `emulated=True`. Nothing
special is needed in `ray.init` for that.
"""
from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from common.errors import UserError
from device_actors.actor import STATUS_GROUP, BoardLatencyActor, BoardStatus
from device_actors.ledger import Ticket
from device_actors.measure import sha256_hex, sniff_runtime
from device_actors.naming import (LABEL_KEY, NAMESPACE, actor_name, board_from_resource, board_resource,
                                  check_board_name, emulated_actor_name)
from detection.packed import PackedSplit
from device_actors.report import DEFAULT_CAMERA_HW, LatencyReport, MeasureRequest
from device_actors.runtimes import RuntimeOptions, runtime_for
from device_actors.timing import TimingProtocol

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 3600.0  # a measurement may wait behind every other trial's
STATUS_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 120.0  # placing the actor: starting a Python worker on a slow board
READY_POLL_S = 5.0
MAX_START_RESTARTS = 3  # deaths before the actor ever answered: it will not come up by itself


class BoardUnavailable(UserError, RuntimeError):
    """No usable board of that name (not joined, gone, or its actor cannot be placed)."""


class BoardTimeout(UserError, TimeoutError):
    """The board did not answer in time."""


def join_hint(name: str) -> str:
    return (f"join one with `python -m orchestrator board join --address HEAD:PORT --name {name}` on the board, "
            f"or use the emulated local board (connect_board(..., emulate_if_missing=True), "
            f"`board bench --emulate`)")


@dataclass(frozen=True)
class BoardNode:
    name: str
    node_id: str
    alive: bool
    address: str
    labelled: bool  # carries the edgesweep/board label, so the actor can also select on it
    death_reason: str = ""


def list_board_nodes() -> list[BoardNode]:
    """Every node offering a `board_*` resource or carrying the board label, alive or not.

    Ray clears a dead node's resources but keeps its labels, so a board that left the cluster
    is still found by its label (boards joined with `board join` always have one).
    """
    out = []
    for node in ray.nodes():
        labels = node.get("Labels") or {}
        names = {n for r in node.get("Resources") or {} if (n := board_from_resource(r)) is not None}
        if labels.get(LABEL_KEY):
            names.add(labels[LABEL_KEY])
        for name in sorted(names):
            out.append(BoardNode(name=name, node_id=node["NodeID"], alive=bool(node.get("Alive")),
                                 address=str(node.get("NodeManagerAddress", "")),
                                 labelled=labels.get(LABEL_KEY) == name,
                                 death_reason=str(node.get("DeathReasonMessage") or "")))
    return out


def _unwrap(error: RayTaskError) -> Exception:
    """The user-facing error raised inside the actor, without Ray's wrapper and traceback."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, UserError) else error


def _caller() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Board:
    """A handle on a board's latency actor; picklable, so it can be passed to trials."""
    name: str
    emulated: bool
    actor: ray.actor.ActorHandle

    def request_for(self, model: bytes | str | Path, *, runtime: str | None = None,
                    options: RuntimeOptions = RuntimeOptions(), protocol: TimingProtocol = TimingProtocol(),
                    camera_hw: tuple[int, int] = DEFAULT_CAMERA_HW) -> tuple[MeasureRequest, bytes]:
        if isinstance(model, (str, Path)):
            path = Path(model)
            runtime = runtime or runtime_for(path.name).name
            model = path.read_bytes()
        runtime = runtime or sniff_runtime(model)
        return MeasureRequest(artifact_sha256=sha256_hex(model), runtime=runtime, options=options,
                              protocol=protocol, camera_hw=tuple(camera_hw)), model

    def submit(self, request: MeasureRequest, model: bytes, *, timeout_s: float = DEFAULT_TIMEOUT_S,
               refresh: bool = False) -> ray.ObjectRef:
        """Queue one measurement; the bytes travel through the object store (the board shares no disk)."""
        now = time.time()
        ticket = Ticket(id=uuid.uuid4().hex, what=request.describe(), caller=_caller(), submitted_at=now,
                        expires_at=now + timeout_s)
        self.actor.announce.remote(ticket)
        return self.actor.measure.remote(request, ray.put(model), ticket.id, refresh)

    def measure(self, model: bytes | str | Path, *, runtime: str | None = None,
                options: RuntimeOptions = RuntimeOptions(), protocol: TimingProtocol = TimingProtocol(),
                camera_hw: tuple[int, int] = DEFAULT_CAMERA_HW, timeout_s: float = DEFAULT_TIMEOUT_S,
                refresh: bool = False) -> LatencyReport:
        """Time an artifact (bytes, or a .onnx/.tflite path) on the board, or get its cached report.

        The cache is asked first, so a known artifact is not even uploaded; `refresh` re-times it.
        """
        request, data = self.request_for(model, runtime=runtime, options=options, protocol=protocol,
                                         camera_hw=camera_hw)
        deadline = time.monotonic() + timeout_s
        if not refresh:
            # Waits as long as the measurement would: a restarting actor answers once it is back.
            cached = self._get(self.actor.lookup.remote(request), timeout_s, request.describe())
            if cached is not None:
                return cached
        remaining = max(deadline - time.monotonic(), 1.0)
        return self.result(self.submit(request, data, timeout_s=remaining, refresh=refresh), timeout_s=remaining,
                           what=request.describe())

    def score(self, model: bytes | str | Path, split: "ray.ObjectRef | PackedSplit", *, runtime: str | None = None,
              options: RuntimeOptions = RuntimeOptions(), timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, float]:
        """COCO metrics of an artifact computed on the board itself (`BoardLatencyActor.score`); pass
        the packed val split as an ObjectRef to send it once for many artifacts."""
        request, data = self.request_for(model, runtime=runtime, options=options)
        ref = self.actor.score.remote(request, ray.put(data), split)
        return self.result(ref, timeout_s=timeout_s, what=f"scoring {request.describe()}")

    def detect(self, request: MeasureRequest, model: "bytes | ray.ObjectRef", frames: list, *, conf: float,
               timeout_s: float = DEFAULT_TIMEOUT_S) -> list:
        """`device_actors.detect.Detected` for each frame, run on the board; pass the artifact as an
        ObjectRef (`ray.put`) to send it once for many batches, and keep batches small (a video's frames
        travel as pixels)."""
        ref = self.actor.detect.remote(request, model, frames, conf)
        return self.result(ref, timeout_s=timeout_s, what=f"detecting with {request.describe()}")

    def result(self, ref: ray.ObjectRef, *, timeout_s: float = DEFAULT_TIMEOUT_S, what: str = "a measurement"):
        """Wait for a submitted measurement; one still queued at the deadline is cancelled (a running one
        cannot be interrupted and finishes into the cache)."""
        try:
            return self._get(ref, timeout_s, what)
        except BoardTimeout:
            try:
                ray.cancel(ref)
            except Exception as e:  # noqa: BLE001 - best effort: the call may already be running
                log.debug("could not cancel %s: %s", what, e)
            raise

    def status(self, timeout_s: float = STATUS_TIMEOUT_S) -> BoardStatus:
        return self._get(self.actor.status.remote(), timeout_s, "a status query")

    def _get(self, ref: ray.ObjectRef, timeout_s: float, what: str):
        try:
            return ray.get(ref, timeout=timeout_s)
        except GetTimeoutError:
            raise BoardTimeout(f"board {self.name!r} did not finish {what} within {timeout_s:.0f} s; "
                               f"`python -m orchestrator board status` shows its queue") from None
        except RayTaskError as e:
            raise _unwrap(e) from None
        except ActorUnavailableError as e:  # restarting (after a crash, or its node came back): try again later
            raise BoardTimeout(f"board {self.name!r} could not take {what}: its actor is restarting ({e})") from None
        except RayActorError as e:
            raise BoardUnavailable(f"the latency actor of board {self.name!r} is gone for good ({e}); "
                                   f"run connect_board({self.name!r}) again") from None


def _actor_class(max_status_threads: int = 2):
    """The actor with its fixed behaviour: serial measurements, endless restarts and retries."""
    return ray.remote(num_cpus=0, max_concurrency=1, concurrency_groups={STATUS_GROUP: max_status_threads},
                      max_restarts=-1, max_task_retries=-1)(BoardLatencyActor)


def _wait_ready(board: Board, timeout_s: float, where: str) -> Board:
    """Wait until the actor answers. One that keeps dying while it starts (a native library crashing
    in its worker) is stopped after MAX_START_RESTARTS, with what Ray knows of the cause."""
    from device_actors._ray_internals import actor_restarts

    deadline = time.monotonic() + timeout_s
    while True:
        asked = time.monotonic()
        poll_s = min(READY_POLL_S, max(deadline - asked, 0.1))
        try:
            board.status(poll_s)
            return board
        except BoardTimeout:  # not up yet, or restarting: the count below decides
            time.sleep(max(asked + poll_s - time.monotonic(), 0))
        restarts, cause = actor_restarts(board.actor)
        if restarts >= MAX_START_RESTARTS:
            ray.kill(board.actor, no_restart=True)
            raise BoardUnavailable(
                f"the latency actor for board {board.name!r} died {restarts} times while starting on {where} and "
                f"was stopped{f' ({cause})' if cause else ''}: its Ray worker exits before the actor is up, "
                f"typically a native library crashing on import or the machine running out of memory; the "
                f"board's Ray worker logs (worker-*.err under /tmp/ray/session_latest/logs there) say which. "
                f"Check that the board can import device_actors (pip install '.[board]')") from None
        if time.monotonic() >= deadline:
            raise BoardUnavailable(f"the latency actor for board {board.name!r} could not start on {where} within "
                                   f"{timeout_s:.0f} s; check that the board can import device_actors "
                                   f"(pip install '.[board]') and its Ray logs") from None


def connect_board(name: str, *, emulate_if_missing: bool = True, namespace: str = NAMESPACE,
                  cache_dir: str | None = None, ready_timeout_s: float = READY_TIMEOUT_S) -> Board:
    """Get or create the latency actor of board `name` (driver side, after `ray.init`).

    `cache_dir` is a directory on the board (default `~/.cache/edgesweep/board/<name>` there, or
    `$EDGESWEEP_BOARD_CACHE`); it only applies when this call creates the actor.
    """
    check_board_name(name)
    if not ray.is_initialized():
        raise BoardUnavailable("Ray is not initialised: call ray.init(address=...) before connect_board()")
    nodes = [n for n in list_board_nodes() if n.name == name]
    live = [n for n in nodes if n.alive]
    if live:
        options = dict(name=actor_name(name), namespace=namespace, get_if_exists=True, lifetime="detached",
                       resources={board_resource(name): 1}, scheduling_strategy="DEFAULT")
        if all(n.labelled for n in live):
            options["label_selector"] = {LABEL_KEY: name}
        actor = _actor_class().options(**options).remote(name, False, cache_dir)
        return _wait_ready(Board(name, False, actor), ready_timeout_s, f"board node {live[0].node_id[:12]}")
    state = "left the cluster (its node is dead)" if nodes else "is not in the cluster"
    if not emulate_if_missing:
        raise BoardUnavailable(f"no board named {name!r}: it {state}; {join_hint(name)}")
    here = ray.get_runtime_context().get_node_id()
    log.warning("board %r %s: timing on an emulated board on this machine (node %s); every report says "
                "emulated=True", name, state, here[:12])
    actor = _actor_class().options(
        name=emulated_actor_name(name), namespace=namespace, get_if_exists=True,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False)).remote(name, True, cache_dir)
    return _wait_ready(Board(name, True, actor), ready_timeout_s, "this machine")


def get_board(name: str, *, namespace: str = NAMESPACE) -> Board:
    """The actor the driver created, looked up by name (inside trials: never creates one)."""
    for emulated, actor_id in ((False, actor_name(name)), (True, emulated_actor_name(name))):
        try:
            return Board(name, emulated, ray.get_actor(actor_id, namespace=namespace))
        except ValueError:
            continue
    raise BoardUnavailable(f"no latency actor for board {name!r} in namespace {namespace!r}: the sweep driver "
                           f"creates it with connect_board({name!r}) before the trials start; {join_hint(name)}")
