"""An artifact format and the runtime that loads it, both registered from this module alone, pass
their conformance classes and are deployed by a real sweep; nothing else in the project names them.

The toy runtime `toyrt` runs ONNX bytes through onnxruntime's bare InferenceSession under a name
and suffix of its own; the toy format `toy-fp32` is the float ONNX under that suffix, for that
runtime. The sweep's training and export are the stand-ins of `orchestrator.stand_in_stages` (their
toy ONNX runs in the format's runtime when that one reads ONNX files); Ray, Tune, the board actor,
the journal and MLflow are real. Ray's workers (trials, the board actor) register the toys too,
through Ray's `worker_process_setup_hook`.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import ray

from device_actors.runtimes import RUNTIMES, RuntimeLoadError, RuntimeOptions, register_runtime
from orchestrator.config import parse_config
from orchestrator.stand_in_stages import StandInStages
from orchestrator.sweep import run_sweep
from tests.conformance.formats import FormatConformance
from tests.conformance.runtimes import RuntimeConformance
from trainables.export import FORMATS, ArtifactFormat, register_format

REPO = Path(__file__).resolve().parents[2]
TOY_RUNTIME, TOY_FORMAT = "toyrt", "toy-fp32"


class ToySession:
    def __init__(self, model: bytes, options: RuntimeOptions):
        import onnxruntime

        settings = onnxruntime.SessionOptions()
        settings.intra_op_num_threads = options.threads
        try:
            self._session = onnxruntime.InferenceSession(model, settings, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises several unrelated types
            raise RuntimeLoadError(f"toyrt cannot load this model: {e}") from e
        self._input = self._session.get_inputs()[0].name
        self.input_hw = tuple(int(side) for side in self._session.get_inputs()[0].shape[2:4])

    def run(self, image: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: image})[0]


class ToyRuntime:
    name, suffix = TOY_RUNTIME, ".toyonnx"

    def module(self) -> str | None:
        import importlib.util

        return "onnxruntime" if importlib.util.find_spec("onnxruntime") else None

    def available(self) -> bool:
        return self.module() is not None

    def version(self) -> str:
        import onnxruntime

        return f"toyrt on onnxruntime {onnxruntime.__version__}"

    def recognises(self, model: bytes) -> bool:
        return model[:1] == b"\x08"  # an ONNX ModelProto's first field, ir_version

    def device(self, options: RuntimeOptions) -> str:
        return "CPU (toyrt)"

    def load(self, model: bytes, options: RuntimeOptions) -> ToySession:
        return ToySession(model, options)


def toy_float_onnx(ctx, path) -> dict:
    """The float ONNX of the export run, as the toy format's file."""
    source, settings = ctx.float_onnx()
    shutil.copyfile(source, path)
    return settings


def register_toys() -> None:
    """Register the toy runtime and format in this process (also Ray's setup hook of each worker)."""
    if TOY_RUNTIME not in RUNTIMES:
        register_runtime(ToyRuntime())
    if TOY_FORMAT not in FORMATS:
        register_format(ArtifactFormat(TOY_FORMAT, TOY_RUNTIME, "fp32", ToyRuntime.suffix,
                                       "the float ONNX, run by the toy runtime", toy_float_onnx,
                                       from_float_onnx=True))


@pytest.fixture(scope="module")
def toys():
    register_toys()
    yield
    FORMATS.unregister(TOY_FORMAT)
    RUNTIMES.unregister(TOY_RUNTIME)


class TestToyFormatConforms(FormatConformance):
    @pytest.fixture
    def format_name(self, toys) -> str:
        return TOY_FORMAT


class TestToyRuntimeConforms(RuntimeConformance):
    @pytest.fixture
    def runtime_name(self, toys) -> str:
        return TOY_RUNTIME


@pytest.fixture
def ray_with_toys(toys):
    """A private Ray cluster whose every worker registers the toys before it runs anything."""
    ray.shutdown()
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)  # the hook's module
    ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="WARNING",
             runtime_env={"worker_process_setup_hook": register_toys, "env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


def test_a_sweep_deploys_a_format_registered_in_a_test_and_times_it_in_its_runtime(ray_with_toys, tmp_path):
    cfg = parse_config({
        "name": "toy-format", "output_dir": str(tmp_path / "runs"),
        "data": {"source": "default", "synth": {"train": 8, "val": 4, "size": 64, "seed": 0}, "calibration_images": 4},
        "student": {"model": "n"},
        "search": {"epochs": {"grid": [1, 2]}},
        "fixed": {"img_size": 64, "runtime": TOY_RUNTIME, "quantization": "fp32"},
        "searcher": {"algorithm": "grid", "concurrency": 2, "max_failures": 0},
        "resources": {"train": {"cpu": 0.25}, "export": {"cpu": 0.25}},
        "board": {"name": "local", "timing": {"warmup_runs": 2, "min_runs": 5, "min_seconds": 0.05}},
        "mlflow": {"experiment": "toy-format"}}, base_dir=tmp_path)
    result = run_sweep(cfg, stages=StandInStages(train_seconds=0.1), show_progress=False)
    assert len(result.records) == 2 and all(r.complete for r in result.records), [r.error for r in result.records]
    for record in result.records:
        assert record.knobs["runtime"] == TOY_RUNTIME and record.metrics["format"] == TOY_FORMAT
        assert record.metrics["latency_ms"] > 0
        assert record.artifact.endswith(ToyRuntime.suffix)  # kept in the sweep directory by its format's suffix
    sessions = (cfg.sweep_dir / "report" / "sessions.csv").read_text()
    assert "CPU (toyrt)" in sessions
