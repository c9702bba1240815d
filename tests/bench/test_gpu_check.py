"""bench/gpu_check.py and bench/gpu_check.sh on a CPU: each part runs with `--device cpu` and its
smallest budget, prints its figures and writes them to the JSON; the CUDA path runs only where a
CUDA device is (on the GPU day), and is skipped here with that reason."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = _load()


def _no_cuda() -> bool:
    import torch

    return not torch.cuda.is_available()


def _hide(monkeypatch, *modules: str) -> None:
    """Make `modules` look uninstalled to the checks (importlib.util.find_spec)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in modules else real(name, *a))


def test_images_per_second_on_the_cpu_prints_its_figure_and_writes_the_json(tmp_path, capsys):
    figures = tmp_path / "gpu_check.json"
    assert gpu_check.main(["images-per-second", "--device", "cpu", "--quick", "--json", str(figures),
                           "--work", str(tmp_path / "work")]) == 0
    printed = capsys.readouterr().out
    assert "cpu  fp32 (float32):" in printed and "images/s over" in printed
    ips = json.loads(figures.read_text())["images_per_second"]
    assert {"model", "train_images", "img_size", "batch_size", "runs", "ratios"} <= set(ips)
    assert (ips["model"], ips["img_size"], ips["train_images"]) == ("yolon", 128, 48)  # the demo's model and size
    first = ips["runs"][0]
    assert (first["device"], first["precision"], first["autocast"]) == ("cpu", "fp32", None)
    assert first["images_per_s"] > 0 and first["images"] > 0
    assert "cuda_init_s" not in ips  # a CPU run creates no CUDA context


def test_the_batch_clock_counts_the_images_after_the_warm_up_and_stops_after_its_seconds(monkeypatch):
    now = iter([0.0, 1.0, 2.0, 3.0, 4.0])
    monkeypatch.setattr(gpu_check.time, "perf_counter", lambda: next(now))
    clock = gpu_check.BatchClock(images=40, batch_size=16, warmup=1, seconds=2.0)
    clock(1, 1, 3, {})  # warm-up: the clock starts at its end (t=0)
    clock(1, 2, 3, {})  # 16 images at t=1
    with pytest.raises(gpu_check._SliceDone):
        clock(1, 3, 3, {})  # the last, partial batch: 8 images at t=2, and the 2 s are up
    assert (clock.counted, clock.images_per_second) == (24, 12.0)


def test_speed_ups_compare_the_gpu_runs_with_the_cpus_fp32_run():
    runs = [{"device": "cuda", "precision": "fp32", "images_per_s": 1000.0},
            {"device": "cuda", "precision": "amp", "images_per_s": 1500.0},
            {"device": "cpu", "precision": "fp32", "images_per_s": 100.0}]
    assert gpu_check.ratios(runs) == {"cuda fp32 / cpu fp32": 10.0, "cuda amp / cpu fp32": 15.0,
                                      "cuda amp / cuda fp32": 1.5}


def test_preflight_names_the_packages_each_part_lacks(tmp_path, capsys, monkeypatch):
    _hide(monkeypatch, "ray")
    figures = tmp_path / "gpu_check.json"
    assert gpu_check.main(["preflight", "--json", str(figures)]) == gpu_check.SKIPPED
    printed = capsys.readouterr().out
    assert "images-per-second  ready" in printed
    assert "pool-overhead      cannot run: no module ray (pip: ray)" in printed
    assert "sweep              cannot run: no module ray (pip: ray)" in printed
    env = json.loads(figures.read_text())["environment"]
    assert env["runnable"] == {"images-per-second": True, "pool-overhead": False, "sweep": False}
    assert {"python", "torch", "cuda", "gpu", "cpus"} <= set(env)


def test_a_part_whose_packages_are_missing_exits_skipped_naming_them(capsys, monkeypatch):
    _hide(monkeypatch, "mlflow", "optuna")
    with pytest.raises(SystemExit) as stopped:
        gpu_check.require("sweep", "cpu")
    assert stopped.value.code == gpu_check.SKIPPED
    assert "no module mlflow (pip: mlflow), no module optuna (pip: optuna)" in capsys.readouterr().out


@pytest.mark.skipif(not _no_cuda(), reason="this machine has a CUDA device: the CUDA path runs instead")
def test_a_cuda_part_without_a_cuda_device_is_skipped_with_that_reason(capsys):
    with pytest.raises(SystemExit) as stopped:
        gpu_check.require("images-per-second", "cuda")
    assert stopped.value.code == gpu_check.SKIPPED
    assert "no CUDA device for torch" in capsys.readouterr().out


@pytest.mark.skipif(_no_cuda(), reason="no CUDA GPU on this machine: the CUDA path runs on a GPU machine "
                                       "(bench/gpu_check.sh on the GPU day)")
