"""REST handlers of the jupyter server extension; each verb authenticated and authorized.

Errors are JSON `{"message": ...}` (jupyter_server's APIHandler renders web.HTTPError that way).
"""

from __future__ import annotations

import asyncio
import json
from importlib import resources

import yaml
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from . import registry
from .models import list_models

PREFIX = "/mlplatform/api"
AUTH_RESOURCE = "mlplatform"


class MLPlatformHandler(APIHandler):
    auth_resource = AUTH_RESOURCE


class ModelsHandler(MLPlatformHandler):
    @web.authenticated
    @authorized
    async def get(self):
        # MLflow's client is synchronous: keep the server's event loop free.
        self.finish(json.dumps({"models": await asyncio.to_thread(list_models)}))


class RegistryHandler(MLPlatformHandler):
    """Runs a registry call off the event loop; its errors become their status with a JSON body."""

    async def call(self, fn, *args, **kwargs):
        try:
            result = await asyncio.to_thread(fn, *args, **kwargs)
        except registry.RegistryError as e:
            self.set_status(e.status)
            self.finish(json.dumps(e.to_dict()))  # {"message": ...} (+ the gate report when refused)
            return
        self.finish(json.dumps(result))

    @property
    def user_name(self) -> str:
        return self.current_user.username


class PromotionHandler(RegistryHandler):
    @web.authenticated
    @authorized
    async def get(self, name: str, version: str):
        """The gate report; changes nothing."""
        await self.call(registry.evaluate, name, version)

    @web.authenticated
    @authorized
    async def post(self, name: str, version: str):
        """Move the alias when every gate passes (409 with the report when one fails)."""
        await self.call(registry.promote, name, version, user=self.user_name)


class RollbackHandler(RegistryHandler):
    @web.authenticated
    @authorized
    async def post(self, name: str):
        await self.call(registry.rollback, name, user=self.user_name)


class HistoryHandler(RegistryHandler):
    @web.authenticated
    @authorized
    async def get(self, name: str):
        await self.call(lambda: {"events": registry.history(name)})


class OpenAPIHandler(MLPlatformHandler):
    @web.authenticated
    @authorized
    async def get(self):
        spec = yaml.safe_load(resources.files("mlplatform").joinpath("openapi.yaml").read_text())
        self.finish(json.dumps(spec))


def routes() -> list[tuple]:
    name = r"(?P<name>[^/]+)"
    return [
        (rf"{PREFIX}/models", ModelsHandler),
        (rf"{PREFIX}/models/{name}/history", HistoryHandler),
        (rf"{PREFIX}/promote/{name}/(?P<version>[^/]+)", PromotionHandler),
        (rf"{PREFIX}/rollback/{name}", RollbackHandler),
        (rf"{PREFIX}/openapi.json", OpenAPIHandler),
    ]
