"""A notebook server's JupyterHub API token, kept out of its pod's spec.

JupyterHub hands a server its token in the environment (JUPYTERHUB_API_TOKEN, and JPY_API_TOKEN for
old clients), and KubeSpawner writes that environment into the pod spec, where whoever may `get pods`
in the namespace reads it: the Spark drivers' service account may (the Spark operator chart's Role),
so user code in a Spark job could act as any teammate's server. Here the token goes into a Secret of
its own, which the pod's env references (`secretKeyRef`); the kubelet resolves it, the pod object
shows only the reference, and in team namespaces nothing but the hub may read Secrets.

Pure functions, plain dicts in and out (like kubespawner/objects.py); the spawner creates the Secret
before the pod and deletes it when the server stops.
"""

from __future__ import annotations

import base64
from typing import Any

TOKEN_VARIABLES = ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN")
TOKEN_KEY = "token"
COMPONENT = {"app.kubernetes.io/component": "server-api-token"}


def token_secret_name(pod_name: str) -> str:
    """`jupyter-alice` → `jupyter-alice-api-token` (pod names are ≤ 63 characters; Secret names may be 253)."""
    return f"{pod_name}-api-token"


def token_secret(name: str, namespace: str, token: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace, "labels": {**labels, **COMPONENT}},
            "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()}}


def env_without_token(env: dict[str, Any], secret_name: str) -> dict[str, Any]:
    """`env` with every token variable it has turned into a reference to the Secret (KubeSpawner's make_pod
    takes a dict value as an EnvVar, and writes its name into it: one dict each)."""
    def reference() -> dict[str, Any]:
        return {"valueFrom": {"secretKeyRef": {"name": secret_name, "key": TOKEN_KEY}}}
    return {key: (reference() if key in TOKEN_VARIABLES else value) for key, value in env.items()}
