"""SearchSpace against the real consumers: Optuna studies, Ray Tune's OptunaSearch and Tune's variant generator."""
from __future__ import annotations

import math
import pickle
import subprocess
import sys

import optuna
import pytest

from search_spaces import BRANCH_PREFIX, ActiveWhen, Choice, Grid, IntRange, LogUniform, SearchSpace, Uniform

optuna.logging.set_verbosity(optuna.logging.WARNING)

DEFAULTS = {"student": "n", "epochs": 10, "kd_method": "none", "teacher": None, "kd_factor": 1.0, "fm_nms": True,
            "quantization": "fp32", "threads": 1}
DISTILLING = ("output", "feature", "cwd")
CONDITIONS = {"teacher": ActiveWhen("kd_method", DISTILLING), "kd_factor": ActiveWhen("kd_method", DISTILLING),
              "fm_nms": ActiveWhen("kd_method", ("output",))}
KD_KNOBS = ("teacher", "kd_factor", "fm_nms")


def kd_space() -> SearchSpace:
    """A sampled space with every parameter type and conditional knobs under a searched parent."""
    return SearchSpace(
        params={"kd_method": Choice(("none", *DISTILLING)), "teacher": Choice(("s", "m")),
                "kd_factor": LogUniform(0.1, 10.0), "fm_nms": Choice((True, False)),
                "epochs": IntRange(4, 12, step=4), "quantization": Choice(("fp32", "int8"))},
        fixed={"threads": 2}, defaults=DEFAULTS, conditions=CONDITIONS)


def grid_space() -> SearchSpace:
    """The thesis-like grid: kd_method none must not be repeated per teacher and factor."""
    return SearchSpace(
        params={"kd_method": Grid(("none", "output", "feature")), "teacher": Grid(("m", "l")),
                "kd_factor": Grid((0.5, 1.0, 2.0)), "epochs": Grid((10, 30)),
                "quantization": Grid(("fp32", "dynamic"))},
        fixed={"fm_nms": False}, defaults={**DEFAULTS, "teacher": "m"}, conditions=CONDITIONS)


def test_define_by_run_suggests_kd_knobs_only_when_distilling():
    space = kd_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_methods = set()
    for _ in range(60):
        trial = study.ask()
        constants = space.suggest(trial)
        method = trial.params["kd_method"]
        seen_methods.add(method)
        assert ("teacher" in trial.params) == (method != "none")
        assert ("kd_factor" in trial.params) == (method != "none")
        assert ("fm_nms" in trial.params) == (method == "output")
        config = {**trial.params, **(constants or {})}  # what Ray's OptunaSearch merges
        assert list(sorted(config)) == sorted(DEFAULTS)
        assert config == space.complete(trial.params)
        assert set(constants) == set(DEFAULTS) - set(trial.params)  # only constants come back
        if method == "none":
            assert (config["teacher"], config["kd_factor"], config["fm_nms"]) == (None, 1.0, True)
        assert config["threads"] == 2 and config["epochs"] in (4, 8, 12)
        study.tell(trial, 0.0)
    assert seen_methods == {"none", *DISTILLING}


def test_ray_optuna_search_gives_complete_flat_configs():
    from ray.tune.search.optuna import OptunaSearch

    space = kd_space()
    searcher = OptunaSearch(space=space.suggest, metric=["map50_95", "latency_ms"], mode=["max", "min"],
                            sampler=optuna.samplers.TPESampler(seed=1, n_startup_trials=3))
    for i in range(6):
        config = searcher.suggest(f"trial_{i}")
        assert set(config) == set(DEFAULTS)
        assert config == space.complete(config)
        assert all(v is None or isinstance(v, (str, int, float, bool)) for v in config.values())
        searcher.on_trial_complete(f"trial_{i}", {"map50_95": 0.1 * i, "latency_ms": 10.0 - i})


def test_define_by_run_function_survives_pickling():
    """Tune checkpoints OptunaSearch by pickling it, define-by-run function included."""
    space = kd_space()
    restored = pickle.loads(pickle.dumps(space.suggest))
    a = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3)).ask()
    b = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3)).ask()
    assert space.suggest(a) == restored(b) and a.params == b.params


def _tune_variants(space: SearchSpace) -> list[dict]:
    from ray.tune.search.variant_generator import generate_variants

    return [space.complete(config) for _, config in generate_variants(space.tune_param_space())]


def test_grid_enumerates_the_conditional_product_exactly():
    space = grid_space()
    # 2 epochs x 2 quantizations x (none + 2 methods x 2 teachers x 3 factors)
    expected = 2 * 2 * (1 + 2 * 2 * 3)
    assert space.grid_size() == expected == 52
    points = list(space.grid_points())
    keys = [tuple(sorted(p.items(), key=lambda kv: kv[0])) for p in points]
    assert len(set(keys)) == expected
    tune_points = _tune_variants(space)
    assert len(tune_points) == expected
    assert sorted(map(repr, keys)) == sorted(repr(tuple(sorted(p.items()))) for p in tune_points)
    baseline = [p for p in points if p["kd_method"] == "none"]
    assert len(baseline) == 4 and all(p["teacher"] == "m" and p["kd_factor"] == 1.0 for p in baseline)


def test_grid_without_conditional_knobs_is_the_plain_product():
    space = SearchSpace(params={"epochs": Grid((5, 10, 20)), "quantization": Grid(("fp32", "int8"))},
                        defaults=DEFAULTS, conditions=CONDITIONS)
    assert space.grid_size() == 6
    assert not any(k.startswith(BRANCH_PREFIX) for k in space.tune_param_space())
    assert sorted((p["epochs"], p["quantization"]) for p in _tune_variants(space)) == sorted(
        (e, q) for e in (5, 10, 20) for q in ("fp32", "int8"))


