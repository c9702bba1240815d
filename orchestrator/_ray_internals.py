"""The one place the driver reaches into Ray's private state, so a Ray upgrade breaks one small file.

Checked against Ray 2.60.0. Re-check on every Ray upgrade (tests/orchestrator/test_searcher.py,
tests/orchestrator/test_tracking_callback.py and tests/test_security.py fail when these are gone).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch


def live_optuna_trial(searcher: "OptunaSearch", trial_id: str) -> "optuna.Trial | None":
    """The Optuna trial OptunaSearch asked for a Tune trial, while it is still running.

    Optuna 5 records constraints on the live trial (`Trial.set_constraint`) before it is told, and
    OptunaSearch keeps its live trials only in `_ot_trials` (no public accessor in Ray 2.60)."""
    return searcher._ot_trials.get(trial_id)  # noqa: SLF001 - see the module docstring


def optuna_study(searcher: "OptunaSearch") -> "optuna.Study":
    """The study OptunaSearch asks and tells (`_ot_study`; no public accessor in Ray 2.60): the
    searcher swaps its sampler for a few asks and records on it that the space ran out."""
    return searcher._ot_study  # noqa: SLF001 - see the module docstring


def reload_auth_config() -> None:
    """Make this process's Ray core read RAY_AUTH_MODE and the token again.

    Ray reads its auth mode once, when `ray` is imported; a driver that starts a private cluster
    after that (a sweep run from Python, a test) switches it on here. Ray 2.60 has no public call.
    """
    from ray._raylet import AuthenticationTokenLoader, Config  # private in Ray 2.60

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def tuner_callbacks(tuner: "tune.Tuner") -> list["tune.Callback"]:
    """The callbacks a Tuner runs with. A restored Tuner's come back unpickled from the sweep's saved
    state (`Tuner.restore` takes none), and Ray 2.60 has no public accessor: its `TunerInternal`
    (`_local_tuner`) holds the run config. A Ray Client driver's Tuner runs elsewhere: none here."""
    local = getattr(tuner, "_local_tuner", None)  # noqa: SLF001 - see the module docstring
    return list(local.get_run_config().callbacks or []) if local is not None else []


def tuner_searcher(tuner: "tune.Tuner") -> object | None:
    """The search algorithm a Tuner runs with (a restored Tuner's, unpickled from its `tuner.pkl`),
    before `fit` wraps it; None for a Ray Client driver's Tuner. No public accessor in Ray 2.60."""
    local = getattr(tuner, "_local_tuner", None)  # noqa: SLF001 - see the module docstring
    return local._tune_config.search_alg if local is not None else None  # noqa: SLF001


def tune_state_saved(tune_dir: "str | Path") -> bool:
    """Whether Tune saved an experiment's state in `tune_dir`. `Tuner.can_restore` only looks for
    `tuner.pkl`, which the Tuner writes when it is built; `Tuner.restore` then fails with a raw
    ValueError until the first `experiment_state-*.json` (Tune's file name template) exists."""
    from ray import tune
    from ray.tune.execution.tune_controller import TuneController  # its file name template: private in Ray 2.60

    pattern = TuneController.CKPT_FILE_TMPL.format("*")
    return tune.Tuner.can_restore(str(tune_dir)) and any(Path(tune_dir).glob(pattern))


@contextlib.contextmanager
def ray_sigterm_handlers_off() -> Iterator[None]:
    """`ray.init` in a driver installs SIGTERM handlers of its own (the driver's `sys.exit(15)`; a local
    head node's, which kills Ray's processes and exits 1) through `ray._private.utils.
    set_sigterm_handler` (private in Ray 2.60). Inside this block that call does nothing, so the
    caller's handler stays; Ray's processes are still stopped by its atexit hook."""
    import ray._private.utils as ray_utils  # noqa: SLF001 - see the module docstring

    original = ray_utils.set_sigterm_handler
    ray_utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        ray_utils.set_sigterm_handler = original
