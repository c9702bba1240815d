"""Every registered KD method, artifact format, runtime and search algorithm passes its extension
point's conformance class; a new entry is checked here with no test to add."""
from __future__ import annotations

import pytest

from device_actors.runtimes import RUNTIMES
from orchestrator.algorithms import ALGORITHMS
from tests.conformance.formats import FormatConformance
from tests.conformance.kd_methods import KDMethodConformance
from tests.conformance.runtimes import RuntimeConformance
from tests.conformance.searchers import SearcherConformance
from trainables.export import FORMATS
from trainables.kd import distilling_methods


class TestRegisteredKDMethods(KDMethodConformance):
    @pytest.fixture(params=distilling_methods())
    def method(self, request) -> str:
        return request.param


def _format_params() -> list:
    """Every format; one whose build takes minutes (`ArtifactFormat.slow_build`) runs with the slow tests."""
    return [pytest.param(f.name, marks=pytest.mark.slow) if f.slow_build else f.name for f in FORMATS.values()]


class TestRegisteredFormats(FormatConformance):
    @pytest.fixture(params=_format_params())
    def format_name(self, request) -> str:
        return request.param


class TestRegisteredRuntimes(RuntimeConformance):
    @pytest.fixture(params=RUNTIMES.names())
    def runtime_name(self, request) -> str:
        return request.param


class TestRegisteredSearchers(SearcherConformance):
    @pytest.fixture(params=ALGORITHMS.names())
    def algorithm(self, request) -> str:
        return request.param
