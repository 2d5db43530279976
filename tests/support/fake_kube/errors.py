"""API errors with the Status bodies the real API server sends."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return body

    @classmethod
    def not_found(cls, resource, name: str) -> ApiError:
        return cls(404, "NotFound", f'{resource.group_resource} "{name}" not found',
                   {"name": name, "group": resource.group, "kind": resource.plural})

    @classmethod
    def already_exists(cls, resource, name: str) -> ApiError:
        return cls(409, "AlreadyExists", f'{resource.group_resource} "{name}" already exists',
                   {"name": name, "group": resource.group, "kind": resource.plural})

    @classmethod
    def conflict(cls, resource, name: str) -> ApiError:
        return cls(409, "Conflict", f'Operation cannot be fulfilled on {resource.group_resource} "{name}": '
                   "the object has been modified; please apply your changes to the latest version and try again",
                   {"name": name, "group": resource.group, "kind": resource.plural})

    @classmethod
    def invalid(cls, resource, name: str, causes: list[tuple[str, str]]) -> ApiError:
        """422; causes are (field, message) pairs, as in `Pod "x" is invalid: spec.containers[0].image: Required value`."""
        text = "; ".join(f"{f}: {m}" for f, m in causes)
        if len(causes) > 1:
            text = f"[{', '.join(f'{f}: {m}' for f, m in causes)}]"
        return cls(422, "Invalid", f'{resource.kind} "{name}" is invalid: {text}',
                   {"name": name, "group": resource.group, "kind": resource.kind,
                    "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes]})

    @classmethod
    def forbidden(cls, resource, name: str, why: str) -> ApiError:
        return cls(403, "Forbidden", f'{resource.group_resource} "{name}" is forbidden: {why}',
                   {"name": name, "group": resource.group, "kind": resource.plural})

    @classmethod
    def bad_request(cls, message: str) -> ApiError:
        return cls(400, "BadRequest", message)
