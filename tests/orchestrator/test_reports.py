"""The sweep report's latency cells: a latency whose run-to-run CV is above 5 % is marked, with a legend."""
from __future__ import annotations

from types import SimpleNamespace

from orchestrator.reports import NOISY_LEGEND, NOISY_MARK, any_noisy, latency_cell


def test_a_latency_above_five_percent_cv_is_marked_and_a_steady_one_is_not():
    assert latency_cell({"latency_ms": 2.91, "latency_cv": 0.17}, "latency_ms") == f"2.91 {NOISY_MARK}"
    assert latency_cell({"latency_ms": 2.91, "latency_cv": 0.02}, "latency_ms") == 2.91
    assert latency_cell({"latency_ms": 0.5, "latency_cv": 0.05}, "latency_ms") == 0.5  # at the limit: not above


def test_a_latency_without_a_recorded_cv_or_value_is_shown_as_it_is():
    assert latency_cell({"latency_ms@b": 3.0, "latency_cv": 0.9}, "latency_ms@b", cv_key=None) == 3.0
    assert latency_cell({"latency_ms": 3.0}, "latency_ms") == 3.0
    assert latency_cell({"latency_cv": 0.9}, "latency_ms") is None


def test_the_legend_is_needed_only_when_a_trial_is_marked():
    steady, noisy = (SimpleNamespace(metrics={"latency_ms": 1.0, "latency_cv": cv}) for cv in (0.01, 0.3))
    assert not any_noisy([steady]) and any_noisy([steady, noisy])
    assert NOISY_MARK in NOISY_LEGEND and "5%" in NOISY_LEGEND
