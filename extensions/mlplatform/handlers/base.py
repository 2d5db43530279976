"""What every handler of the REST API shares: authorization resource, JSON bodies, refusals.

An API's error becomes a `Refused` (an HTTPError with a JSON body: `message`, plus extra keys such as
a gate report or the field at fault); a handler says which errors are refusals in `refusal()`.
Anything else is a 500 with jupyter_server's generic "Unhandled error" (the exception is logged,
not sent: it may hold a URL or a token).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

from jupyter_server.base.handlers import APIHandler
from tornado import web

from ..mlflow_health import MlflowUnavailable

PREFIX = "/mlplatform/api"
AUTH_RESOURCE = "mlplatform"
# Far below jupyter_server's 512 MiB: the largest body is a /predict batch (MAX_BATCH_SIZE rows).
MAX_BODY_BYTES = 8 * 2**20


class Refused(web.HTTPError):
    """A refusal whose JSON body is {"message": ..., **extra}."""

    def __init__(self, status: int, message: str, **extra: Any):
        # No log_message: tornado %-formats it, and a message may hold a '%'.
        super().__init__(status)
        self.body = {"message": message, **extra}


def _listed(names: Sequence[str]) -> str:
    return ", ".join(map(repr, names))


class MLPlatformHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

    async def prepare(self) -> None:
        await super().prepare()
        if len(self.request.body or b"") > MAX_BODY_BYTES:
            raise Refused(413, f"the request body has {len(self.request.body)} bytes; allowed: at most "
                               f"{MAX_BODY_BYTES} bytes (send large inputs to S3 and pass their URI)")

    def refusal(self, error: Exception) -> Refused | None:
        """The refusal an error of the API this handler calls stands for; None: a bug (500)."""
        return None

    async def call(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """`fn` in a thread (the APIs block on HTTP and subprocesses); its errors become refusals."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except MlflowUnavailable as e:
            raise Refused(503, str(e)) from e
        except Exception as e:
            refused = self.refusal(e)
            if refused is None:
                raise
            raise refused from e

    def reply(self, result: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(result))

    def body(self, allowed: Sequence[str], required: Sequence[str] = ()) -> dict[str, Any]:
        """The request's JSON object, with only `allowed` fields and every `required` one."""
        fields = f"fields: {_listed(allowed)} (required: {_listed(required) or 'none'})"
        if not self.request.body:
            raise Refused(400, f"the request body is empty; send a JSON object with the {fields}")
        try:
            body = json.loads(self.request.body)
        except ValueError as e:
            raise Refused(400, f"the request body is not valid JSON ({e}); send a JSON object with the {fields}")
        except RecursionError:
            raise Refused(400, f"the request body is nested too deeply; send a JSON object with the {fields}") from None
        if not isinstance(body, dict):
            raise Refused(400, f"the request body is a JSON {type(body).__name__}, not an object; send a JSON "
                               f"object with the {fields}")
        unknown = [k for k in body if k not in allowed]
        if unknown:
            raise Refused(400, f"unknown field{'s' * (len(unknown) > 1)} {_listed(unknown)}; allowed {fields}",
                          field=unknown[0])
        missing = [k for k in required if k not in body]
        if missing:
            raise Refused(400, f"missing field{'s' * (len(missing) > 1)} {_listed(missing)}; allowed {fields}",
                          field=missing[0])
        return body

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = (kwargs.get("exc_info") or (None, None, None))[1]
        if not isinstance(error, Refused):
            return super().write_error(status_code, **kwargs)
        self.log.warning("refused (%s): %s", status_code, error.body["message"])
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(error.body))
