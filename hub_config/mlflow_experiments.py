"""Each team's default MLflow experiment, created by the hub before a server of the team starts.

Notebooks get MLFLOW_EXPERIMENT_NAME = their team, so `mlflow.start_run()` logs there. When the
catalog sets `mlflow.team_artifact_root`, the experiment is created with that artifact location
(for example s3://platform/teams/team-vision/mlflow), and run artifacts land under the team's prefix,
written by the notebook with its own short-lived credentials. Uses MLflow's REST API.
"""

from __future__ import annotations

import requests
from mlplatform_core.catalog import Catalog


class ExperimentError(RuntimeError):
    pass


def team_artifact_location(catalog: Catalog, team: str) -> str | None:
    root = catalog.mlflow.team_artifact_root
    return root.format(team=team).rstrip("/") if root else None


def ensure_team_experiment(catalog: Catalog, team: str, timeout: float = 10) -> str:
    """The id of the team's experiment, created (with the team's artifact location) if missing."""
    api = catalog.mlflow.tracking_uri.rstrip("/") + "/api/2.0/mlflow/experiments"
    try:
        found = requests.get(f"{api}/get-by-name", params={"experiment_name": team}, timeout=timeout)
        if found.status_code == 200:
            return found.json()["experiment"]["experiment_id"]
        body = {"name": team}
        if location := team_artifact_location(catalog, team):
            body["artifact_location"] = location
        created = requests.post(f"{api}/create", json=body, timeout=timeout)
        if created.status_code == 200:
            return created.json()["experiment_id"]
        if "RESOURCE_ALREADY_EXISTS" in created.text:  # another server of the team was faster
            return ensure_team_experiment(catalog, team, timeout)
        raise ExperimentError(f"MLflow at {catalog.mlflow.tracking_uri} refused to create experiment {team!r}: "
                              f"{created.status_code} {created.text[:200]}")
    except requests.RequestException as e:
        raise ExperimentError(f"MLflow at {catalog.mlflow.tracking_uri} is unreachable: {type(e).__name__}") from None
