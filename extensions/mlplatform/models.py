"""Registered models as the widgets and the REST API list them: names, versions, aliases."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .mlflow_health import require_mlflow

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


def list_models(client: MlflowClient | None = None) -> list[dict]:
    """Every registered model with its aliases and versions (newest first), as plain JSON."""
    # MLflow takes seconds to import: at the first call, not while the notebook server starts.
    from mlflow.tracking import MlflowClient

    from .registry.facts import all_versions

    client = client or MlflowClient()
    require_mlflow(client.tracking_uri)
    models = []
    for model in client.search_registered_models(order_by=["name ASC"]):
        versions = sorted(all_versions(client, model.name), key=lambda v: int(v.version), reverse=True)
        models.append({
            "name": model.name,
            "description": model.description or "",
            "aliases": dict(model.aliases or {}),
            "versions": [{"version": v.version, "run_id": v.run_id, "status": v.status,
                          "created": v.creation_timestamp} for v in versions],
        })
    return models
