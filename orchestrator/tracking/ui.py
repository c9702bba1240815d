"""How a person opens the sweep's MLflow runs: the `mlflow ui` command for a store and the links to
its trials table. Text only; nothing here talks to MLflow.
"""
from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import quote, urlencode

from common.redact import redact
from orchestrator.tracking.names import PARETO_TAG, metric_name


def ui_url(experiment_id: str, *, port: int = 5000, front_only: bool = False) -> str:
    """The trials table of the MLflow 3 UI (its experiment page opens on a GenAI view), ranked by the
    artifact's mAP: sorted by a metric, the UI lists child runs flat instead of folded under the
    sweep's run. `front_only` filters it to the Pareto front."""
    query = {"orderByKey": f"metrics.`{metric_name('map50_95')}`", "orderByAsc": "false"}
    if front_only:
        query["searchFilter"] = f"tags.`{PARETO_TAG}` = 'true'"
    return f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs?{urlencode(query, quote_via=quote)}"


def ui_command(tracking_uri: str) -> str:
    """The command that opens the MLflow UI on this store, on loopback only (MLflow has no login). A
    password in the URI shows as *** (`common.redact`): the user puts it back."""
    mlflow_bin = Path(sys.prefix) / "bin" / "mlflow"  # the environment's own mlflow, activated or not
    program = str(mlflow_bin) if mlflow_bin.exists() else "mlflow"
    return f"{program} ui --backend-store-uri {redact(tracking_uri)} --host 127.0.0.1 --port 5000"


def ui_hint(tracking_uri: str, experiment_id: str) -> str:
    """What `report` prints: the command on its own line (meant to be pasted), then the two views."""
    return (f"MLflow UI: {ui_command(tracking_uri)}\n  then open {ui_url(experiment_id)} (every trial, by mAP)\n"
            f"  the Pareto front only: {ui_url(experiment_id, front_only=True)}")
