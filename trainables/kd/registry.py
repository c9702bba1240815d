"""The KD methods a sweep can name, declared without torch so the config check can read them.

A method is a name, the class that implements it (imported only when a student trains), whether it
needs a teacher, and the knobs only it reads, each with its default and bounds. Adding a method is
one module with its `Distiller` subclass and one `register_kd_method` call (here for the built-in
ones, or in the module that defines it); the sweep's `kd_method` choices, the knobs' conditions and
the CLI follow from the registry.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from common.errors import UserError
from common.knobs import Knob
from common.registry import Registry, load


class KDConfigError(UserError, ValueError):
    """A distillation setting that cannot work (unknown method or knob, teacher/student mismatch)."""


@dataclass(frozen=True)
class KDMethod:
    name: str
    summary: str  # one line: what it distils, after whom
    target: str | Callable | None  # "module:Class" of its Distiller (None: no distillation)
    needs_teacher: bool = True
    knobs: tuple[Knob, ...] = ()  # knobs only this method reads (sweep knobs, e.g. cwd_tau)

    def load(self) -> Callable:
        """The Distiller class (imports torch)."""
        if self.target is None:
            raise KDConfigError(f"KD method {self.name!r} trains without distillation; it has no distiller")
        return load(self.target)

    def params(self, values: Mapping[str, object]) -> dict[str, object]:
        """This method's knob values: the given ones (unknown names refused), defaults for the rest."""
        own = {k.name: k.default for k in self.knobs}
        unknown = sorted(set(values) - set(own))
        if unknown:
            known = ", ".join(own) or "none"
            raise KDConfigError(f"KD method {self.name!r} has no knob {', '.join(unknown)}; its knobs: {known}")
        return {**own, **values}


KD_METHODS: Registry[KDMethod] = Registry("KD method", error=KDConfigError)


def register_kd_method(method: KDMethod, *, replace: bool = False) -> KDMethod:
    """Make `method` a valid `kd_method` everywhere (config, sweep, `train --kd`)."""
    for knob in method.knobs:
        for other in KD_METHODS.values():
            clash = next((k for k in other.knobs if k.name == knob.name), None)
            if other.name != method.name and clash is not None and clash != knob:
                raise ValueError(f"knob {knob.name!r} of KD method {method.name!r} is declared differently by "
                                 f"{other.name!r}; give it another name")
    return KD_METHODS.register(method.name, method, replace=replace)


def kd_method(name: str) -> KDMethod:
    return KD_METHODS.get(name)


def distilling_methods() -> tuple[str, ...]:
    """Methods that train with a teacher: the ones the distillation knobs (teacher, factor) matter for."""
    return tuple(m.name for m in KD_METHODS.values() if m.needs_teacher)


for _method in (
    KDMethod("none", "plain training: the baseline", None, needs_teacher=False),
    KDMethod("output", "output distillation (Mehta & Ozturk 2018), objectness-weighted, with Feature-Map NMS",
             "trainables.kd.output:OutputDistiller",
             knobs=(Knob("fm_nms", bool, True, "Feature-Map NMS of the teacher's class maps (output KD)"),)),
    KDMethod("feature", "fine-grained feature imitation (Wang et al. 2019) on the neck outputs",
             "trainables.kd.feature:FeatureImitationDistiller"),
    KDMethod("cwd", "channel-wise distillation (Shu et al. 2021) on the neck outputs, cosine-decayed",
             "trainables.kd.cwd:CWDDistiller",
             knobs=(Knob("cwd_tau", float, 1.0, "softmax temperature of channel-wise distillation", above=0),)),
    KDMethod("pkd", "Pearson-correlation feature distillation (Cao et al. 2022) on the neck outputs",
             "trainables.kd.cwd:PKDDistiller"),
):
    register_kd_method(_method)
