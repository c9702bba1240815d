"""A Ray Tune searcher registered from this module alone (no Optuna: a `Searcher` that proposes a
fixed list) passes the searcher conformance class and drives a real sweep; nothing else in the
project names it.

The sweep's training and export are the stand-ins of `orchestrator.stand_in_stages`; Ray, Tune, the
board actor, the journal and MLflow are real.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import ray
from ray.tune.search import Searcher

from orchestrator.algorithms import ALGORITHMS, Algorithm, SearchSetup, TuneSearch, register_algorithm
from orchestrator.config import parse_config
from orchestrator.searcher import STUDY_DB
from orchestrator.stand_in_stages import StandInStages
from orchestrator.sweep import run_sweep
from tests.conformance.searchers import SearcherConformance

CONFIGS = ({"quantization": "int8", "epochs": 2}, {"quantization": "fp32", "epochs": 1},
           {"quantization": "int8", "epochs": 1}, {"quantization": "fp32", "epochs": 2})


class FixedListSearcher(Searcher):
    """Proposes `configs` in order, then says the search is finished."""

    def __init__(self, configs):
        super().__init__()
        self.configs, self.proposed, self.results = list(configs), 0, {}

    def suggest(self, trial_id: str):
        if self.proposed == len(self.configs):
            return Searcher.FINISHED
        self.proposed += 1
        return dict(self.configs[self.proposed - 1])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.results[trial_id] = result

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_bytes(pickle.dumps(self.__dict__))

    def restore(self, checkpoint_path: str) -> None:
        self.__dict__.update(pickle.loads(Path(checkpoint_path).read_bytes()))


def fixed_list(setup: SearchSetup) -> TuneSearch:
    return TuneSearch(FixedListSearcher(CONFIGS[:setup.trials]), {}, setup.trials)


@pytest.fixture
def fixed_list_algorithm():
    register_algorithm(Algorithm("fixed-list", "a test's own list of configurations, in order", fixed_list))
    yield "fixed-list"
    ALGORITHMS.unregister("fixed-list")


class TestFixedListSearcherConforms(SearcherConformance):
    @pytest.fixture
    def algorithm(self, fixed_list_algorithm) -> str:
        return fixed_list_algorithm


@pytest.fixture
def private_ray():
    yield
    ray.shutdown()


def test_a_sweep_trains_the_configurations_a_searcher_registered_in_a_test_proposes(fixed_list_algorithm,
                                                                                      private_ray, tmp_path):
    cfg = parse_config({
        "name": "fixed-list", "output_dir": str(tmp_path / "runs"),
        "data": {"source": "default", "synth": {"train": 8, "val": 4, "size": 64, "seed": 0}, "calibration_images": 4},
        "student": {"model": "n"},
        "search": {"quantization": {"choice": ["fp32", "int8"]}, "epochs": {"choice": [1, 2]}},
        "fixed": {"img_size": 64},
        "searcher": {"algorithm": fixed_list_algorithm, "trials": 2, "concurrency": 2, "max_failures": 0},
        "resources": {"train": {"cpu": 0.25}, "export": {"cpu": 0.25}},
        "board": {"name": "local", "timing": {"warmup_runs": 2, "min_runs": 5, "min_seconds": 0.05}},
        "mlflow": {"experiment": "fixed-list"}}, base_dir=tmp_path)
    assert not cfg.searcher.uses_optuna
    result = run_sweep(cfg, stages=StandInStages(train_seconds=0.1), show_progress=False)
    assert len(result.records) == 2 and all(r.complete for r in result.records)
    trained = sorted((r.knobs["quantization"], r.knobs["epochs"]) for r in result.records)
    assert trained == sorted((c["quantization"], c["epochs"]) for c in CONFIGS[:2])
    assert not (cfg.sweep_dir / STUDY_DB).exists()
