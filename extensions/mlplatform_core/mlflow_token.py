"""A workload's MLflow credential on Kubernetes: a service-account token the kubelet projects for MLflow.

RayService and SparkApplication pods mount it (audience `mlflow`, so it is no use against the API
server; renewed by the kubelet) and MLflow's `mlplatform` auth plugin reads it from TOKEN_FILE instead
of asking the hub. MLflow verifies it with the cluster issuer's keys and gives the pod's account the
role the platform's auth.ini names for it in its team (hub_config/mlflow_access/server.py).
"""

from __future__ import annotations

from .contract import MLFLOW_AUTH_PLUGIN, variable

AUDIENCE = "mlflow"  # every token MLflow accepts is for this audience, the hub's too
TOKEN_FILE_VARIABLE = "MLPLATFORM_MLFLOW_TOKEN_FILE"
MOUNT_PATH = "/var/run/secrets/mlflow"  # not the API token's path: Spark drivers have that one too
TOKEN_FILE = f"{MOUNT_PATH}/token"
LIFETIME_SECONDS = 3600

VOLUME = {"name": "mlflow-token", "projected": {"sources": [
    {"serviceAccountToken": {"audience": AUDIENCE, "expirationSeconds": LIFETIME_SECONDS, "path": "token"}}]}}
MOUNT = {"name": "mlflow-token", "mountPath": MOUNT_PATH, "readOnly": True}


def environment() -> dict[str, str]:
    """The variables that make MLflow's client use the projected token."""
    return {variable("mlflow_tracking_auth"): MLFLOW_AUTH_PLUGIN, TOKEN_FILE_VARIABLE: TOKEN_FILE}


def enabled(catalog) -> bool:
    """Whether workloads get the token: MLflow checks tokens and trusts the cluster's service-account issuer."""
    return catalog.mlflow.access.mode == "hub-tokens" and bool(catalog.kubernetes.service_account_issuer)
