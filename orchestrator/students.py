"""A student trained once for every trial that shares it.

Trials that differ only in how their student is exported, timed or run on the board (format,
calibration, board threads) share one training: the student is keyed by everything that decides
its weights (`student_key`) and kept under that key (`StudentCache`, in the sweep's directory by
default, so every node of a cluster reaches it through the shared storage Tune already needs).
Which trial trains a key is decided by `StudentClaims`, one async Ray actor per sweep driver: the
first trial to claim a key trains it; the others wait for it and then read the finished student.

A claim is a lease its holder renews while it trains (as trainer slots do, `orchestrator.trainers`):
a trial that fails gives its claim back, one whose process dies stops renewing, and in both cases a
waiting trial claims the key and trains the student itself. An entry is written whole
(`common.atomic`), its marker last, so a failed or interrupted training leaves no entry; an entry
whose checkpoint no longer matches its recorded sha256 is removed with a warning and trained
again, never trusted.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import ray

from common import atomic
from trainables.hyper import DISTILLATION_KNOBS, TrainKnobs

log = logging.getLogger(__name__)

STUDENTS = "students"  # <sweep dir>/students/<key>/: one trained student each
CHECKPOINT = "student.pt"
MARKER = "student.json"  # written last: its presence says the entry is whole
CLAIM_TTL_S = 60.0  # a claim not renewed for this long belongs to a dead trial: another may take the key
TRAINING_CODE = ("trainables", "detection")  # the packages whose source decides a trained student


@functools.lru_cache(maxsize=1)
def training_code_version() -> str:
    """sha256 of the training code's source (every .py of TRAINING_CODE) and the torch version: a
    student trained by other code is another student, whatever git says about the working tree."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256(metadata.version("torch").encode())
    for package in TRAINING_CODE:
        for path in sorted((root / package).rglob("*.py")):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def deciding_knobs(train: TrainKnobs) -> dict[str, object]:
    """The train knobs that decide the weights: all of them, less the distillation ones when the
    method distils nothing (a baseline's teacher or factor, if sampled, changes no weight)."""
    knobs = asdict(train)
    knobs["kd_params"] = dict(train.kd_params)
    if not train.distills:
        for name in (*DISTILLATION_KNOBS, "kd_params"):
            knobs.pop(name, None)
    return knobs


