"""What every handler of the service shares: who calls (hub OAuth: token or login cookie), JSON replies,
errors as {"message": ...} with the status of what went wrong, blocking work off the event loop."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from functools import partial
from typing import TYPE_CHECKING

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from mlplatform.mlflow_health import MlflowUnavailable
from mlplatform.registry.errors import RegistryError
from mlplatform.serving.errors import ServingError
from tornado import web

from .identity import caller_of

if TYPE_CHECKING:
    from .app import Platform

log = logging.getLogger("mlplatform_service")


def authenticated(method):
    """tornado's `web.authenticated` for an API: a 403 saying what to send, not a redirect to a login page."""
    @functools.wraps(method)
    async def wrapper(self, *args, **kwargs):
        if self.current_user is None:
            raise web.HTTPError(403, "the platform service needs a hub token ('Authorization: token ...': a "
                                     "server's JUPYTERHUB_API_TOKEN) or a login to it through the hub")
        return await method(self, *args, **kwargs)
    return wrapper


class ServiceHandler(HubOAuthenticated, web.RequestHandler):
    """JSON in and out; errors as {"message": ...} with the status of what went wrong."""

    @property
    def hub_auth(self):
        return self.settings["hub_auth"]

    @property
    def platform(self) -> Platform:
        return self.settings["platform"]

    def check_xsrf_cookie(self):
        # Token requests carry no cookie to forge; cookie requests go through tornado's XSRF check.
        if not self.request.headers.get("Authorization"):
            super().check_xsrf_cookie()

    def body(self) -> dict:
        if not self.request.body:
            return {}
        try:
            body = json.loads(self.request.body)
        except ValueError as e:
            raise web.HTTPError(400, f"the request body is not JSON: {e}") from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, f"the request body must be a JSON object, not {type(body).__name__}")
        return body

    def required(self, source: dict, key: str, allowed: str) -> str:
        value = source.get(key)
        if not isinstance(value, str) or not value:
            raise web.HTTPError(400, f"{key}: {value!r} is not allowed: {allowed}")
        return value

    def team_of_request(self, source: dict) -> str:
        catalog = self.platform.catalog()
        return self.required(source, "team", f"name the team whose MLflow workspace holds the model "
                                             f"(one of: {', '.join(catalog.teams)})")

    async def caller(self, server: str | None = None):
        return await caller_of(self, self.platform.catalog(), self.current_user, server=server)

    async def run(self, fn, *args, **kwargs):
        """Blocking work (MLflow, the database) off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(None, partial(fn, *args, **kwargs))

    def reply(self, value, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(value))

    def write_error(self, status_code: int, **kwargs) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        body = {"message": self._reason}
        if isinstance(error, web.HTTPError) and error.log_message:
            body = {"message": error.log_message % error.args if error.args else error.log_message}
        elif isinstance(error, RegistryError):
            body = {**error.to_dict(), "error": type(error).__name__}
        elif isinstance(error, ServingError):  # a rollout's endpoint (rollouts.py)
            body = {"message": str(error), "error": type(error).__name__}
            if getattr(error, "problems", None):
                body["problems"] = [{"field": f, "message": m} for f, m in error.problems]
        elif isinstance(error, (MlflowUnavailable, ValueError)):
            body = {"message": str(error)}
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def log_exception(self, typ, value, tb):
        if isinstance(value, RegistryError | MlflowUnavailable | ValueError) or \
                isinstance(value, ServingError) and value.status_code < 500:
            log.warning("%s %s: %s", self.request.method, self.request.path, value)
            return
        super().log_exception(typ, value, tb)

    def send_error(self, status_code: int = 500, **kwargs) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, RegistryError):
            status_code = error.status
        elif isinstance(error, ServingError):
            status_code = error.status_code
        elif isinstance(error, MlflowUnavailable):
            status_code = 503
        elif isinstance(error, ValueError):
            status_code = 400
        super().send_error(status_code, **kwargs)


class OAuthCallbackHandler(HubOAuthCallbackHandler):
    """The end of a browser's login to the service, with the app's own HubOAuth: the login's state (its
    PKCE code verifier) lives in that object, not in the `HubOAuth.instance()` the base class would use."""

    @property
    def hub_auth(self):
        return self.settings["hub_auth"]
