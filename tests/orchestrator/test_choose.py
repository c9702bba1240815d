"""`best`'s rule: the most accurate trial, or with an accuracy floor the fastest one above it, among
complete trials that meet the sweep's constraints and the given limits."""
from __future__ import annotations

from orchestrator.config import ConstraintsConfig
from orchestrator.pareto import choose
from orchestrator.results import TrialRecord


def _t(trial_id: str, map50_95: float, latency_ms: float, status: str = "complete") -> TrialRecord:
    return TrialRecord(trial_id, status, {}, {"map50_95": map50_95, "latency_ms": latency_ms})


TRIALS = [_t("slow-best", 0.40, 9.0), _t("mid", 0.30, 5.0), _t("fast", 0.20, 1.0), _t("mid-twin", 0.30, 4.0),
          _t("failed-great", 0.90, 0.5, status="failed")]


def test_without_limits_the_most_accurate_complete_trial():
    assert choose(TRIALS).trial_id == "slow-best"


def test_under_a_latency_cap_the_most_accurate_one_that_fits():
    assert choose(TRIALS, max_latency_ms=5.0).trial_id == "mid-twin"  # equal mAP: the faster
    assert choose(TRIALS, max_latency_ms=0.9) is None


def test_above_an_accuracy_floor_the_fastest():
    assert choose(TRIALS, min_map=0.25).trial_id == "mid-twin"
    assert choose(TRIALS, min_map=0.35, max_latency_ms=8.0) is None


def test_the_sweeps_own_constraints_still_hold():
    assert choose(TRIALS, ConstraintsConfig(latency_ms_max=3.0)).trial_id == "fast"
