"""The searcher of a sweep: a registered algorithm (`orchestrator.algorithms`) as Ray Tune's search.

Optuna samplers run through Ray Tune's OptunaSearch; their study lives in a SQLite file in the
sweep directory, or on a PostgreSQL server (`searcher.storage`, `orchestrator.study_storage`), so a
resumed sweep and `optuna-dashboard <study URL>` read the same history. Two additions to
OptunaSearch, both at the moment a trial ends: the config's
constraints go to Optuna's constraint mechanism (`trial.set_constraint`, feasible when <= 0), and a
trial that did not finish every stage is told as PRUNED, never COMPLETE, so it can never sit on the
front. Random and grid search are Tune's variant generator. `optuna_search`, `random_search` and
`grid_search` are what the built-in algorithms of `orchestrator.algorithms` build from a `SearchSetup`.

No configuration is trained twice: a proposal equal to a finished trial's configuration is closed
at once (a PRUNED Optuna trial tagged `edgesweep_repeats` with the trial that trained it: the
sampler has that result already) and the sampler is asked again; after two repeats Optuna's
RandomSampler proposes instead, so a sampler stuck on its favourite still leads somewhere new. A
proposal equal to a running trial's is closed the same way, and the searcher waits until that
trial ends. When `MAX_ASKS` proposals in a row repeat trained ones, the space counts as exhausted
and the search ends early (the study's user attribute `edgesweep_exhausted` says after how many).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ray.tune.search import BasicVariantGenerator, Searcher
from ray.tune.search.optuna import OptunaSearch

from orchestrator._ray_internals import live_optuna_trial, optuna_study
from orchestrator.algorithms import ALGORITHMS, SearchSetup, TuneSearch
from orchestrator.config import SweepConfig
from orchestrator.pareto import violations
from orchestrator.results import load_records
from orchestrator.study_storage import STUDY_DB, StudyStorageError, open_storage, study_url
from search_spaces import Choice, SearchSpace
from device_actors.runtimes import BoardKnobs
from trainables.export.registry import ExportKnobs
from trainables.hyper import TrainKnobs

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

REPEATS_BEFORE_RANDOM = 2  # proposals of the configured sampler per trial before random ones take over
MAX_ASKS = 32  # proposals per trial that repeat finished configurations before the space counts as exhausted
REPEATS_ATTR = "edgesweep_repeats"  # on a proposal closed as a repeat: the Tune trial that has its configuration
EXHAUSTED_ATTR = "edgesweep_exhausted"
VARIANT_ATTR = "edgesweep_variant_of"  # on a queued export variant: the trial that trained its student  # on the study: the number of trials when no new configuration came
TUNE_TRIAL_ATTR = "edgesweep_trial"  # on every study trial a Tune trial ran: that trial's id
RETRY_ATTR = "edgesweep_retry_of"  # on a retried trial's COMPLETE study trial: the number of its FAIL one


def config_key(config: dict) -> str:
    """The identity of a proposed configuration: its searched knobs, order-free."""
    return json.dumps(config, sort_keys=True, default=str)


class ParetoOptunaSearch(OptunaSearch):
    def __init__(self, *args, constraints=None, seed: int = 0, variants=None, budget: int | None = None,
                 sweep_dir: Path | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._budget = budget  # the sweep's trial count, checked against its journal (`_spent`)
        self._sweep_dir = sweep_dir
        self._constraints = constraints  # metrics -> {name: value}, feasible when every value <= 0
        self._seed = seed
        self._variants = variants  # a trained student's config -> its other export variants to queue (or None)
        self._config_of: dict[str, dict] = {}  # Tune trial id -> its config, while it runs
        self._queued: list[tuple[dict, str]] = []  # (export variant, the trial that trained its student), in order
        # All plain data, so Tune's searcher checkpoint (OptunaSearch pickles __dict__) keeps it for --resume.
        self._finished: dict[str, str] = {}  # config key -> the Tune trial that trained it
        self._running: dict[str, str] = {}  # config key -> the Tune trial training it
        self._key_of: dict[str, str] = {}  # Tune trial id -> its config key
        self._ask_id: dict[str, str] = {}  # Tune trial id -> the id its proposal was asked under, when not its own
        self._waiting_for: str | None = None  # the key of a running trial the last proposal repeated
        self._asks = 0

    def _fill_in(self) -> None:
        """Defaults of what a searcher saved by an older sweep lacks (Tune restores its pickled __dict__)."""
        for name, default in (("_variants", None), ("_config_of", {}), ("_queued", []), ("_budget", None),
                              ("_sweep_dir", None)):
            self.__dict__.setdefault(name, default)

    def relocate(self, sweep_dir: Path) -> None:
        """Where a resumed sweep is now. Tune restores the searcher's saved state afterwards (`restore`),
        which names the directory it was saved in: a sweep copied or moved since keeps its own study."""
        self._home = Path(sweep_dir)

    def restore(self, checkpoint_path: str) -> None:
        home = self.__dict__.get("_home")
        super().restore(checkpoint_path)
        self._fill_in()
        saved = self._sweep_dir
        if home is None or saved is None or Path(saved) == home:
            return
        if getattr(self._storage, "url", None) == study_url(saved):  # the study in the sweep directory moved with it
            import optuna

            self._storage = open_storage(study_url(home))
            self._ot_study = optuna.load_study(study_name=self._ot_study.study_name, storage=self._storage,
                                               sampler=self._ot_study.sampler)
        self._sweep_dir = home

    def suggest(self, trial_id: str):
        import optuna

        self._fill_in()

        if self._waiting_for in self._running:
            return None  # Tune asks again later, when that trial may have finished
        self._waiting_for = None
        if self._budget is not None and self._spent() >= self._budget:
            return Searcher.FINISHED
        study = optuna_study(self)
        sampler = study.sampler
        try:
            for attempt in range(MAX_ASKS):
                if attempt == REPEATS_BEFORE_RANDOM:
                    study.sampler = optuna.samplers.RandomSampler(seed=self._seed + self._asks)
                self._asks += 1
                ask_id = trial_id if attempt == 0 else f"{trial_id}~{attempt}"
                self._enqueue_next(study)
                config = super().suggest(ask_id)
                if not isinstance(config, dict):
                    return config
                key = config_key(config)
                done = self._finished.get(key) or self._complete_in_study(study, ask_id)
                if done:
                    self._skip_repeat(ask_id, done)
                elif key in self._running:  # wait for it, rather than train it twice at once
                    self._skip_repeat(ask_id, self._running[key])
                    self._waiting_for = key
                    return None
                else:
                    return self._accept(trial_id, ask_id, key, config)
        finally:
            study.sampler = sampler
        trials = len(self._finished)
        log.info("the searcher proposed only trained configurations %d times in a row: ending the search after "
                 "%d configurations", MAX_ASKS, trials)
        study.set_user_attr(EXHAUSTED_ATTR, trials)
        return Searcher.FINISHED

    def _spent(self) -> int:
        """Trials that ended (the journal) or run now. Tune counts the trials it created, but a killed
        driver's Tune state is as old as its last save: trials that ended after it are in the journal
        only, and a resumed Tune would run that many more than the sweep's budget."""
        ended = {r.trial_id for r in load_records(self._sweep_dir) if r.ended} if self._sweep_dir else set()
        return len(ended | set(self._config_of))

    def _accept(self, trial_id: str, ask_id: str, key: str, config: dict) -> dict:
        self._running[key], self._key_of[trial_id] = trial_id, key
        trial = live_optuna_trial(self, ask_id)
        if trial is not None:  # which study trial a Tune trial is, once it is told (`tell_retried_trials`)
            trial.set_user_attr(TUNE_TRIAL_ATTR, trial_id)
        self._config_of[trial_id] = config
        if ask_id != trial_id:
            self._ask_id[trial_id] = ask_id
        return config

    def _skip_repeat(self, ask_id: str, earlier: str) -> None:
        """Close a proposal that repeats the configuration of trial `earlier`: PRUNED (never run) and
        tagged with that trial. The study's COMPLETE trials stay one per training, so its best trials
        are the sweep's front; the sampler has (or will have) the result from that trial."""
        trial = live_optuna_trial(self, ask_id)
        if trial is not None:
            trial.set_user_attr(REPEATS_ATTR, earlier)
        self._tell(ask_id, None, error=False)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        super().on_trial_result(self._ask_id.get(trial_id, trial_id), result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self._fill_in()
        key = self._key_of.pop(trial_id, None)
        self._running.pop(key, None)
        config = self._config_of.pop(trial_id, None)
        complete = self._tell(self._ask_id.pop(trial_id, trial_id), result, error)
        if complete and key is not None:
            self._finished[key] = trial_id
            if self._variants is not None and config is not None and result.get("student_trained"):
                self._queue_variants(trial_id, config)

    def _queue_variants(self, trial_id: str, config: dict) -> None:
        """Queue the other exports of the student trial `trial_id` just trained (`SearcherConfig.
        export_variants`): each costs an export and a board timing, no training, and they are
        proposed before the sampler's next own proposal (one that repeats a finished trial is closed
        as any repeat is). They reach Optuna's queue one at a time, as they are asked, so a sweep
        that ends first leaves no waiting trial in the study."""
        self._queued += [(variant, trial_id) for variant in self._variants(config)]

    def _enqueue_next(self, study: "optuna.Study") -> None:
        if self._queued:  # one the study holds already (run before a restart, say) is not queued again
            variant, trained_by = self._queued.pop(0)
            study.enqueue_trial(variant, user_attrs={VARIANT_ATTR: trained_by}, skip_if_exists=True)

    def _complete_in_study(self, study: "optuna.Study", ask_id: str) -> str | None:
        """The study's COMPLETE trial with the proposal's params, if any (as "study trial N"): the
        study is on disk, while `_finished` is as old as Tune's last save of this searcher, which a
        killed driver may have made before its last trials ended."""
        import optuna

        asked = live_optuna_trial(self, ask_id)
        if asked is None:
            return None
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if t.params == asked.params:
                return f"study trial {t.number}"
        return None

    def _tell(self, ask_id: str, result: dict | None, error: bool) -> bool:
        complete = bool(result and result.get("trial_complete")) and not error
        trial = live_optuna_trial(self, ask_id)
        if complete and self._constraints is not None and trial is not None:
            for name, value in self._constraints(result).items():
                trial.set_constraint(name, value)
        super().on_trial_complete(ask_id, result if complete else None, error)
        return complete


def dashboard_command(sweep_dir: Path, storage: str | None = None) -> str:
    """optuna-dashboard on the sweep's study, on loopback only (it has no login)."""
    program = Path(sys.prefix) / "bin" / "optuna-dashboard"
    return (f"{program if program.exists() else 'optuna-dashboard'} {study_url(sweep_dir, storage)} "
            f"--host 127.0.0.1 --port 8080")


def baseline_first(space: SearchSpace) -> list[dict] | None:
    """The baseline (`kd_method: none`) as the first proposal when the space searches it beside KD
    methods: the front always holds the reference every KD trial is compared with, and the first
    trial needs no teacher, so it trains while the teachers do."""
    param = space.params.get("kd_method")
    baseline = TrainKnobs.kd_method
    if isinstance(param, Choice) and baseline in param.values and len(param.values) > 1:
        return [{"kd_method": baseline}]
    return None


def search_setup(cfg: SweepConfig, sweep_dir: Path) -> SearchSetup:
    """What the sweep's algorithm builds its searcher from."""
    return SearchSetup(name=cfg.name, sweep_dir=Path(sweep_dir), space=cfg.search,
                       metrics=tuple(o.metric for o in cfg.objectives), modes=tuple(o.mode for o in cfg.objectives),
                       seed=cfg.searcher.seed, trials=cfg.searcher.trials, concurrency=cfg.searcher.concurrency,
                       storage=cfg.searcher.storage,
                       constraints=functools.partial(violations, cfg.constraints),  # pickled with the searcher's state
                       variants=functools.partial(cfg.search.variants, knobs=deployment_knobs())
                       if cfg.searcher.export_variants else None)


def deployment_knobs() -> tuple[str, ...]:
    """The knobs that change how a trained student is exported and run, not its weights (the
    export's img_size is the training's too)."""
    trained = {f.name for f in dataclasses.fields(TrainKnobs)}
    return tuple(f.name for f in (*dataclasses.fields(ExportKnobs), *dataclasses.fields(BoardKnobs))
                 if f.name not in trained)


def make_searcher(cfg: SweepConfig, sweep_dir: Path) -> TuneSearch:
    """(search_alg, param_space, num_samples) for `tune.Tuner`, built by the sweep's registered algorithm."""
    return ALGORITHMS.get(cfg.searcher.algorithm).make(search_setup(cfg, sweep_dir))


def optuna_search(setup: SearchSetup, sampler: "optuna.samplers.BaseSampler") -> TuneSearch:
    """An Optuna sampler as the sweep's searcher: ParetoOptunaSearch on the define-by-run space, with the
    objectives, the constraints and the study in the sweep directory."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the live view shows trials; no per-trial log lines
    searcher = ParetoOptunaSearch(
        space=setup.space.suggest, metric=list(setup.metrics), mode=list(setup.modes), sampler=sampler,
        study_name=setup.name, storage=open_storage(study_url(setup.sweep_dir, setup.storage)),
        points_to_evaluate=baseline_first(setup.space), constraints=setup.constraints, seed=setup.seed,
        variants=setup.variants, budget=setup.trials, sweep_dir=setup.sweep_dir)
    return TuneSearch(searcher, {}, setup.trials)


def _variant_generator(setup: SearchSetup, num_samples: int) -> TuneSearch:
    # Tune ignores max_concurrent_trials for a generator passed in (it only wraps Searchers in a
    # ConcurrencyLimiter), and trials reserve almost no CPU: the generator itself must cap them.
    generator = BasicVariantGenerator(random_state=setup.seed, max_concurrent=setup.concurrency)
    return TuneSearch(generator, setup.space.tune_param_space(), num_samples)


def random_search(setup: SearchSetup) -> TuneSearch:
    """Tune's variant generator, sampling the space `trials` times."""
    return _variant_generator(setup, setup.trials)


def grid_search(setup: SearchSetup) -> TuneSearch:
    """Tune's variant generator over the grid: one pass runs every combination once."""
    return _variant_generator(setup, 1)


def load_study(cfg: SweepConfig, sweep_dir: Path) -> "optuna.Study | None":
    """The sweep's Optuna study, or None when it has none (yet): another algorithm, or no trial asked."""
    if not cfg.searcher.uses_optuna or (cfg.searcher.storage is None and not (Path(sweep_dir) / STUDY_DB).exists()):
        return None
    import optuna

    try:
        return optuna.load_study(study_name=cfg.name, storage=open_storage(study_url(sweep_dir, cfg.searcher.storage)))
    except KeyError:  # Optuna's "no such study"
        return None


def check_study(cfg: SweepConfig, sweep_dir: Path, *, fresh: bool) -> None:
    """Before a sweep starts: its study's database answers, and a fresh sweep finds no study of its name
    on a server (a server is shared by sweeps of other directories; their trials would mix)."""
    study = load_study(cfg, sweep_dir)  # opens the server, naming it if it does not answer
    if fresh and study is not None and cfg.searcher.storage is not None:
        raise StudyStorageError(f"{cfg.source}: searcher.storage already holds a study named {cfg.name!r} (an earlier "
                                f"sweep of this name): give this sweep another `name:`, or continue that one with "
                                f"--resume from its directory")


def delete_study(cfg: SweepConfig, sweep_dir: Path) -> None:
    """Remove the study of a start that Tune never saved (it starts again from nothing)."""
    if cfg.searcher.storage is None:
        (Path(sweep_dir) / STUDY_DB).unlink(missing_ok=True)
    elif load_study(cfg, sweep_dir) is not None:
        import optuna

        optuna.delete_study(study_name=cfg.name, storage=open_storage(cfg.searcher.storage))


def _running_trials(cfg: SweepConfig, sweep_dir: Path):
    """(study, its RUNNING trials), or (None, []) without an Optuna study."""
    study = load_study(cfg, sweep_dir)
    if study is None:
        return None, []
    import optuna

    return study, study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))


