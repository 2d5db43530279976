"""Errors of the serving API. Each carries the HTTP status the REST API answers with."""

from __future__ import annotations


class ServingError(Exception):
    status_code = 500


class InvalidServingRequest(ServingError, ValueError):
    """Every problem of a request at once; `problems` holds (field, message) pairs."""

    status_code = 400

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("invalid serving request:\n" + "\n".join(f"  - {f}: {m}" for f, m in problems))


class ModelNotFound(ServingError, LookupError):
    """The registered model, version or alias does not exist in MLflow."""

    status_code = 404


class ModelForbidden(ServingError, PermissionError):
    """MLflow refuses this server's user the registered model (another team's, not shared with theirs)."""

    status_code = 403


class DeploymentNotFound(ServingError, LookupError):
    status_code = 404


class ServingConflict(ServingError):
    """The request cannot be carried out as things stand (resources, another team's application)."""

    status_code = 409


class BackendUnavailable(ServingError):
    """The serving backend cannot be used (the local Ray head did not start, a backend not built yet)."""

    status_code = 503


class PredictionFailed(ServingError):
    """The endpoint answered an error; `status_code` is its status."""

    def __init__(self, status_code: int, message: str):
        self.status_code = status_code
        super().__init__(message)
