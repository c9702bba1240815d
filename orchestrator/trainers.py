"""Where training runs: a trainer slot per concurrent training, set up once and reused.

On CPUs a training (a student's, or a teacher's) is a Ray task: Ray keeps its worker process warm
from task to task, so trial after trial trains in the same process on the same decoded data, and
the CPUs go back to the pool of the node between trainings (export and scoring use them too).

A GPU needs more care. A warm task worker keeps the CUDA context, device and memory of its first
task, and Ray reuses one for a GPU task given its GPU through `.options()` (ray-project/ray#30061),
so a GPU task must run in a process of its own, which costs every trial a process start, torch
import and CUDA init. Instead, when `resources.train` names a GPU, each training slot is a
long-lived `Trainer` actor: an actor holds its GPU (and CUDA_VISIBLE_DEVICES) for life, so reusing
it is safe. The sweep's `TrainerPool` lends trainers to trials and teachers, starts one per slot
the cluster has as they are needed, and takes a lent trainer back when its trial ends; a trial
process that dies stops renewing its lease, and the pool then kills that trainer (ending the
orphaned training and freeing its GPU) and starts a fresh one when the next trial asks.
"""
from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

log = logging.getLogger(__name__)

LEASE_TTL_S = 60.0  # a lease not renewed for this long belongs to a dead trial: its trainer is replaced


class StageTask:
    """A stage's Ray task: run in Ray's warm worker processes on CPUs, in a process of its own when
    its options give it a GPU. Ray makes a GPU function's worker exit after each call only when
    `num_gpus` is in its decorator (a warm worker keeps the CUDA context, device and memory of its
    first task: ray-project/ray#30061), not when a GPU comes through `.options()`, which is how
    the sweep's `resources` reach a task; so the GPU variant sets `max_calls=1` itself."""

    def __init__(self, fn: Callable[..., Any], **decorator: Any) -> None:
        self.warm = ray.remote(**decorator)(fn) if decorator else ray.remote(fn)
        self.own_process = ray.remote(max_calls=1, **decorator)(fn)

    def options(self, **options: Any) -> Any:
        return (self.own_process if options.get("num_gpus") else self.warm).options(**options)


def _stream(fn: Callable[..., Iterator], *args: Any) -> Iterator:
    yield from fn(*args)


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


# No automatic retries: a failed training resumes through the trial's checkpoint, and a teacher
# that failed once (bad data, no memory) fails the same way again.
_stream_task = StageTask(_stream, max_retries=0)
_call_task = StageTask(_call, max_retries=0)


class Trainer:
    """One GPU training slot's process, for the whole sweep: it trains whatever it is handed
    (a student's stream of epoch updates, or a teacher), one at a time."""

    def stream(self, fn: Callable[..., Iterator], *args: Any) -> Iterator:
        yield from fn(*args)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)


@dataclass
class _Lease:
    trainer: Any
    renewed: float  # time.monotonic() of the holder's last word; inf for the pool's own (teachers)


def slots_in_cluster(need: dict[str, float]) -> int:
    """How many trainers needing `need` (Ray resource names: GPU, CPU) the cluster's live nodes hold."""
    need = {k: v for k, v in need.items() if v > 0}
    if not need:
        return 0
    return sum(min(math.floor(node["Resources"].get(k, 0.0) / v + 1e-9) for k, v in need.items())
               for node in ray.nodes() if node["Alive"])