def mark_interrupted_trials(cfg: SweepConfig, sweep_dir: Path) -> int:
    """Tag the study's RUNNING trials as interrupted and leave them RUNNING: Tune saved the searcher
    with them, so the resumed sweep tells each one COMPLETE when its trial finishes."""
    _, running = _running_trials(cfg, sweep_dir)
    if not running:
        return 0
    storage = open_storage(study_url(sweep_dir, cfg.searcher.storage))
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


def tell_retried_trials(cfg: SweepConfig, sweep_dir: Path) -> int:
    """Tell the study what `sweep --resume --retry-failed` made of its failed trials. Optuna never
    reopens a finished trial, and Tune's searcher no longer hears of a trial it was told had failed,
    so the FAIL study trial stays as it is (the history of that attempt) and a retry that completed
    is added beside it: a COMPLETE trial with the same params, the retry's objective values and
    constraints, and `edgesweep_retry_of` naming the FAIL one. The sampler then weighs the result and
    the no-repeat rule sees the configuration as trained. Run at each sweep's end; adds each retry
    once. Returns how many it added."""
    study = load_study(cfg, sweep_dir)
    if study is None:
        return 0
    import optuna

    trials = study.get_trials(deepcopy=False)
    told = {t.user_attrs[RETRY_ATTR] for t in trials if RETRY_ATTR in t.user_attrs}
    complete = {r.trial_id: r for r in load_records(sweep_dir) if r.complete}
    added = 0
    for t in trials:
        record = complete.get(t.user_attrs.get(TUNE_TRIAL_ATTR))
        if t.state != optuna.trial.TrialState.FAIL or record is None or t.number in told:
            continue
        study.add_trial(optuna.trial.create_trial(
            params=t.params, distributions=t.distributions,
            values=[float(record.metrics[o.metric]) for o in cfg.objectives],
            constraints=violations(cfg.constraints, record.metrics) or None,
            user_attrs={TUNE_TRIAL_ATTR: record.trial_id, RETRY_ATTR: t.number}))
        added += 1
    if added:
        log.info("told the searcher's study %d retried trial(s) that completed", added)
    return added


def repeated_proposals(cfg: SweepConfig, sweep_dir: Path) -> tuple[int, int | None]:
    """(proposals closed unrun as repeats of a trained or training configuration, the trial count at
    which the search ran out of new configurations or None); (0, None) without an Optuna study."""
    study = load_study(cfg, sweep_dir)
    if study is None:
        return 0, None
    return (sum(REPEATS_ATTR in t.user_attrs for t in study.get_trials(deepcopy=False)),
            study.user_attrs.get(EXHAUSTED_ATTR))
