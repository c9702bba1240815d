"""The searcher of a sweep: a registered algorithm (`orchestrator.algorithms`) as Ray Tune's search.

Optuna samplers run through Ray Tune's OptunaSearch; their study lives in a SQLite file in the
sweep directory, so a resumed sweep and `optuna-dashboard sqlite:///<sweep>/optuna.db` read the
same history. Two additions to OptunaSearch, both at the moment a trial ends: the config's
constraints go to Optuna's constraint mechanism (`trial.set_constraint`, feasible when <= 0), and a
trial that did not finish every stage is told as PRUNED, never COMPLETE, so it can never sit on the
front. Random and grid search are Tune's variant generator.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path

from ray.tune.search import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from orchestrator._ray_internals import live_optuna_trial
from orchestrator.algorithms import ALGORITHMS
from orchestrator.config import SweepConfig
from orchestrator.pareto import violations

log = logging.getLogger(__name__)

STUDY_DB = "optuna.db"


class ParetoOptunaSearch(OptunaSearch):
    def __init__(self, *args, constraints=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._constraints = constraints  # metrics -> {name: value}, feasible when every value <= 0

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        complete = bool(result and result.get("trial_complete")) and not error
        trial = live_optuna_trial(self, trial_id)
        if complete and self._constraints is not None and trial is not None:
            for name, value in self._constraints(result).items():
                trial.set_constraint(name, value)
        super().on_trial_complete(trial_id, result if complete else None, error)


def study_url(sweep_dir: Path) -> str:
    return f"sqlite:///{(Path(sweep_dir) / STUDY_DB).resolve()}"


def make_searcher(cfg: SweepConfig, sweep_dir: Path):
    """(search_alg, param_space, num_samples) for `tune.Tuner`."""
    algorithm = ALGORITHMS.get(cfg.searcher.algorithm)
    if algorithm.uses_optuna:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the live view shows trials; no per-trial log lines
        storage = optuna.storages.RDBStorage(study_url(sweep_dir))
        searcher = ParetoOptunaSearch(
            space=cfg.search.suggest, metric=[o.metric for o in cfg.objectives], mode=[o.mode for o in cfg.objectives],
            sampler=algorithm.sampler(cfg.searcher.seed, cfg.searcher.trials), study_name=cfg.name, storage=storage,
            constraints=functools.partial(violations, cfg.constraints))  # pickled with the searcher's state
        return searcher, {}, cfg.searcher.trials
    # Tune ignores max_concurrent_trials for a generator passed in (it only wraps Searchers in a
    # ConcurrencyLimiter), and trials reserve almost no CPU: the generator itself must cap them.
    generator = BasicVariantGenerator(random_state=cfg.searcher.seed, max_concurrent=cfg.searcher.concurrency)
    return generator, cfg.search.tune_param_space(), 1 if algorithm.enumerates else cfg.searcher.trials


def _running_trials(cfg: SweepConfig, sweep_dir: Path):
    """(study, its RUNNING trials), or (None, []) without an Optuna study."""
    if not cfg.searcher.uses_optuna or not (Path(sweep_dir) / STUDY_DB).exists():
        return None, []
    import optuna

    study = optuna.load_study(study_name=cfg.name, storage=study_url(sweep_dir))
    return study, study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))


def mark_interrupted_trials(cfg: SweepConfig, sweep_dir: Path) -> int:
    """Tag the study's RUNNING trials as interrupted and leave them RUNNING: Tune saved the searcher
    with them, so the resumed sweep tells each one COMPLETE when its trial finishes."""
    import optuna

    _, running = _running_trials(cfg, sweep_dir)
    if not running:
        return 0
    storage = optuna.storages.RDBStorage(study_url(sweep_dir))
    study_id = storage.get_study_id_from_name(cfg.name)
    for t in running:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(trial_id, "edgesweep_interrupted", True)
    return len(running)


def fail_orphaned_trials(cfg: SweepConfig, sweep_dir: Path) -> int:
    """Mark study trials still RUNNING after every trial ended as FAIL: they belonged to a driver
    that crashed (SIGKILL, power) before Tune saved its searcher, so the resumed trial was asked
    again under a new number. Returns how many there were."""
    import optuna

    study, orphans = _running_trials(cfg, sweep_dir)
    for t in orphans:
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    if orphans:
        log.info("marked %d interrupted Optuna trial(s) as FAIL", len(orphans))
    return len(orphans)
