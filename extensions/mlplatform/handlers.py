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


class OpenAPIHandler(MLPlatformHandler):
    @web.authenticated
    @authorized
    async def get(self):
        spec = yaml.safe_load(resources.files("mlplatform").joinpath("openapi.yaml").read_text())
        self.finish(json.dumps(spec))


def routes() -> list[tuple]:
    return [(rf"{PREFIX}/models", ModelsHandler), (rf"{PREFIX}/openapi.json", OpenAPIHandler)]
