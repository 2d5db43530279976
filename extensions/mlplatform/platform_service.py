"""The platform service as a notebook calls it: its URL from the environment contract (MLPLATFORM_SERVICE_URL)
and the server's own hub token (JUPYTERHUB_API_TOKEN). The service answers as the server's user.

`report` tells the service's audit log what a local backend did (deploy, redeploy, delete of a served
model; submit, cancel of a Spark job): on the local platform nothing else sees it happen. The action has
happened by then, so a report never fails it: an unreachable service or a refusal is a warning in the
server's log (an audit gap someone can see), never an exception."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from urllib.parse import quote

import requests
from mlplatform_core.contract import variable

from .environment import read_environment

TIMEOUT = 10.0
REPORT_TIMEOUT = 5.0  # a report waits at most this long: the action it reports is done and answered
MAX_TEXT = 256  # the service keeps string details up to this length
TOKEN_VARIABLE = "JUPYTERHUB_API_TOKEN"

log = logging.getLogger(__name__)


class NotOnPlatform(RuntimeError):
    """No service to ask: outside a server the platform's hub started."""


def endpoint() -> tuple[str, str]:
    """(the service's URL, the server's token)."""
    base = os.environ.get(variable("service_url"))
    token = os.environ.get(TOKEN_VARIABLE)
    if not base or not token:
        raise NotOnPlatform(f"the platform service is called with {variable('service_url')} and "
                            "JUPYTERHUB_API_TOKEN, set in servers the platform's hub starts")
    return base.rstrip("/"), token


def budget(team: str | None = None) -> dict:
    """The budget status of `team` (default: the server's), as the service's `api/budgets/<team>` says:
    `line`, `has_budget`, `warning`, `exceeded`, the numbers."""
    base, token = endpoint()
    team = team or os.environ.get(variable("team"), "")
    response = requests.get(f"{base}/api/budgets/{quote(team, safe='')}", timeout=TIMEOUT,
                            headers={"Authorization": f"token {token}"})
    response.raise_for_status()
    return response.json()


def report(action: str, kind: str, name: str, team: str | None = None, details: Mapping | None = None, *,
           environ: Mapping[str, str] | None = None) -> dict | None:
    """Record in the platform's audit log that this server did `action` ("deploy", "redeploy", "delete" of
    kind "model"; "submit", "cancel" of kind "spark") to `name` for `team` (default: the server's), with a few
    scalar `details`. The service records it as the token's user (`POST api/activity`). Best effort: the
    stored record, or None when there is no service (no MLPLATFORM_SERVICE_URL or token in `environ`, default
    this process's environment) or the report did not arrive (logged as a warning). Never raises."""
    try:
        env = os.environ if environ is None else environ
        platform = read_environment(env)
        base, token = platform.service_url, env.get(TOKEN_VARIABLE)
        team = team or platform.team
        if not base or not token or not team:
            return None  # outside the platform (a script, a test): nothing to report to
        body = {"action": action, "kind": kind, "name": name, "team": team,
                "details": {k: v[:MAX_TEXT] if isinstance(v, str) else v for k, v in (details or {}).items()}}
        url = f"{base.rstrip('/')}/api/activity"
        r = requests.post(url, json=body, timeout=REPORT_TIMEOUT, headers={"Authorization": f"token {token}"})
        if r.status_code == 201:
            return r.json().get("record")
        try:
            message = r.json()["message"]
        except (ValueError, KeyError, TypeError):
            message = r.text[:200] or r.reason
        log.warning("The platform service did not record %s of %s:%s/%s in the audit log (%s): %s", action, kind,
                    team, name, r.status_code, message)
    except requests.RequestException as e:
        log.warning("The platform service did not record %s of %s:%s/%s in the audit log: it is unreachable "
                    "(%s: %s)", action, kind, team, name, type(e).__name__, e)
    except Exception:  # a report never fails the action it reports
        log.warning("The platform service did not record %s of %s:%s/%s in the audit log", action, kind, team,
                    name, exc_info=True)
    return None
