"""What promotion, rollback and evaluation raise. Every message names the value and what is allowed."""

from __future__ import annotations


class RegistryError(Exception):
    """Base class: a request the registry cannot carry out (the REST API answers 4xx with `message`)."""

    status = 400

    @property
    def message(self) -> str:
        return str(self)

    def to_dict(self) -> dict:
        """A JSON-serializable body for the REST API and the widget."""
        return {"message": self.message}


class NotFound(RegistryError, LookupError):
    """An unknown registered model or model version (404)."""

    status = 404


class Conflict(RegistryError):
    """The request does not fit the model's current state (409), e.g. promoting the version that already
    holds the alias."""

    status = 409


class PromotionRefused(Conflict):
    """A gate failed: nothing changed. `report` is the full gate report of `evaluate` (409)."""

    def __init__(self, report: dict):
        self.report = report
        failed = [g for g in report["gates"] if not g["passed"]]
        lines = "; ".join(f"{g['id']}: {g['message']}" for g in failed)
        super().__init__(f"version {report['version']} of {report['model']!r} was not promoted to "
                         f"@{report['alias']}: {len(failed)} of {len(report['gates'])} gates failed: {lines}")

    def to_dict(self) -> dict:
        return {"message": self.message, "report": self.report}


class RollbackRefused(Conflict):
    """No previous holder of the alias to go back to, or the version to go back to no longer exists (409)."""


class MlflowError(RegistryError):
    """MLflow answered with an error other than 'not found', or could not be reached (502)."""

    status = 502


class Forbidden(RegistryError):
    """The caller may not act on this model: it belongs to a team they are not in (403)."""

    status = 403
