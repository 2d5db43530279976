"""The hub's GPU reservations for served models on the local backend (hub_config/gpu_handler.py).

On one machine the hub owns the GPU pool: a Ray Serve application with GPU replicas asks the hub for
its devices before it is handed to Serve, with the server's own token (JUPYTERHUB_API_TOKEN, which
carries `custom:mlplatform:gpu-reservations` for its user) at the hub API JupyterHub gives every
server (JUPYTERHUB_API_URL). The hub checks the team's quota and the pool, and refuses with the
numbers; the team is the hub's view of this server's, not the notebook's.

A rollout's candidate (the same size as its champion) is reserved by the platform service, which starts
and ends rollouts, with the service's own token (`HubRolloutGpus`, hub_config/rollout_gpu_handler.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

import requests

from .errors import BackendUnavailable, InvalidServingRequest, ServingConflict, ServingError

API_URL_VARIABLE = "JUPYTERHUB_API_URL"  # JupyterHub's, in every server it starts
TOKEN_VARIABLE = "JUPYTERHUB_API_TOKEN"
SERVER_NAME_VARIABLE = "JUPYTERHUB_SERVER_NAME"


class ReservationRefused(ServingError):
    """The hub refused this server the reservation (a user no longer in the team, a login to renew)."""

    status_code = 403


@dataclass(frozen=True)
class HubGpuReservations:
    api_url: str
    token: str
    user: str
    server: str = ""
    timeout: float = 15.0

    def __repr__(self) -> str:  # never print the token by accident
        return f"HubGpuReservations(api_url={self.api_url!r}, user={self.user!r}, server={self.server!r})"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], user: str) -> HubGpuReservations | None:
        """The hub of this server, or None outside a server the hub started."""
        url, token = environ.get(API_URL_VARIABLE), environ.get(TOKEN_VARIABLE)
        if not url or not token or not user:
            return None
        return cls(url.rstrip("/"), token, user, environ.get(SERVER_NAME_VARIABLE, ""))

    def url(self, app: str) -> str:
        return f"{self.api_url}/mlplatform/gpu-reservations/{quote(self.user)}/{app}?server={quote(self.server)}"

    def reserve(self, app: str, count: int, gpu_type: str | None) -> dict:
        """Hold `count` GPUs for application `app` (adjusts what it holds); the hub's answer:
        {"key", "team", "gpu_type", "count", "devices"}. Without `gpu_type` the hub takes the server's own
        type, else the team's only one."""
        body = {"count": count, **({"gpu_type": gpu_type} if gpu_type else {})}
        return self._call("PUT", app, body, "reserve GPUs for")

    def release(self, app: str) -> None:
        self._call("DELETE", app, None, "release the GPUs of")

    def _call(self, method: str, app: str, body, what: str) -> dict:
        return _call(method, self.url(app), self.token, body, f"{what} {app!r}", self.api_url, self.timeout)


@dataclass(frozen=True)
class HubRolloutGpus:
    """The platform service's reservations of rollout candidates' GPUs: the hub sizes them as the champion's."""

    api_url: str
    token: str
    timeout: float = 15.0

    def __repr__(self) -> str:
        return f"HubRolloutGpus(api_url={self.api_url!r})"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> HubRolloutGpus | None:
        """The hub of the service (JupyterHub gives a managed service its API URL and token), or None."""
        url, token = environ.get(API_URL_VARIABLE), environ.get(TOKEN_VARIABLE)
        return cls(url.rstrip("/"), token) if url and token else None

    def url(self, team: str, app: str, action: str = "") -> str:
        return f"{self.api_url}/mlplatform/rollout-gpus/{quote(team)}/{app}{'/' + action if action else ''}"

    def reserve(self, team: str, app: str, user: str) -> dict:
        """The candidate's devices ({"key", "team", "gpu_type", "count", "devices"}); `user`: whose endpoint."""
        return self._call("PUT", self.url(team, app), {"user": user}, f"reserve GPUs for the candidate of {app!r}")

    def promote(self, team: str, app: str, user: str) -> dict:
        """The candidate's devices become the champion's (the old ones are released)."""
        return self._call("POST", self.url(team, app, "promote"), {"user": user},
                          f"promote the candidate GPUs of {app!r}")

    def release(self, team: str, app: str) -> None:
        self._call("DELETE", self.url(team, app), None, f"release the candidate GPUs of {app!r}")

    def _call(self, method: str, url: str, body, what: str) -> dict:
        return _call(method, url, self.token, body, what, self.api_url, self.timeout)


def _call(method: str, url: str, token: str, body, what: str, api_url: str, timeout: float) -> dict:
    """One call of the hub's API; its refusal as the serving error of its status."""
    try:
        r = requests.request(method, url, json=body, timeout=timeout,
                             headers={"Authorization": f"token {token}"})
    except requests.RequestException as e:
        raise BackendUnavailable(f"cannot reach the hub at {api_url} to {what}: "
                                 f"{type(e).__name__}; try again") from None
    if r.ok:
        return r.json() if r.content else {}
    try:
        message = r.json()["message"]
    except (ValueError, KeyError, TypeError):
        message = r.reason
    message = f"the hub refused to {what} ({r.status_code}): {message}"
    if r.status_code == 400:
        raise InvalidServingRequest([("gpus", message)])
    if r.status_code == 409 and method in ("PUT", "POST"):
        raise ServingConflict(message)
    if r.status_code in (401, 403):
        raise ReservationRefused(message)
    raise BackendUnavailable(message)
