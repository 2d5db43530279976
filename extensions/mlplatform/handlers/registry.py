"""Registered models and their promotion (`mlplatform.registry`, `mlplatform.models`)."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from .. import registry
from ..models import list_models
from .base import MLPlatformHandler, Refused


class ModelsHandler(MLPlatformHandler):
    @web.authenticated
    @authorized
    async def get(self):
        self.reply({"models": await self.call(list_models)})


class RegistryHandler(MLPlatformHandler):
    def refusal(self, error):
        if isinstance(error, registry.RegistryError):
            body = error.to_dict()  # {"message": ...} (+ the gate report when refused)
            return Refused(error.status, body.pop("message"), **body)
        return None


class PromotionHandler(RegistryHandler):
    @web.authenticated
    @authorized
    async def get(self, name: str, version: str):
        """The gate report; changes nothing."""
        self.reply(await self.call(registry.evaluate, name, version))

    @web.authenticated
    @authorized
    async def post(self, name: str, version: str):
        """Move the alias when every gate passes (409 with the report when one fails)."""
        self.reply(await self.call(registry.promote, name, version))


class RollbackHandler(RegistryHandler):
    @web.authenticated
    @authorized
    async def post(self, name: str):
        self.reply(await self.call(registry.rollback, name))


class HistoryHandler(RegistryHandler):
    @web.authenticated
    @authorized
    async def get(self, name: str):
        self.reply({"events": await self.call(registry.history, name)})
