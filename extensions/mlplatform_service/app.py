"""The platform service's web app (`mlplatform-service`), started by the hub as a managed service.

Its API, under the service's prefix (/services/mlplatform/); every request is a hub user's, by token
(`Authorization: token <JUPYTERHUB_API_TOKEN>`: a server's token carries `access:services!service=mlplatform`)
or by the service's OAuth login cookie (browsers):

    GET  api/models/<name>/versions/<v>/gates?team=T          the gate report (changes nothing)
    POST api/models/<name>/versions/<v>/promote  {"team", "server"}   promote behind the gates
    POST api/models/<name>/rollback              {"team"}     back to the previous platform-promoted holder
    GET  api/models/<name>/history?team=T                     succeeded promotions and rollbacks
    GET  api/cards/<sha256>                                   a stored model card (markdown)
    GET  api/audit?since&until&actor&team&action&target&outcome&after_seq&limit   (admins)
    GET  api/audit/export?format=csv|jsonl&<filters>          (admins)

Settings come from the environment the hub gives it: MLPLATFORM_CATALOG, MLPLATFORM_MLFLOW_SIGNING_KEY
(the hub's key file: the service mints the platform identity's MLflow tokens), and optionally
MLPLATFORM_SERVICE_DATABASE_URL (else the catalog's `platform_service.database_url`); JupyterHub's
own JUPYTERHUB_SERVICE_URL, JUPYTERHUB_SERVICE_PREFIX, JUPYTERHUB_API_TOKEN, JUPYTERHUB_API_URL.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
from functools import partial
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from mlplatform.mlflow_health import MlflowUnavailable
from mlplatform.registry.errors import RegistryError
from mlplatform_core.catalog import cached_catalog
from tornado import ioloop, web

from hub_config.mlflow_access.tokens import TokenSigner

from .audit_log import AuditLog
from .cards import CardStore
from .database import connect
from .identity import caller_of
from .platform_mlflow import PlatformMlflow
from .promotion import Promotions

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
        elif isinstance(error, (MlflowUnavailable, ValueError)):
            body = {"message": str(error)}
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def log_exception(self, typ, value, tb):
        if isinstance(value, RegistryError | MlflowUnavailable | ValueError):
            log.warning("%s %s: %s", self.request.method, self.request.path, value)
            return
        super().log_exception(typ, value, tb)

    def send_error(self, status_code: int = 500, **kwargs) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, RegistryError):
            status_code = error.status
        elif isinstance(error, MlflowUnavailable):
            status_code = 503
        elif isinstance(error, ValueError):
            status_code = 400
        super().send_error(status_code, **kwargs)


class GatesHandler(ServiceHandler):
    @authenticated
    async def get(self, name: str, version: str):
        team = self.team_of_request({"team": self.get_argument("team", None)})
        caller = await self.caller(self.get_argument("server", None))
        self.reply(await self.run(self.platform.promotions.evaluate, caller, team, name, version))


class PromoteHandler(ServiceHandler):
    @authenticated
    async def post(self, name: str, version: str):
        body = self.body()
        team = self.team_of_request(body)
        caller = await self.caller(body.get("server", ""))
        self.reply(await self.run(self.platform.promotions.promote, caller, team, name, version))


class RollbackHandler(ServiceHandler):
    @authenticated
    async def post(self, name: str):
        team = self.team_of_request(self.body())
        caller = await self.caller()
        self.reply(await self.run(self.platform.promotions.rollback, caller, team, name))


class HistoryHandler(ServiceHandler):
    @authenticated
    async def get(self, name: str):
        team = self.team_of_request({"team": self.get_argument("team", None)})
        caller = await self.caller()
        self.reply(await self.run(self.platform.promotions.history, caller, team, name))


class CardHandler(ServiceHandler):
    @authenticated
    async def get(self, digest: str):
        text = await self.run(self.platform.cards.get, digest)
        if text is None:
            raise web.HTTPError(404, f"no model card with SHA-256 {digest}")
        self.set_header("Content-Type", "text/markdown; charset=utf-8")
        self.finish(text)


AUDIT_FILTERS = ("since", "until", "actor", "team", "action", "target", "outcome")


class AuditHandler(ServiceHandler):
    """The audit log, for platform admins."""

    async def admin(self) -> None:
        caller = await self.caller()
        if not caller.admin:
            raise web.HTTPError(403, f"{caller.name} is not a platform admin: the audit log is for admins")

    def filters(self) -> dict:
        return {key: self.get_argument(key) for key in AUDIT_FILTERS if self.get_argument(key, None)}

    @authenticated
    async def get(self, export: str | None = None):
        await self.admin()
        audit = self.platform.audit
        if export:
            fmt = self.get_argument("format", "csv")
            chunks = await self.run(lambda: list(audit.export(fmt, **self.filters())))
            self.set_header("Content-Type", "text/csv" if fmt == "csv" else "application/x-ndjson")
            self.set_header("Content-Disposition", f'attachment; filename="mlplatform-audit.{fmt}"')
            self.finish("".join(chunks))
            return
        after, limit = self.get_argument("after_seq", None), self.get_argument("limit", "1000")
        try:
            after, limit = (int(after) if after else None), int(limit)
        except ValueError:
            raise web.HTTPError(400, f"after_seq {after!r} and limit {limit!r} must be whole numbers") from None
        records = await self.run(audit.query, after_seq=after, limit=limit, **self.filters())
        self.reply({"records": records})


class Platform:
    """What the handlers share: the catalog, the database-backed stores, MLflow as the platform."""

    def __init__(self, catalog_path: str, database_url: str, signing_key_file: str | None):
        self.catalog_path = catalog_path
        catalog = self.catalog()
        sessions = connect(database_url)
        self.audit = AuditLog(sessions)
        self.cards = CardStore(sessions)
        signer = TokenSigner(signing_key_file) if signing_key_file else None
        mlflow = PlatformMlflow(catalog.mlflow.tracking_uri, signer,
                                workspaces=catalog.mlflow.access.mode == "hub-tokens")
        self.promotions = Promotions(catalog=self.catalog, audit=self.audit, cards=self.cards, mlflow=mlflow)

    def catalog(self):
        return cached_catalog(self.catalog_path)


def make_app(platform: Platform, prefix: str) -> web.Application:
    hub_auth = HubOAuth(cache_max_age=60)
    api = url_path_join(prefix, "api")
    routes = [
        (url_path_join(api, r"models/([^/]+)/versions/([^/]+)/gates"), GatesHandler),
        (url_path_join(api, r"models/([^/]+)/versions/([^/]+)/promote"), PromoteHandler),
        (url_path_join(api, r"models/([^/]+)/rollback"), RollbackHandler),
        (url_path_join(api, r"models/([^/]+)/history"), HistoryHandler),
        (url_path_join(api, r"cards/([0-9a-f]{64})"), CardHandler),
        (url_path_join(api, r"audit/?(export)?"), AuditHandler),
        (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler),
    ]
    return web.Application(routes, hub_auth=hub_auth, platform=platform, xsrf_cookies=True,
                           cookie_secret=os.urandom(32))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s")
    catalog_path = os.environ["MLPLATFORM_CATALOG"]
    catalog = cached_catalog(catalog_path)
    # MLflow's S3 client for artifact reads (the caller's credentials, the catalog's endpoint); MLflow's
    # resolution of runs:/ and models:/ URIs goes to the catalog's tracking server.
    os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", catalog.storage.s3.endpoint_url)
    os.environ["MLFLOW_TRACKING_URI"] = catalog.mlflow.tracking_uri
    database_url = os.environ.get("MLPLATFORM_SERVICE_DATABASE_URL") or catalog.platform_service.database_url
    platform = Platform(catalog_path, database_url, os.environ.get("MLPLATFORM_MLFLOW_SIGNING_KEY"))
    url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    app = make_app(platform, os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/mlplatform/"))
    app.listen(url.port, url.hostname)
    log.info("mlplatform service on %s", os.environ["JUPYTERHUB_SERVICE_URL"])
    try:
        ioloop.IOLoop.current().start()
    except KeyboardInterrupt:  # the hub (or Ctrl-C on the local platform) stops it
        log.info("mlplatform service stopped")
