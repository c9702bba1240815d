"""Search spaces of EdgeSweep sweeps: pure declarations, no torch, no I/O.

`SearchSpace.suggest` is the define-by-run function for Ray Tune's `OptunaSearch`;
`SearchSpace.tune_param_space` is the `param_space` for Tune's random and grid search; both end in
`SearchSpace.complete`, one flat dict with every knob.
"""
from search_spaces.params import Choice, Grid, IntRange, LogUniform, Param, Uniform, Value
from search_spaces.space import BRANCH_PREFIX, ActiveWhen, SearchSpace

__all__ = ["BRANCH_PREFIX", "ActiveWhen", "Choice", "Grid", "IntRange", "LogUniform", "Param", "SearchSpace",
           "Uniform", "Value"]