def test_grid_size_is_none_unless_every_knob_is_a_grid():
    assert kd_space().grid_size() is None
    with pytest.raises(ValueError, match="Grid"):
        next(kd_space().grid_points())


def test_tune_param_space_builds_real_tune_domains():
    from ray.tune.search.sample import Categorical, Float, Integer, LogUniform as TuneLogUniform

    space = SearchSpace(params={"kd_method": Choice(("none", "output")), "kd_factor": LogUniform(0.1, 10.0),
                                "epochs": IntRange(5, 9), "threads": IntRange(1, 5, step=2),
                                "teacher": Choice(("s", "m"))},
                        fixed={"fm_nms": False}, defaults=DEFAULTS, conditions=CONDITIONS)
    tune_space = space.tune_param_space()
    assert isinstance(tune_space["kd_method"], Categorical) and tune_space["kd_method"].categories == ["none", "output"]
    assert isinstance(tune_space["kd_factor"], Float)
    assert isinstance(tune_space["kd_factor"].get_sampler(), TuneLogUniform)
    assert (tune_space["kd_factor"].lower, tune_space["kd_factor"].upper) == (0.1, 10.0)
    epochs = tune_space["epochs"]
    assert isinstance(epochs, Integer) and (epochs.lower, epochs.upper) == (5, 10)  # randint: upper exclusive
    assert isinstance(tune_space["threads"], Categorical) and tune_space["threads"].categories == [1, 3, 5]
    assert tune_space["fm_nms"] is False and tune_space["quantization"] == "fp32"
    uniform = SearchSpace(params={"kd_factor": Uniform(0.5, 2.0)}, defaults=DEFAULTS).tune_param_space()["kd_factor"]
    assert isinstance(uniform, Float) and (uniform.lower, uniform.upper) == (0.5, 2.0)


def test_random_samples_reset_inactive_knobs_to_defaults():
    from ray.tune.search.variant_generator import generate_variants

    space = SearchSpace(params={"kd_method": Choice(("none", "output")), "kd_factor": LogUniform(0.1, 10.0)},
                        defaults=DEFAULTS, conditions=CONDITIONS)
    seen = set()
    for i in range(30):
        (_, raw), = generate_variants(space.tune_param_space(), random_state=i)
        config = space.complete(raw)
        seen.add(config["kd_method"])
        if config["kd_method"] == "none":
            assert config["kd_factor"] == 1.0  # Tune sampled one anyway; it must not leak
        else:
            assert config["kd_factor"] == raw["kd_factor"] and 0.1 <= config["kd_factor"] <= 10.0
        assert isinstance(config["kd_factor"], float)
    assert seen == {"none", "output"}


@pytest.mark.parametrize("sampled, message", [
    ({"kd_method": "output", "kd_factor": 2.0, "teacher": "s", "bogus": 1}, "not knobs of this space: bogus"),
    ({"kd_method": "output", "teacher": "s", "fm_nms": True, "epochs": 4, "quantization": "fp32"},
     "lacks the searched knob kd_factor"),
    ({"kd_method": "attn", "epochs": 4, "quantization": "fp32"}, "kd_method='attn' is outside its search space"),
    ({"kd_method": "none", "epochs": 6, "quantization": "fp32"}, "epochs=6 is outside"),
    ({"kd_method": "none", "epochs": 4, "quantization": "fp32", "threads": 3}, "threads is not searched"),
])
def test_complete_rejects_configs_outside_the_space(sampled, message):
    with pytest.raises(ValueError, match=message):
        kd_space().complete(sampled)


def test_int_range_suggests_on_its_step_grid():
    param = IntRange(96, 320, step=32)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    values = {param.suggest(study.ask(), "img_size") for _ in range(80)}
    assert values <= set(range(96, 321, 32)) and len(values) >= 6
    assert param.contains(128) and not param.contains(100) and not param.contains(352) and not param.contains(True)


@pytest.mark.parametrize("make, message", [
    (lambda: Choice(()), "at least one value"),
    (lambda: Choice(("a", "a")), "twice"),
    (lambda: LogUniform(0.0, 1.0), "low > 0"),
    (lambda: Uniform(2.0, 1.0), "low < high"),
    (lambda: Uniform(0.0, math.inf), "finite"),
    (lambda: IntRange(0, 10, step=3), "divides"),
    (lambda: SearchSpace(params={}, defaults=DEFAULTS), "at least one searched knob"),
    (lambda: SearchSpace(params={"epochs": Choice((1, 2))}, fixed={"epochs": 3}, defaults=DEFAULTS), "both"),
    (lambda: SearchSpace(params={"speed": Choice((1, 2))}, defaults=DEFAULTS), "without a default: speed"),
    (lambda: SearchSpace(params={"epochs": Choice((1, 2))}, defaults=DEFAULTS,
                         conditions={"fm_nms": ActiveWhen("teacher", ("s",)),
                                     "teacher": ActiveWhen("kd_method", ("output",))}),
     "conditional itself"),
])
def test_malformed_parameters_and_spaces_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_choice_tells_booleans_from_integers():
    assert Choice((True, 1, 1.0)).values == (True, 1, 1.0)  # three distinct values, not duplicates
    assert Choice((1, 2)).contains(1) and not Choice((1, 2)).contains(True)


def test_search_spaces_imports_neither_torch_nor_ray_nor_project_packages():
    code = ("import sys, search_spaces; bad = [m for m in ('torch', 'ray', 'trainables', 'orchestrator', "
            "'device_actors', 'optuna') if m in sys.modules]; print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