def test_images_per_second_on_cuda_times_fp32_and_amp_against_the_cpu(tmp_path):
    figures = tmp_path / "gpu_check.json"
    assert gpu_check.main(["images-per-second", "--device", "cuda", "--quick", "--json", str(figures),
                           "--work", str(tmp_path / "work")]) == 0
    ips = json.loads(figures.read_text())["images_per_second"]
    assert ips["cuda_init_s"] > 0
    assert [(r["device"], r["precision"], r["autocast"]) for r in ips["runs"][:2]] == [
        ("cuda", "fp32", None), ("cuda", "amp", "float16")]
    assert "cuda amp / cpu fp32" in ips["ratios"]


def test_the_sweep_is_the_demo_with_4_trials_training_on_the_gpu(tmp_path):
    raw, changes = gpu_check.sweep_config(gpu_check.parse_args(["sweep", "--work", str(tmp_path)]))
    cfg = gpu_check.parse_demo(raw)
    assert (cfg.searcher.trials, cfg.resources.train.gpu, cfg.name) == (4, 1, "gpu-check-cuda")
    assert cfg.sweep_dir == (tmp_path / "gpu-check-cuda").resolve()
    demo = gpu_check.parse_demo(gpu_check.demo_raw([]))
    assert cfg.search.params["kd_method"] == demo.search.params["kd_method"]  # otherwise the demo's search
    assert "searcher.trials=4" in changes


def test_the_sweep_leaves_tflite_out_when_its_converter_is_missing(tmp_path, capsys, monkeypatch):
    _hide(monkeypatch, "litert_torch")
    args = gpu_check.parse_args(["sweep", "--device", "cpu", "--work", str(tmp_path)])
    raw, _ = gpu_check.sweep_config(args)
    cfg = gpu_check.parse_demo(raw)
    assert "runtime" not in cfg.search.params and cfg.search.fixed["runtime"] == "onnxruntime"
    assert cfg.resources.train.gpu == 0
    assert "tflite left out (litert_torch not installed)" in capsys.readouterr().out


def test_set_and_drop_change_the_demo_file():
    raw = gpu_check.demo_raw(["fixed.epochs=3", "search.kd_method={choice: [none, cwd]}", "new.key=[1, 2]"],
                             ["search.kd_factor", "no.such.key"])
    assert raw["fixed"]["epochs"] == 3 and raw["search"]["kd_method"] == {"choice": ["none", "cwd"]}
    assert raw["new"] == {"key": [1, 2]} and "kd_factor" not in raw["search"]
    with pytest.raises(SystemExit, match="expected KEY=VALUE"):
        gpu_check.demo_raw(["fixed.epochs"])


@pytest.mark.slow
def test_the_whole_script_runs_every_part_on_the_cpu_with_its_smallest_budgets(tmp_path):
    """bench/gpu_check.sh --device cpu --quick: the pool overhead on a mock GPU, a 2-trial sweep on
    CPU slots (about 2 minutes here). Each part prints its figures and adds them to the JSON."""
    env = {**os.environ, "OUT": str(tmp_path / "out"), "GPU_CHECK_WORK": str(tmp_path / "work")}
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--device", "cpu", "--quick"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    printed = done.stdout
    assert done.returncode == 0, printed + done.stderr
    for part in ("images-per-second", "pool-overhead", "sweep"):
        assert any(line.split()[:2] == [part, "done"] for line in printed.splitlines()), printed
    assert "images/s over" in printed and "trainer actor (GPU slot of the pool)" in printed
    assert "sweep wall time" in printed
    figures = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert set(figures) == {"environment", "images_per_second", "pool_overhead", "sweep"}
    ways = figures["pool_overhead"]["ways"]
    assert len(ways) == 3 and all({"first", "median_wall", "median_overhead", "runs"} <= set(w)
                                  for w in ways.values())
    sweep = figures["sweep"]
    assert (sweep["finished"], sweep["complete"], sweep["failed"]) == (True, 2, 0) and sweep["wall_s"] > 0
    assert [e["status"] for e in sweep["ended"]] == ["complete", "complete"]


def test_the_script_says_which_python_it_found_without_torch(tmp_path):
    """With no Python that imports torch, the script exits 3 naming what each candidate said."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python3"
    fake.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'torch'\" >&2\nexit 1\n")
    fake.chmod(0o755)
    copy = tmp_path / "repo"
    (copy / "bench").mkdir(parents=True)
    for name in ("gpu_check.sh", "gpu_check.py"):
        (copy / "bench" / name).write_bytes((REPO / "bench" / name).read_bytes())
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OUT": str(tmp_path / "out")}
    done = subprocess.run(["bash", str(copy / "bench" / "gpu_check.sh")], cwd=copy, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 3
    assert "no Python here imports torch" in done.stdout and "No module named 'torch'" in done.stdout
