"""The Python API of model serving, on the backend the platform chose (MLPLATFORM_BACKEND).

    from mlplatform import serving
    serving.deploy("iris", "models:/iris@champion", replicas=2, wait=True)["url"]
    serving.predict("iris", [{"x1": 0.1, "x2": 1.0}])            # → [0]
    serving.status("iris")["state"]      # submitted, starting, deploying, running, failed
    serving.deploy("iris", "models:/iris/4")                      # replaces it, no failed request
    serving.delete("iris")

Every function answers plain JSON-serializable values (see backend.py); the REST API and the widget
call these. Bad input raises InvalidServingRequest (a ValueError naming each field) and an unknown
model ModelNotFound, both before anything is deployed; errors carry `status_code` for the REST API.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import requests
from mlplatform_core.catalog import CatalogError
from mlplatform_core.contract import FORWARDED_TO_SERVING, PlatformEnvironment

from ..environment import read_environment
from ..localhost import wait_until
from ..mlflow_health import require_mlflow
from .backend import SETTLED_STATES, ServingBackend
from .errors import BackendUnavailable, DeploymentNotFound, PredictionFailed, ServingError
from .models import resolve
from .spec import serving_request

BACKENDS = ("local", "kubernetes")


def backend(environ: Mapping[str, str] | None = None) -> ServingBackend:
    """The backend named by MLPLATFORM_BACKEND in `environ` (default: this process's environment);
    `local` when it is unset (outside the platform). One per environment: it keeps its connections."""
    env = os.environ if environ is None else environ
    platform = read_environment(env)
    if platform.backend == "local":
        from .local import LocalRayConfig  # the local head's settings are the machine's, not the contract's

        return _backend(platform, LocalRayConfig.from_environ(env))
    return _backend(platform, None)


@lru_cache(maxsize=8)
def _backend(platform: PlatformEnvironment, ray_config) -> ServingBackend:
    if platform.backend == "local":
        from .local import LocalServing

        from ..gitops import GitOps

        return LocalServing(ray_config, environment=platform, gitops=GitOps.for_environment(platform, required=False))
    if platform.backend == "kubernetes":  # imported here: the Kubernetes client is slow to import
        from ..gitops import GitOps, GitOpsRefused
        from .kubernetes import KubernetesServing, KubernetesServingConfig

        try:
            gitops = GitOps.for_environment(platform)
        except GitOpsRefused as e:
            raise BackendUnavailable(str(e)) from None
        return KubernetesServing(KubernetesServingConfig.for_environment(platform), gitops=gitops)
    raise BackendUnavailable(f"MLPLATFORM_BACKEND is {platform.backend!r}; allowed: {', '.join(map(repr, BACKENDS))}")


def deploy(name: str, model_uri: str, *, replicas: int | None = None, min_replicas: int | None = None,
           max_replicas: int | None = None, cpus: float = 1.0, gpus: float = 0, max_batch_size: int = 32,
           batch_wait_timeout_s: float = 0.002, max_ongoing_requests: int | None = None, task: str | None = None,
           wait: bool = False, timeout: float = 300.0) -> dict[str, Any]:
    """Serve a registered model as application `name` (a DNS label), or replace what `name` serves.

    `model_uri`: `models:/<name>@<alias>` or `models:/<name>/<version>`; an alias is resolved now and
    the version pinned. `replicas`, or `min_replicas`/`max_replicas` to autoscale; `cpus`/`gpus` per
    replica; `max_batch_size` requests are scored together. `task="text-generation"` adds
    `/generate` (read from the model's metadata when unset). `wait`: return once running or failed.
    Answers the status (see backend.py)."""
    env = read_environment()
    request = serving_request(name=name, model_uri=model_uri, replicas=replicas, min_replicas=min_replicas,
                              max_replicas=max_replicas, cpus=cpus, gpus=gpus, max_batch_size=max_batch_size,
                              batch_wait_timeout_s=batch_wait_timeout_s, max_ongoing_requests=max_ongoing_requests,
                              task=task, **_team_limits(env))
    chosen = backend()
    require_mlflow()  # after validation: bad input is a 400 whether MLflow is up or not
    resolved = resolve(request.model_uri)
    app_env = dataclasses.replace(env, mlflow_tracking_uri=resolved.tracking_uri).variables(FORWARDED_TO_SERVING)
    owner = {k: v for k, v in (("user", env.user), ("team", env.team)) if v}
    result = chosen.deploy(request, model_version=resolved.version, env=app_env, owner=owner)
    return wait_until_settled(name, timeout) if wait else result


def status(name: str) -> dict[str, Any]:
    """The application's state, endpoint URL, model version and replicas."""
    return backend().status(name)


def delete(name: str, *, wait: bool = True) -> dict[str, Any]:
    """Remove the application (with `wait`, once its endpoint is gone)."""
    return backend().delete(name, wait=wait)


def deployments() -> list[dict[str, Any]]:
    """The status of every application."""
    chosen = backend()
    return [chosen.status(n) for n in chosen.names()]


def wait_until_settled(name: str, timeout: float = 300.0, interval: float = 1.0) -> dict[str, Any]:
    """Poll until the application runs or failed (every 0.1 s at first, then less often, up to every
    `interval` seconds); the last status when `timeout` passes."""
    latest: dict[str, Any] = {}

    def settled() -> bool:
        latest.clear()
        latest.update(status(name))
        return latest["state"] in SETTLED_STATES

    wait_until(settled, timeout, interval, first=min(0.1, interval))  # fast at first: a replica may be up in seconds
    return latest


def predict(name: str, rows: Any, *, timeout: float = 60.0) -> list:
    """Predictions for `rows` (a list of records, a pandas DataFrame, or split orient) from the
    application's `/predict`. An error answer raises PredictionFailed with its status and message."""
    if hasattr(rows, "to_dict"):  # a DataFrame
        rows = rows.to_dict(orient="split")
    return _post(name, "predict", rows, timeout)["predictions"]


def generate(name: str, prompt: str | list[str], *, max_tokens: int = 128, timeout: float = 300.0) -> list[str]:
    """Texts generated for `prompt` (one per prompt) by a text-generation application's `/generate`."""
    body = {"prompt": prompt} if isinstance(prompt, str) else {"prompts": list(prompt)}
    return _post(name, "generate", {**body, "max_tokens": max_tokens}, timeout)["generations"]


def _post(name: str, route: str, body: Any, timeout: float) -> dict:
    chosen = backend()
    url = f"{chosen.url(name)}/{route}"
    try:
        r = requests.post(url, json=body, timeout=timeout)
    except requests.RequestException as e:
        if name not in chosen.names():  # nothing to reach: the caller's mistake, not an outage
            raise DeploymentNotFound(f"no serving application {name!r}; applications: "
                                     f"{', '.join(chosen.names()) or 'none'}") from None
        raise PredictionFailed(503, f"cannot reach {url}: {type(e).__name__}: {e}") from None
    if r.ok:
        return r.json()
    try:
        message = r.json()["message"]  # the application's own error
    except (ValueError, KeyError, TypeError):
        message = r.text.strip() or r.reason
        if r.status_code == 404:  # the ingress: no application at this route
            message = f"no serving application {name!r} answers at {url} ({message})"
    raise PredictionFailed(r.status_code, message)


def _team_limits(env: PlatformEnvironment) -> dict[str, Any]:
    """The team's GPU quota and the catalog's serving limits, on a server the platform started (else
    only the default limits)."""
    if not env.catalog_path or not env.team:
        return {}
    try:
        catalog = env.catalog()
    except CatalogError as e:
        raise ServingError(f"cannot read the platform catalog for the team's GPU quota: {e}") from None
    found = catalog.teams.get(env.team)
    return {"gpu_quota": found.gpu_quota.total if found else None, "limits": catalog.serving}
