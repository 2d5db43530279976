"""Safe rollout from the notebook: the platform service does it (its API: api/rollouts/<team>/<endpoint>).

    from mlplatform.serving import rollouts
    rollouts.start("iris", version=4)                      # shadow: every request mirrored to version 4
    rollouts.change("iris", "canary", share=0.05)          # 5 % of the callers answered by version 4
    rollouts.report("iris")["live"]["gates"]               # live numbers of both sides and the gates
    rollouts.promote("iris")                               # version 4 becomes @champion with all traffic
    rollouts.abort("iris")                                 # version 4 goes; the champion keeps everything
    rollouts.inference_log("iris", sample_rate=0.1)        # log 10 % of the requests (enabled=False: off, in mode off)

The endpoint is one of the server's team (MLPLATFORM_TEAM). The service checks every input (400 naming
the field), the team (403), moves traffic back to the champion by itself when the candidate breaches the
SLO (`report(...)["status"]["rollout"]["rollout"]["reason"]` says why), and refuses a promotion while a
gate fails or waits for data (PromotionRefused with the report). Every change is in the audit log.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests

from ..environment import read_environment
from ..platform_service import TIMEOUT, NotOnPlatform, endpoint
from ..registry.errors import PromotionRefused
from .errors import (
    BackendUnavailable,
    DeploymentNotFound,
    InvalidServingRequest,
    ModelForbidden,
    ServingConflict,
    ServingError,
)

PROMOTE_TIMEOUT = 120.0  # the promotion engine reads MLflow and writes the card, then the endpoint switches


def start(name: str, version: int | str, *, mode: str = "shadow", share: float | None = None,
          mirror_rate: float = 1.0) -> dict[str, Any]:
    """Serve `version` of the endpoint's registered model beside its champion, in `mode` ("shadow" or
    "canary" with `share`). Answers the endpoint's status."""
    return _call("POST", name, json={"version": version, "mode": mode, "share": share, "mirror_rate": mirror_rate})


def change(name: str, mode: str, *, share: float | None = None, mirror_rate: float = 1.0) -> dict[str, Any]:
    """Another mode ("shadow", "canary", "off") or canary share, applied in place (no request dropped)."""
    return _call("PATCH", name, json={"mode": mode, "share": share, "mirror_rate": mirror_rate})


def inference_log(name: str, *, enabled: bool | None = None, sample_rate: float | None = None) -> dict[str, Any]:
    """Switch the rollout's inference log on or off, or set its sample rate (above 0, at most 1), in place: no request
    dropped. The live gates and the automatic rollback read the log, so the service refuses to switch it off while
    the candidate is in shadow or canary (ServingConflict: change the mode to "off", or abort, first). Answers the
    endpoint's status (`["rollout"]["inference_log"]`: the settings, None when off)."""
    body = {k: v for k, v in (("enabled", enabled), ("sample_rate", sample_rate)) if v is not None}
    return _call("PUT", name, "/inference-log", json=body)


def report(name: str) -> dict[str, Any]:
    """{"status": the endpoint's status, "live": the live report (None without a rollout), "commit": in GitOps mode
    the last commit of the rollout (its `url` when the repository has a web UI), else None}."""
    return _call("GET", name)


def promote(name: str) -> dict[str, Any]:
    """The candidate becomes the catalog's alias (@champion) behind the offline and live gates, then answers
    every request. PromotionRefused (with the report) while a gate fails or waits for data."""
    import os

    return _call("POST", name, "/promote", json={"server": os.environ.get("JUPYTERHUB_SERVER_NAME", "")},
                 timeout=PROMOTE_TIMEOUT)


def abort(name: str) -> dict[str, Any]:
    """End the rollout: the candidate's replicas go, the champion answers everything."""
    return _call("DELETE", name)


def _call(method: str, name: str, suffix: str = "", *, timeout: float = TIMEOUT, **kwargs) -> dict:
    try:
        base, token = endpoint()
    except NotOnPlatform as e:
        raise BackendUnavailable(f"rollouts are the platform service's: {e}") from None
    team = read_environment().team
    if not team:
        raise BackendUnavailable("no team: MLPLATFORM_TEAM names the team of the endpoint in a server the "
                                 "platform started")
    url = f"{base}/api/rollouts/{quote(team, safe='')}/{quote(str(name), safe='')}{suffix}"
    try:
        response = requests.request(method, url, headers={"Authorization": f"token {token}"}, timeout=timeout,
                                    **kwargs)
    except requests.RequestException as e:
        raise BackendUnavailable(f"the platform service at {base} does not answer ({type(e).__name__}); "
                                 "nothing was changed") from None
    try:
        body = response.json()
    except ValueError:
        body = {"message": response.text[:300]}
    if response.status_code < 400:
        return body
    raise _error(response.status_code, body)


def _error(status: int, body: dict) -> Exception:
    message = body.get("message") or f"the platform service answered {status}"
    if "report" in body:
        return PromotionRefused(body["report"])
    if status == 400:
        problems = [(p["field"], p["message"]) for p in body.get("problems") or []] or [("request", message)]
        return InvalidServingRequest(problems)
    cls = {403: ModelForbidden, 404: DeploymentNotFound, 409: ServingConflict, 503: BackendUnavailable}.get(status)
    if cls is not None:
        return cls(message)
    error = ServingError(message)
    error.status_code = status
    return error
