"""The platform service as a notebook calls it: its URL from the environment contract (MLPLATFORM_SERVICE_URL)
and the server's own hub token (JUPYTERHUB_API_TOKEN). The service answers as the server's user."""

from __future__ import annotations

import os
from urllib.parse import quote

import requests
from mlplatform_core.contract import variable

TIMEOUT = 10.0


class NotOnPlatform(RuntimeError):
    """No service to ask: outside a server the platform's hub started."""


def endpoint() -> tuple[str, str]:
    """(the service's URL, the server's token)."""
    base = os.environ.get(variable("service_url"))
    token = os.environ.get("JUPYTERHUB_API_TOKEN")
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
