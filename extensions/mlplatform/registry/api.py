"""The Python API of promotion: evaluate, promote, rollback, history — carried out by the platform service.

The notebook holds no right that would move a protected alias: the platform service evaluates the
gates from MLflow's records and moves the alias as the platform (mlplatform_service.promotion). These
functions call it at MLPLATFORM_SERVICE_URL with the server's own token (JUPYTERHUB_API_TOKEN), for
the server's team (MLFLOW_WORKSPACE, else MLPLATFORM_TEAM; `team=` to name another of the user's
teams). The service answers with the caller's identity from the hub: nobody can act in another's name.
Errors come back as the exceptions of `errors` with the service's message (and the gate report when
a gate failed); MlflowUnavailable (503) when MLflow or the service does not answer.
"""

from __future__ import annotations

import os
from urllib.parse import quote

import requests
from mlplatform_core.contract import variable

from ..mlflow_health import MlflowUnavailable
from ..platform_service import NotOnPlatform, endpoint
from .errors import Conflict, Forbidden, MlflowError, NotFound, PromotionRefused, RegistryError, RollbackRefused

# Connecting, then the answer: a promotion reads the version's run, signature and champion from MLflow,
# each call bounded there (the contract's MLflow settings), so a hung MLflow is the service's 503 well before.
TIMEOUT = (5.0, 60.0)


def evaluate(name: str, version, *, team: str | None = None) -> dict:
    """The gate report of one version (see `gates` for its shape). Changes nothing."""
    return _call("GET", f"models/{_model(name)}/versions/{_segment(version)}/gates", team, server=True)


def promote(name: str, version, *, team: str | None = None) -> dict:
    """Move the policy's alias to `version` if, evaluated now by the platform, every gate passes.

    Returns `{"action": "promote", "model", "team", "version", "alias", "previous_version", "card",
    "event", "report"}` (`card`: the SHA-256 of the stored model card, see `card_text`). Raises
    PromotionRefused (carrying `.report`) when a gate fails: then the alias has not moved. Conflict when
    `version` holds the alias already; NotFound for an unknown model or version; Forbidden for a model
    of a team the user is not in.
    """
    return _call("POST", f"models/{_model(name)}/versions/{_segment(version)}/promote", team, server=True)


def rollback(name: str, *, team: str | None = None) -> dict:
    """Move the policy's alias back to the version that held it before, by the platform's own record of
    promotions. Returns `{"action": "rollback", "model", "team", "version", "alias", "previous_version",
    "card", "event"}`; RollbackRefused when there is no earlier holder the platform promoted."""
    return _call("POST", f"models/{_model(name)}/rollback", team)


def history(name: str, *, team: str | None = None) -> list[dict]:
    """Every promotion and rollback of the model, oldest first (mlplatform_service.trail's events)."""
    return trail(name, team=team)["events"]


def trail(name: str, *, team: str | None = None) -> dict:
    """`{"events": [...], "holder": <version holding the alias> | None, "rollback_to": <version> | None}`."""
    return _call("GET", f"models/{_model(name)}/history", team)


def card_text(digest: str) -> str:
    """The stored model card of a promotion (markdown), by the SHA-256 in its event."""
    response = _request("GET", f"cards/{_segment(digest)}", params={})
    return response.text


def _segment(value) -> str:
    text = str(value)
    if not text.strip():
        raise RegistryError(f"{value!r} is not allowed: give a registered model's name and version")
    return quote(text, safe="")


def _model(name) -> str:
    """A registered model's name as a path segment; MLflow's own rule checked here, before any call."""
    if isinstance(name, str) and ("/" in name or ":" in name):
        raise RegistryError(f"model name {name!r} is not allowed: registered model names cannot contain '/' or ':'")
    return _segment(name)


def _team(team: str | None) -> str:
    team = team or os.environ.get(variable("mlflow_workspace")) or os.environ.get(variable("team"))
    if not team:
        raise RegistryError("no team: promotion acts on a team's models; in a server the platform started, "
                            "MLFLOW_WORKSPACE names it; else pass team=")
    return team


def _call(method: str, path: str, team: str | None, *, server: bool = False) -> dict:
    """`server`: the service reads the model's artifacts with this server's S3 credentials."""
    _service()  # first: outside a server of the platform, that is what to say
    fields = {"team": _team(team)}
    if server:
        fields["server"] = os.environ.get("JUPYTERHUB_SERVER_NAME", "")
    if method == "GET":
        return _request(method, path, params=fields).json()
    return _request(method, path, json=fields).json()


def _service() -> tuple[str, str]:
    """(the service's URL, the server's token)."""
    try:
        return endpoint()
    except NotOnPlatform:
        raise RegistryError(f"promotion goes through the platform service: {variable('service_url')} and "
                            "JUPYTERHUB_API_TOKEN are set in servers the platform's hub starts") from None


def _request(method: str, path: str, **kwargs) -> requests.Response:
    base, token = _service()
    url = f"{base.rstrip('/')}/api/{path}"
    try:
        response = requests.request(method, url, headers={"Authorization": f"token {token}"}, timeout=TIMEOUT,
                                    **kwargs)
    except requests.RequestException as e:
        raise MlflowUnavailable(f"the platform service at {base} does not answer ({type(e).__name__}); nothing "
                                "was changed. Try again when it is back") from None
    if response.status_code < 400:
        return response
    try:
        body = response.json()
    except ValueError:
        body = {"message": response.text[:300]}
    raise _error(response.status_code, body)


ERRORS = {cls.__name__: cls for cls in (RegistryError, NotFound, Conflict, RollbackRefused, Forbidden, MlflowError)}


def _error(status: int, body: dict) -> Exception:
    """The exception the service raised (its name is `error` in the body), else one for the status."""
    message = body.get("message") or f"the platform service answered {status}"
    if "report" in body:
        return PromotionRefused(body["report"])
    if status == 503:
        return MlflowUnavailable(message)
    cls = ERRORS.get(body.get("error")) or {400: RegistryError, 403: Forbidden, 404: NotFound,
                                            409: Conflict}.get(status, MlflowError)
    return cls(message)