class TrainerPool:
    """Lends `Trainer` actors (an async Ray actor, one per sweep). At most as many trainers live as
    the cluster has slots for (a trainer waiting for a GPU that another, idle, trainer holds would
    wait forever); with none yet (GPU nodes still to join), one, so that it starts where one joins."""

    def __init__(self, trainer_options: dict, lease_ttl_s: float = LEASE_TTL_S) -> None:
        self._options = trainer_options
        self._need = {"GPU": trainer_options.get("num_gpus") or 0, "CPU": trainer_options.get("num_cpus") or 0}
        self._ttl = lease_ttl_s
        self._idle: list = []
        self._leases: dict[str, _Lease] = {}
        self._changed = asyncio.Condition()
        self._started = 0

    def _live(self) -> int:
        return len(self._idle) + len(self._leases)

    def _expire(self) -> None:
        now = time.monotonic()
        for lease_id, lease in list(self._leases.items()):
            if now - lease.renewed > self._ttl:
                log.warning("trainer lease %s not renewed for %.0f s (its trial died): the trainer is replaced",
                            lease_id, now - lease.renewed)
                del self._leases[lease_id]
                ray.kill(lease.trainer)

    def _trainer(self) -> Any | None:
        """An idle trainer, a new one where the cluster has a free slot, else None."""
        if self._idle:
            return self._idle.pop()
        if self._live() < max(slots_in_cluster(self._need), 1):
            self._started += 1
            return ray.remote(Trainer).options(max_restarts=0, **self._options).remote()
        return None

    async def acquire(self, renews: bool = True) -> tuple[str, Any]:
        """(lease id, trainer); waits while every slot is lent. A lease that `renews` must be
        renewed within the lease TTL (`renew`) until it is released."""
        async with self._changed:
            while True:
                self._expire()
                trainer = self._trainer()
                if trainer is not None:
                    break
                try:  # woken by a release; else look again for leases that ran out
                    await asyncio.wait_for(self._changed.wait(), timeout=self._ttl / 4)
                except asyncio.TimeoutError:
                    pass
        lease_id = uuid.uuid4().hex
        self._leases[lease_id] = _Lease(trainer, time.monotonic() if renews else math.inf)
        return lease_id, trainer

    def renew(self, lease_id: str) -> bool:
        """The holder is alive; False when the lease had already run out."""
        lease = self._leases.get(lease_id)
        if lease is not None and lease.renewed != math.inf:
            lease.renewed = time.monotonic()
        return lease is not None

    async def release(self, lease_id: str, healthy: bool = True) -> None:
        """The trainer comes back; one whose process died (`healthy=False`) is dropped."""
        lease = self._leases.pop(lease_id, None)
        if lease is None:
            return  # ran out, and its trainer was replaced
        if healthy:
            self._idle.append(lease.trainer)
        else:
            ray.kill(lease.trainer)
        async with self._changed:
            self._changed.notify()

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` on a lent trainer (a teacher's training): the pool holds the lease itself."""
        lease_id, trainer = await self.acquire(renews=False)
        healthy = True
        try:
            return await trainer.call.remote(fn, *args)
        except ray.exceptions.RayActorError:
            healthy = False
            raise
        finally:
            await self.release(lease_id, healthy)

    def stats(self) -> dict[str, int]:
        """Trainers started so far, idle now and lent now."""
        return {"started": self._started, "idle": len(self._idle), "lent": len(self._leases)}


@dataclass(frozen=True)
class TrainSlots:
    """How trials and teachers get a training slot: Ray options of the `train` resources, and the
    sweep's `TrainerPool` when those name a GPU (`start_train_slots`)."""

    options: dict
    pool: Any = None
    renew_every_s: float = field(default=LEASE_TTL_S / 4)

    def stream(self, fn: Callable[..., Iterator], *args: Any) -> Iterator:
        """The items `fn(*args)` yields, trained on a slot (ObjectRef arguments arrive resolved)."""
        if self.pool is None:
            for ref in _stream_task.options(**self.options, name=_name(fn)).remote(fn, *args):
                yield ray.get(ref)
            return
        lease_id, trainer = ray.get(self.pool.acquire.remote())
        stop = threading.Event()
        threading.Thread(target=self._renew, args=(lease_id, stop), daemon=True, name="trainer-lease").start()
        healthy = True
        try:
            for ref in trainer.stream.options(name=_name(fn)).remote(fn, *args):
                yield ray.get(ref)
        except ray.exceptions.RayActorError:
            healthy = False
            raise
        finally:
            stop.set()
            try:  # back before this trial goes on: the pool's calls run in no fixed order
                ray.get(self.pool.release.remote(lease_id, healthy), timeout=30)
            except ray.exceptions.RayError as e:  # the pool is gone with its driver; the lease with it
                log.warning("could not give trainer lease %s back: %s", lease_id, e)

    def call(self, fn: Callable[..., Any], *args: Any) -> ray.ObjectRef:
        """An ObjectRef of `fn(*args)`, run on a slot (a teacher's training: one call, no stream)."""
        if self.pool is None:
            return _call_task.options(**self.options, name=_name(fn)).remote(fn, *args)
        return self.pool.call.remote(fn, *args)

    def _renew(self, lease_id: str, stop: threading.Event) -> None:
        while not stop.wait(self.renew_every_s):
            self.pool.renew.remote(lease_id)


def _name(fn: Callable) -> str:
    return getattr(getattr(fn, "func", fn), "__name__", "train")


def start_train_slots(options: dict, lease_ttl_s: float = LEASE_TTL_S) -> TrainSlots:
    """The sweep's training slots: Ray's warm task workers on CPUs; with a GPU, a `TrainerPool` on
    the driver's node (never a board's), which lives as long as the driver's Ray session."""
    if not options.get("num_gpus"):
        return TrainSlots(options)
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    pool = ray.remote(TrainerPool).options(num_cpus=0, scheduling_strategy=here).remote(options, lease_ttl_s)
    return TrainSlots(options, pool, renew_every_s=lease_ttl_s / 4)
