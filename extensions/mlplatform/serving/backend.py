"""What every serving backend offers (local Ray Serve, Kubernetes `RayService`).

A backend deploys a validated `ServingRequest` whose model version is already resolved, and answers
about it by name. Every answer is a plain JSON-serializable dict, so the REST API and the widget
pass them on unchanged. `status()` answers (keys common to all backends; a backend may add its own):

    {"name": "iris", "backend": "local", "state": "running", "message": "",
     "model_uri": "models:/iris@champion", "model_version": "3",
     "url": "http://127.0.0.1:18602/iris", "predict_url": "http://127.0.0.1:18602/iris/predict",
     "replicas": {"running": 1, "target": 1}, "submitted_at": "2026-11-22T20:07:19+00:00",
     "owner": {"user": "alice", "team": "team-vision"}, "request": {...ServingRequest fields...}}

`state` moves SUBMITTED → STARTING (the Ray cluster starts; skipped when it runs already) →
DEPLOYING (Serve starts or updates replicas) → RUNNING, or ends in FAILED with the reason in
`message` (the last line of Serve's error) and `detail` (more of it). A redeploy goes through
DEPLOYING again while the previous version keeps answering; if the new version fails to start,
the state is FAILED and the previous version still answers (`message` says so).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from .spec import ServingRequest

SUBMITTED = "submitted"
STARTING = "starting"
DEPLOYING = "deploying"
RUNNING = "running"
FAILED = "failed"
DELETING = "deleting"
STATES = (SUBMITTED, STARTING, DEPLOYING, RUNNING, FAILED, DELETING)
SETTLED_STATES = frozenset({RUNNING, FAILED})


def last_line(text: str | None) -> str:
    """The last non-empty line of an error text (at most 500 characters): the status's `message`."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


class ServingBackend(Protocol):
    def deploy(self, request: ServingRequest, *, model_version: str, env: Mapping[str, str],
               secrets: Mapping[str, str] | None = None, owner: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Create or replace the application `request.name`; answers its status. Raises before
        anything is left behind when it cannot. `env`: the contract variables and MLflow URI the
        replicas get; what else they need to reach the model (credentials on this machine, a service
        account in a cluster) is the backend's to add. `secrets`: None for the backend's default."""

    def status(self, name: str) -> dict[str, Any]:
        """The application's status (see the module docstring); DeploymentNotFound if none."""

    def delete(self, name: str, *, wait: bool = True) -> dict[str, Any]:
        """Remove the application: {"name", "backend", "state": "deleted"}."""

    def names(self) -> list[str]:
        """Names of the applications."""

    def url(self, name: str) -> str:
        """The application's endpoint (routes /predict, /generate below it)."""