def student_key(train: TrainKnobs, spec: Any, teacher_sha256: str | None) -> str:
    """What decides a trained student: its train knobs, the data (config, split seed and the
    annotations' digest), the training settings, the torch thread count (CPU kernels sum in an
    order that depends on it), the teacher's bytes and the training code. Not the device: a
    sweep trains its students on one kind of slot."""
    payload = {"knobs": deciding_knobs(train), "data": repr(spec.data), "data_digest": spec.data_digest,
               "split_seed": spec.seed, "training": repr(spec.training), "torch_threads": spec.torch_threads,
               "teacher": teacher_sha256, "code": training_code_version()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


@dataclass(frozen=True)
class CachedStudent:
    """A finished student: its checkpoint, float val metrics and what its training cost."""

    key: str
    checkpoint: bytes
    metrics: dict[str, float]
    train_s: float  # seconds of training (teacher forwards and per-epoch validation included)
    trained_by: str  # the trial that trained it


@dataclass(frozen=True)
class StudentCache:
    """Finished students on disk, one directory per key."""

    root: Path

    def entry(self, key: str) -> Path:
        return Path(self.root) / key

    def load(self, key: str) -> CachedStudent | None:
        """The finished student of `key`, or None. A damaged entry is removed (with a warning), never trusted."""
        entry = self.entry(key)
        marker = entry / MARKER
        if not marker.exists():
            return None
        try:
            meta = json.loads(marker.read_text())
            checkpoint = (entry / CHECKPOINT).read_bytes()
            if hashlib.sha256(checkpoint).hexdigest() != meta["sha256"]:
                raise ValueError(f"{CHECKPOINT} does not match the sha256 in {MARKER}")
            return CachedStudent(key=key, checkpoint=checkpoint, metrics=dict(meta["metrics"]),
                                 train_s=float(meta["train_s"]), trained_by=str(meta["trained_by"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("student cache entry %s is damaged (%s): the student is trained again", entry, e)
            shutil.rmtree(entry, ignore_errors=True)
            return None

    def store(self, student: CachedStudent) -> None:
        """Write the checkpoint, then the marker (whole files both): a crash between leaves no entry."""
        entry = self.entry(student.key)
        with atomic.replacing(entry / CHECKPOINT) as tmp:
            tmp.write_bytes(student.checkpoint)
        meta = {"sha256": hashlib.sha256(student.checkpoint).hexdigest(), "metrics": student.metrics,
                "train_s": student.train_s, "trained_by": student.trained_by}
        atomic.write_text(entry / MARKER, json.dumps(meta, indent=2))

    def keys(self) -> list[str]:
        root = Path(self.root)
        return sorted(p.parent.name for p in root.glob(f"*/{MARKER}")) if root.exists() else []


class StudentClaims:
    """Which trial trains which student right now: an async Ray actor, one per sweep driver. It holds
    leases only; finished students live in the `StudentCache`."""

    def __init__(self, ttl_s: float = CLAIM_TTL_S) -> None:
        self._ttl = ttl_s
        self._holders: dict[str, tuple[str, float]] = {}  # key -> (trial id, time.monotonic() of its last renewal)
        self._changed: dict[str, asyncio.Event] = {}

    def claim(self, key: str, trial_id: str) -> bool:
        """True when `trial_id` now holds the key: nobody did, its holder's lease ran out, or it held
        the key already (a retried trial takes its own claim back)."""
        holder = self._holders.get(key)
        if holder is not None and holder[0] != trial_id and time.monotonic() - holder[1] <= self._ttl:
            return False
        if holder is not None and holder[0] != trial_id:
            log.warning("student %s: trial %s stopped renewing its claim; trial %s trains it", key, holder[0], trial_id)
        self._holders[key] = (trial_id, time.monotonic())
        return True

    def renew(self, key: str, trial_id: str) -> None:
        if self._holders.get(key, ("",))[0] == trial_id:
            self._holders[key] = (trial_id, time.monotonic())

    def release(self, key: str, trial_id: str) -> None:
        """The holder is done with the key (its student stored, or its training failed)."""
        if self._holders.get(key, ("",))[0] == trial_id:
            del self._holders[key]
        self._changed.pop(key, asyncio.Event()).set()

    async def wait(self, key: str, timeout_s: float) -> None:
        """Until the key is released or `timeout_s` passed (then the caller looks again); at once when
        nobody holds it any more (released between the caller's claim and this call)."""
        if key not in self._holders:
            return
        event = self._changed.setdefault(key, asyncio.Event())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=timeout_s)


@dataclass(frozen=True)
class Students:
    """What a trial uses to get its student: the cache on disk and the sweep's claims actor."""

    cache: StudentCache
    claims: Any  # ActorHandle of StudentClaims
    ttl_s: float = CLAIM_TTL_S

    def find_or_claim(self, key: str, trial_id: str, on_wait: Any = None) -> CachedStudent | None:
        """The finished student of `key`; or None once `trial_id` holds the claim and must train it.
        `on_wait()` is called once when another trial is training it (the trial says it waits)."""
        waited = False
        while True:
            found = self.cache.load(key)
            if found is not None:
                return found
            if ray.get(self.claims.claim.remote(key, trial_id)):
                found = self.cache.load(key)  # stored between the look and the claim
                if found is not None:
                    self.claims.release.remote(key, trial_id)
                return found
            if not waited and on_wait is not None:
                on_wait()
            waited = True
            ray.get(self.claims.wait.remote(key, self.ttl_s / 2))

    @contextlib.contextmanager
    def training(self, key: str, trial_id: str) -> Iterator[None]:
        """Hold `key`'s claim while the block trains (renewed in a thread); give it back at the end,
        whatever happened, so a waiting trial stored-reads it or trains it itself."""
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.ttl_s / 4):
                self.claims.renew.remote(key, trial_id)

        threading.Thread(target=renew, daemon=True, name="student-claim").start()
        try:
            yield
        finally:
            stop.set()
            try:
                ray.get(self.claims.release.remote(key, trial_id), timeout=30)
            except ray.exceptions.RayError as e:  # the actor is gone with its driver; the claim with it
                log.warning("could not release the claim on student %s: %s", key, e)


def start_students(root: Path, ttl_s: float = CLAIM_TTL_S) -> Students:
    """The sweep's students: kept under `root`, claimed through an actor on the driver's node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    claims = ray.remote(StudentClaims).options(num_cpus=0, scheduling_strategy=here).remote(ttl_s)
    return Students(StudentCache(Path(root)), claims, ttl_s)


def students_trained(records: list) -> tuple[int, int]:
    """(students trained, artifacts made) over a sweep's complete trials: the first counts each
    distinct student key once among the trials that trained it, the second every complete trial."""
    complete = [r for r in records if r.complete]
    trained = {r.metrics.get("student_key") for r in complete if r.metrics.get("student_trained")}
    return len(trained), len(complete)
