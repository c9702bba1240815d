"""The sweep's MLflow mirror, one job a module:

- `names`: our tag names, the grouped metric names of a trial's results, a trial run's name;
- `store`: `SweepTracking`, the parent and child runs written and read back (with `retried`);
- `callback`: `MlflowTrialCallback`, the Tune callback that writes each trial into its run;
- `ui`: the `mlflow ui` command and the links to the trials table.

Import from those modules. Nothing is re-exported here but the one name below.
"""
# A sweep started before the split saved its Tune state (tuner.pkl) with the trial callback pickled
# as `orchestrator.tracking.MlflowTrialCallback`; `sweep --resume` of such a sweep unpickles it
# through this name. It is here for that reason only.
from orchestrator.tracking.callback import MlflowTrialCallback  # noqa: F401
