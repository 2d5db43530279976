"""Registered models as the widgets and the REST API list them: names, versions, aliases."""

from __future__ import annotations

from mlflow.tracking import MlflowClient


def list_models(client: MlflowClient | None = None) -> list[dict]:
    """Every registered model with its aliases and versions (newest first), as plain JSON."""
    client = client or MlflowClient()
    models = []
    for model in client.search_registered_models(order_by=["name ASC"]):
        versions = client.search_model_versions(f"name = '{model.name}'", order_by=["version_number DESC"])
        models.append({
            "name": model.name,
            "description": model.description or "",
            "aliases": dict(model.aliases or {}),
            "versions": [{"version": v.version, "run_id": v.run_id, "status": v.status,
                          "created": v.creation_timestamp} for v in versions],
        })
    return models
