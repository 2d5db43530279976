"""The MLflow tracking server's side of access control, for a cluster: its auth app's settings.

`mlflow/auth-config.yaml` is a ConfigMap `mlflow-auth` (in the hub's namespace; move it to MLflow's)
with `auth.ini`. Mount it and the hub's public key into MLflow's pod (images/mlflow) and run

    MLFLOW_AUTH_CONFIG_PATH=/etc/mlflow-auth/auth.ini mlflow server --app-name basic-auth --enable-workspaces ...

with a random MLFLOW_AUTH_ADMIN_PASSWORD (nobody logs in with it) and MLFLOW_RBAC_SEED_DEFAULT_ROLES=false.
The README's "Deploy on Kubernetes" says how to make the key pair.
"""

from __future__ import annotations

from typing import Any

from mlplatform_core.catalog import Catalog

from ..mlflow_access.auth_ini import auth_ini
from ..mlflow_access.tokens import MEMBERS, READERS
from .common import labels

CONFIG_MAP = "mlflow-auth"
PUBLIC_KEY_FILE = "/etc/mlflow-auth/keys/signing.pub.pem"  # from the Secret or ConfigMap holding the public key


def mlflow_auth_config_map(catalog: Catalog) -> dict[str, Any]:
    k8s = catalog.kubernetes
    # RayService replicas read their team's models, Spark jobs log to its experiments, with tokens
    # projected for MLflow (mlplatform_core/mlflow_token.py).
    ini = auth_ini(database_uri=catalog.mlflow.access.auth_database_uri, public_key_file=PUBLIC_KEY_FILE,
                   hub_url=k8s.public_url, protected_aliases=catalog.promotion.protected, issuer=k8s.service_account_issuer, jwks_url=k8s.service_account_jwks_url,
                   namespaces={team.namespace: name for name, team in catalog.teams.items()},
                   service_accounts={k8s.serving_service_account: READERS, k8s.spark_service_account: MEMBERS})
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": CONFIG_MAP, "namespace": k8s.hub_namespace, "labels": labels()},
            "data": {"auth.ini": ini}}
