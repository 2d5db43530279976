"""Is the tracking server there? Asked before work that needs MLflow, so an outage is a clear error in
seconds: MLflow's own client retries an unreachable server for about four minutes (7 tries, backoff)."""

from __future__ import annotations

import requests

PROBE_SECONDS = 3


class MlflowUnavailable(RuntimeError):
    """The tracking server does not answer; nothing was changed. The REST API answers 503."""

    status_code = 503


def require_mlflow(tracking_uri: str | None = None) -> None:
    """Raise MlflowUnavailable unless the server at `tracking_uri` (default: MLflow's own setting)
    answers its health endpoint within PROBE_SECONDS. Local stores (files, databases) always pass."""
    if tracking_uri is None:
        import mlflow  # imported here: slow, and only callers that talk to MLflow need it

        tracking_uri = mlflow.get_tracking_uri()
    if not tracking_uri.startswith(("http://", "https://")):
        return
    try:
        requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=PROBE_SECONDS)
    except requests.RequestException as e:
        raise MlflowUnavailable(f"MLflow at {tracking_uri} does not answer ({type(e).__name__}); nothing was "
                                "changed. Try again when it is back") from None


def lost_contact(error: BaseException) -> str | None:
    """The name of the connection error behind `error` (an MlflowException raised when MLflow stopped
    answering during a call, after its client's retries), or None for an answer MLflow gave."""
    seen = error
    while seen is not None:
        if isinstance(seen, requests.RequestException):
            return type(seen).__name__
        seen = seen.__cause__ or seen.__context__
    return None
