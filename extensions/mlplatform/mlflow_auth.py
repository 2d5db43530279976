"""MLflow's request auth plugin `mlplatform`: short-lived MLflow tokens from the hub, renewed on their own.

The hub starts every server with (see the environment contract)

    MLFLOW_TRACKING_AUTH=mlplatform
    MLPLATFORM_MLFLOW_TOKEN_URL=<hub>/hub/api/mlplatform/mlflow-token/<user>?server=<name>
    MLFLOW_WORKSPACE=<team>

and JupyterHub gives it JUPYTERHUB_API_TOKEN. MLflow's REST client then asks this plugin (entry point
`mlflow.request_auth_provider`) for a `requests` auth on every call, so `mlflow` and `MlflowClient`
just work, with no password anywhere. Pods of RayServices and SparkApplications in a cluster have
MLPLATFORM_MLFLOW_TOKEN_FILE instead: a service-account token the kubelet projects for MLflow and
renews (mlplatform_core/mlflow_token.py). A requests auth is applied after MLflow's own headers: it
wins over a stray MLFLOW_TRACKING_TOKEN. A token is kept until less than min(60 s, half its lifetime)
is left, and fetched (or read) again once when MLflow answers 401 (a membership change or a clock skew).
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from pathlib import Path

import requests
from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider
from mlplatform_core.contract import MLFLOW_AUTH_PLUGIN, variable
from mlplatform_core.mlflow_token import TOKEN_FILE_VARIABLE

RENEW_BEFORE = 60.0  # seconds before expiry, at most half the token's lifetime
HUB_TIMEOUT = 10.0


class MlflowTokenUnavailable(RuntimeError):
    """The hub gave no MLflow token (not on the platform, refused, or unreachable)."""


class HubTokenCache:
    """The current MLflow token of this process, from the hub; thread-safe."""

    def __init__(self, environ=os.environ):
        self._environ = environ
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = 0.0

    def token(self, *, fresh: bool = False) -> str:
        with self._lock:
            if fresh or self._token is None or time.time() >= self._renew_at:
                self._token, expires_at = self._fetch()
                lifetime = max(0.0, expires_at - time.time())
                self._renew_at = expires_at - min(RENEW_BEFORE, lifetime / 2)
            return self._token

    def _fetch(self) -> tuple[str, float]:
        if path := self._environ.get(TOKEN_FILE_VARIABLE):
            return _read_projected(path)
        url = self._environ.get(variable("mlflow_token_url"))
        hub_token = self._environ.get("JUPYTERHUB_API_TOKEN")
        if not url or not hub_token:
            raise MlflowTokenUnavailable(
                f"MLFLOW_TRACKING_AUTH={MLFLOW_AUTH_PLUGIN} needs {variable('mlflow_token_url')} and "
                "JUPYTERHUB_API_TOKEN: MLflow tokens come from the hub, in a server the mlplatform hub started")
        try:
            response = requests.get(url, headers={"Authorization": f"token {hub_token}"}, timeout=HUB_TIMEOUT)
        except requests.RequestException as e:
            raise MlflowTokenUnavailable(f"the hub is unreachable for an MLflow token: {type(e).__name__}") from None
        if response.status_code != 200:
            try:
                message = response.json().get("message", "")
            except ValueError:
                message = response.text[:200]
            raise MlflowTokenUnavailable(f"the hub refused an MLflow token ({response.status_code}): {message}")
        body = response.json()
        return body["token"], float(body["expires_at"])


def _read_projected(path: str) -> tuple[str, float]:
    """The token in `path` and its expiry (the JWT's `exp`, read without checking: MLflow checks it)."""
    try:
        token = Path(path).read_text().strip()
        payload = token.split(".")[1]
        expires_at = float(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])
    except (OSError, IndexError, ValueError, KeyError) as e:
        raise MlflowTokenUnavailable(f"no MLflow token in {path} ({type(e).__name__}): the pod's projected "
                                     "service-account token for MLflow is missing or not a JWT") from None
    return token, expires_at


class HubBearerAuth(requests.auth.AuthBase):
    """`Authorization: Bearer <MLflow token>`; on a 401, one retry with a fresh token."""

    def __init__(self, cache: HubTokenCache):
        self.cache = cache

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self.cache.token()}"
        request.register_hook("response", self._retry_once_on_401)
        return request

    def _retry_once_on_401(self, response, **kwargs):
        if response.status_code != 401 or getattr(response.request, "mlplatform_retried", False):
            return response
        response.content  # noqa: B018 - read it, so the connection is released
        retry = response.request.copy()
        retry.mlplatform_retried = True
        retry.headers["Authorization"] = f"Bearer {self.cache.token(fresh=True)}"
        again = response.connection.send(retry, **kwargs)
        again.history.append(response)
        return again


_AUTH = HubBearerAuth(HubTokenCache())


class HubTokenAuthProvider(RequestAuthProvider):
    """Entry point `mlflow.request_auth_provider`, chosen by MLFLOW_TRACKING_AUTH=mlplatform."""

    def get_name(self) -> str:
        return MLFLOW_AUTH_PLUGIN

    def get_auth(self) -> HubBearerAuth:
        return _AUTH
