"""The platform service's web app (`mlplatform-service`), started by the hub as a managed service.

Its API, under the service's prefix (/services/mlplatform/); every request is a hub user's, by token
(`Authorization: token <JUPYTERHUB_API_TOKEN>`: a server's token carries `access:services!service=mlplatform`)
or by the service's OAuth login cookie (browsers):

    GET  api/models/<name>/versions/<v>/gates?team=T          the gate report (changes nothing)
    POST api/models/<name>/versions/<v>/promote  {"team", "server"}   promote behind the gates
    POST api/models/<name>/rollback              {"team"}     back to the previous platform-promoted holder
    GET  api/models/<name>/history?team=T                     succeeded promotions and rollbacks
    GET  api/cards/<sha256>                                   a stored model card (markdown)
    POST api/activity  {"action", "kind", "name", "team", "details"}   audit a server's local deploy, submit...
    GET  api/audit?since&until&actor&team&action&target&outcome&after_seq&limit   (admins)
    GET  api/audit/export?format=csv|jsonl&<filters>          (admins)
    GET  api/budgets, api/budgets/<team>                      budget status (members: their teams; admins: all)
    GET, POST {"until", "reason"}, DELETE  api/budgets/<team>/override   an admin's budget override (audited)
    GET  api/usage?since&until&by&step&team                   GPU-hours and cost (members: their teams; admins: all)
    GET  api/usage/digest?week=YYYY-MM-DD&format=csv|md       the weekly digest (members: their teams' rows)
    GET, POST {"version", "mode", "share", "mirror_rate"}, PATCH {"mode", "share", "mirror_rate"}, DELETE
         api/rollouts/<team>/<endpoint>                       a rollout: its live report, start, change, abort
    POST api/rollouts/<team>/<endpoint>/promote  {"server"}   the candidate to @champion behind the live gates
    PUT  api/rollouts/<team>/<endpoint>/inference-log  {"enabled", "sample_rate"}   the rollout's inference log
    GET, PUT {"object", "message"}, DELETE {"message"}
         api/gitops/<team>/<kind>/<name>                      GitOps mode: the committed object; commit it; remove it
    GET  metrics                                              Prometheus text (tokens with read:metrics)
    GET  usage  (and the prefix itself)                       the usage page (HTML; see usage_web.py)

Settings come from the environment the hub gives it: MLPLATFORM_CATALOG, MLPLATFORM_MLFLOW_SIGNING_KEY
(the hub's key file: the service mints the platform identity's MLflow tokens), and optionally
MLPLATFORM_SERVICE_DATABASE_URL (else the catalog's `platform_service.database_url`) and
MLPLATFORM_SERVICE_BIND_URL (where to listen, else JUPYTERHUB_SERVICE_URL), MLPLATFORM_GITOPS_CREDENTIALS
(GitOps mode: the repository's `<user>:<token>`, read once and taken out of the environment); JupyterHub's own
JUPYTERHUB_SERVICE_URL, JUPYTERHUB_SERVICE_PREFIX, JUPYTERHUB_API_TOKEN, JUPYTERHUB_API_URL.

On Kubernetes it also answers the API server's admission webhook for the teams' RayServices and
SparkApplications (budgets and the audit of deploy and submit: workloads.py, webhook.py) over HTTPS at
MLPLATFORM_WEBHOOK_BIND, for the names MLPLATFORM_WEBHOOK_HOSTS, keeping the CA of
MLPLATFORM_WEBHOOK_CONFIGURATION its own.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import tempfile
import threading
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuth
from jupyterhub.utils import url_path_join
from mlplatform_core.catalog import cached_catalog
from tornado import ioloop, web

from hub_config.mlflow_access.tokens import TokenSigner

from .activity import ActivityHandler
from .audit_log import AuditLog
from .budgets import Budgets
from .cards import CardStore
from .database import connect
from .evidence import local_shipper, platform_s3
from .gitops import Credentials, GitOpsRepository, Identity
from .gitops_changes import GitOpsChanges
from .overrides import Overrides
from .platform_mlflow import PlatformMlflow
from .promotion import Promotions
from .rollout_backends import rollout_backend
from .rollouts import Rollouts
from .service_handler import OAuthCallbackHandler, ServiceHandler, authenticated
from .usage import UsageLedger
from .usage_web import usage_routes
from .webhook import start_webhook
from .workloads import WorkloadAdmission

log = logging.getLogger("mlplatform_service")
RETENTION_EVERY_MS = 24 * 3600 * 1000
SHIPPER_CHECK_MS = 2000  # how soon the evidence shipper listens again once the local Ray head made its directory anew
# The admission webhook (Kubernetes): host:port to listen on, the names its certificate holds (comma-separated),
# the ValidatingWebhookConfiguration that gets its CA.
WEBHOOK_BIND, WEBHOOK_HOSTS = "MLPLATFORM_WEBHOOK_BIND", "MLPLATFORM_WEBHOOK_HOSTS"
WEBHOOK_CONFIGURATION = "MLPLATFORM_WEBHOOK_CONFIGURATION"


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


class RolloutHandler(ServiceHandler):
    """A rollout of an endpoint of a team (rollouts.py)."""

    FIELDS = {"post": ("version", "mode", "share", "mirror_rate"), "patch": ("mode", "share", "mirror_rate")}

    @authenticated
    async def get(self, team: str, name: str):
        self.reply(await self.run(self.platform.rollouts.report, await self.caller(), team, name))

    @authenticated
    async def post(self, team: str, name: str):
        body = self.fields(self.FIELDS["post"])
        self.reply(await self.run(self.platform.rollouts.start, await self.caller(), team, name, **body), status=201)

    @authenticated
    async def patch(self, team: str, name: str):
        body = self.fields(self.FIELDS["patch"])
        if "mode" not in body:
            raise web.HTTPError(400, "mode is missing; allowed: shadow, canary, off")
        self.reply(await self.run(self.platform.rollouts.change, await self.caller(), team, name, **body))

    @authenticated
    async def delete(self, team: str, name: str):
        self.reply(await self.run(self.platform.rollouts.abort, await self.caller(), team, name))

    def fields(self, allowed: tuple[str, ...]) -> dict:
        body = self.body()
        unknown = sorted(set(body) - set(allowed))
        if unknown:
            raise web.HTTPError(400, f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}")
        if self.request.method == "POST" and "version" not in body:
            raise web.HTTPError(400, "version is missing: the candidate's version of the endpoint's registered model")
        return body


class GitOpsHandler(ServiceHandler):
    """An object of a team in the GitOps repository (gitops_changes.py)."""

    @authenticated
    async def get(self, team: str, kind: str, name: str):
        self.reply(await self.run(self.platform.gitops.get, await self.caller(), team, kind, name))

    @authenticated
    async def put(self, team: str, kind: str, name: str):
        body = self.known(("object", "message"))
        if "object" not in body:
            raise web.HTTPError(400, "object is missing: the RayService or SparkApplication to commit")
        self.reply(await self.run(self.platform.gitops.put, await self.caller(), team, kind, name, body["object"],
                                  body.get("message", "")), status=201)

    @authenticated
    async def delete(self, team: str, kind: str, name: str):
        body = self.known(("message",))
        self.reply(await self.run(self.platform.gitops.delete, await self.caller(), team, kind, name,
                                  body.get("message", "")))

    def known(self, allowed: tuple[str, ...]) -> dict:
        body = self.body()
        unknown = sorted(set(body) - set(allowed))
        if unknown:
            raise web.HTTPError(400, f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}")
        return body


class RolloutLogHandler(ServiceHandler):
    """A rollout's inference log: on or off, its sample rate (rollouts.set_inference_log)."""

    @authenticated
    async def put(self, team: str, name: str):
        body = self.body()
        unknown = sorted(set(body) - {"enabled", "sample_rate"})
        if unknown:
            raise web.HTTPError(400, f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: enabled, sample_rate")
        self.reply(await self.run(self.platform.rollouts.set_inference_log, await self.caller(), team, name, **body))


class RolloutPromoteHandler(ServiceHandler):
    @authenticated
    async def post(self, team: str, name: str):
        server = self.body().get("server", "")
        if not isinstance(server, str):
            raise web.HTTPError(400, f"server is {server!r}; allowed: the name of one of your servers ('' for the default)")
        caller = await self.caller(server)
        self.reply(await self.run(self.platform.rollouts.promote, caller, team, name))


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


class OverrideHandler(AuditHandler):
    """A budget override of a team: read by its members and admins; granted and revoked by admins, audited."""

    def team(self, team: str) -> str:
        catalog = self.platform.catalog()
        if team not in catalog.teams:
            raise web.HTTPError(404, f"no team {team!r} in the catalog; teams: {', '.join(catalog.teams)}")
        return team

    @authenticated
    async def get(self, team: str):
        team = self.team(team)
        caller = await self.caller()
        if not caller.admin and team not in caller.teams:
            raise web.HTTPError(403, f"{caller.name} is not a member of {team}: its budget is its members' and admins'")
        active = await self.run(self.platform.overrides.active, team)
        self.reply({"override": active.as_dict() if active else None})

    @authenticated
    async def post(self, team: str):
        team = self.team(team)
        await self.admin()
        body = self.body()
        until, reason = body.get("until"), body.get("reason")
        try:
            moment = datetime.fromisoformat(until.replace("Z", "+00:00")) if isinstance(until, str) else None
        except ValueError:
            moment = None
        if moment is None:
            raise web.HTTPError(400, f"until: {until!r} is not allowed: an RFC 3339 time with its offset, "
                                     "e.g. 2026-12-31T23:59:59Z")
        if not isinstance(reason, str):
            raise web.HTTPError(400, f"reason: {reason!r} is not allowed: say why the team may exceed its budget")
        granted = await self.run(self.platform.overrides.grant, team, granted_by=self.current_user["name"],
                                 until=moment, reason=reason)
        await self.run(self.platform.audit.append, "budget-override", actor=granted.granted_by, team=team,
                       target=f"budget:{team}", outcome="succeeded", details={"granted": granted.as_dict()})
        self.reply({"override": granted.as_dict()}, status=201)

    @authenticated
    async def delete(self, team: str):
        team = self.team(team)
        await self.admin()
        revoked = await self.run(self.platform.overrides.revoke, team)
        await self.run(self.platform.audit.append, "budget-override", actor=self.current_user["name"], team=team,
                       target=f"budget:{team}", outcome="succeeded", details={"revoked": revoked})
        self.reply({"revoked": revoked})


class Platform:
    """What the handlers share: the catalog, the database-backed stores, MLflow as the platform."""

    def __init__(self, catalog_path: str, database_url: str, signing_key_file: str | None):
        self.catalog_path = catalog_path
        catalog = self.catalog()
        sessions = connect(database_url)
        self.audit = AuditLog(sessions)
        self.cards = CardStore(sessions)
        self.ledger = UsageLedger(sessions, self.catalog)
        self.budgets = Budgets(self.ledger)
        self.overrides = Overrides(sessions)
        signer = TokenSigner(signing_key_file) if signing_key_file else None
        mlflow = PlatformMlflow(catalog.mlflow.tracking_uri, signer,
                                workspaces=catalog.mlflow.access.mode == "hub-tokens")
        self.promotions = Promotions(catalog=self.catalog, audit=self.audit, cards=self.cards, mlflow=mlflow)
        self.workloads = WorkloadAdmission(self.catalog, self.audit, self.budgets, self.overrides)
        # GitOps mode on Kubernetes: a rollout's changes are commits through the service's GitOps writer (called
        # only then, so `gitops_repository`'s state below is set by the time it is).
        self.rollouts = Rollouts(catalog=self.catalog, audit=self.audit, promotions=self.promotions,
                                 backend=rollout_backend(self.catalog, repository=self.gitops_repository,
                                                         admission=self.workloads), s3=self.s3)
        self._gitops_credentials = Credentials.from_environ()
        self._gitops_repositories: dict[tuple, GitOpsRepository] = {}
        self.gitops = GitOpsChanges(catalog=self.catalog, audit=self.audit, workloads=self.workloads,
                                    repository=self.gitops_repository, on_commit=self.rollouts.committed)

    def gitops_repository(self) -> GitOpsRepository:
        """The writer of the catalog's GitOps repository: one working clone per repository and branch, in a
        directory of this process's own (removed when it exits)."""
        gitops = self.catalog().gitops
        key = (gitops.repository, gitops.branch, gitops.committer, gitops.commit_url)
        if key not in self._gitops_repositories:
            workdir = Path(tempfile.mkdtemp(prefix="mlplatform-gitops-"))
            atexit.register(shutil.rmtree, workdir, ignore_errors=True)
            self._gitops_repositories[key] = GitOpsRepository(
                gitops.repository, gitops.branch, self._gitops_credentials,
                Identity(gitops.committer.name, gitops.committer.email), workdir / "clone",
                commit_url=gitops.commit_url)
        return self._gitops_repositories[key]

    @functools.cached_property
    def _s3_client(self):
        return platform_s3(self.catalog().storage.s3)

    def s3(self):
        """S3 as the service (the SDK's credential chain: the hub pod's identity; locally the platform's)."""
        return self._s3_client

    def catalog(self):
        return cached_catalog(self.catalog_path)

    def apply_retention(self) -> None:
        """Drop audit records older than the catalog's `platform_service.audit_retention_days` (the chain
        resumes at the anchor they leave); run at start and daily."""
        try:
            pruned = self.audit.prune(self.catalog().platform_service.audit_retention_days)
        except Exception:
            log.exception("audit retention did not run; it runs again in a day")
            return
        if pruned:
            log.info("audit retention: %s records older than %s days removed", pruned,
                     self.catalog().platform_service.audit_retention_days)


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
        (url_path_join(api, r"activity"), ActivityHandler),
        (url_path_join(api, r"budgets/([^/]+)/override"), OverrideHandler),
        (url_path_join(api, r"rollouts/([^/]+)/([^/]+)/promote"), RolloutPromoteHandler),
        (url_path_join(api, r"rollouts/([^/]+)/([^/]+)/inference-log"), RolloutLogHandler),
        (url_path_join(api, r"rollouts/([^/]+)/([^/]+)"), RolloutHandler),
        (url_path_join(api, r"gitops/([^/]+)/([^/]+)/([^/]+)"), GitOpsHandler),
        *usage_routes(prefix),
        (url_path_join(prefix, "oauth_callback"), OAuthCallbackHandler),
    ]
    return web.Application(routes, hub_auth=hub_auth, platform=platform, xsrf_cookies=True,
                           cookie_secret=os.urandom(32))


def start_rollout_controller(platform: Platform) -> None:
    """The rollout controller's passes (rollouts.check), off the event loop, one at a time, every
    `promotion.live_gates.check_every_seconds`."""
    running = threading.Lock()

    def done(future) -> None:
        running.release()
        if not future.cancelled() and future.exception() is not None:  # else lost in the executor: say it
            log.error("the rollout controller's pass failed; it runs again in %s s", every,
                      exc_info=future.exception())

    def tick():
        if running.acquire(blocking=False):
            ioloop.IOLoop.current().run_in_executor(None, platform.rollouts.check).add_done_callback(done)

    every = platform.catalog().promotion.live_gates.check_every_seconds
    ioloop.PeriodicCallback(tick, every * 1000).start()


def start_evidence_shipper(platform: Platform) -> None:
    """The rollout gateway's evidence, shipped with the service's identity (evidence.py): on the local platform the
    service listens for the local Ray head's gateway."""
    shipper = local_shipper(platform.catalog, platform.s3)
    shipper.start()
    atexit.register(shipper.close, timeout=10)
    log.info("the rollout gateway's evidence is shipped from %s", shipper.socket_path)

    def keep_listening():
        if shipper.keep_listening():
            log.info("listening again for the rollout gateway's evidence on %s", shipper.socket_path)

    ioloop.PeriodicCallback(keep_listening, SHIPPER_CHECK_MS).start()


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
    # JUPYTERHUB_SERVICE_URL is where the proxy reaches it; in z2jh's hub pod that names the hub Service,
    # no address of the pod, and the hub gives MLPLATFORM_SERVICE_BIND_URL (all interfaces) to listen on.
    bind = os.environ.get("MLPLATFORM_SERVICE_BIND_URL") or os.environ["JUPYTERHUB_SERVICE_URL"]
    url = urlparse(bind)
    app = make_app(platform, os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/mlplatform/"))
    app.listen(url.port, url.hostname)
    log.info("mlplatform service on %s (reached at %s)", bind, os.environ["JUPYTERHUB_SERVICE_URL"])
    if os.environ.get(WEBHOOK_BIND):  # on Kubernetes: the API server's admission webhook (webhook.py)
        start_webhook(platform.workloads, bind=os.environ[WEBHOOK_BIND],
                      hosts=os.environ[WEBHOOK_HOSTS].split(","), configuration=os.environ[WEBHOOK_CONFIGURATION])
    def retention():  # off the event loop: the inference logs' retention lists every team's S3 prefix
        ioloop.IOLoop.current().run_in_executor(None, platform.apply_retention)
        ioloop.IOLoop.current().run_in_executor(None, platform.rollouts.prune_inference_logs)

    ioloop.IOLoop.current().add_callback(retention)
    ioloop.PeriodicCallback(retention, RETENTION_EVERY_MS).start()
    start_rollout_controller(platform)
    if catalog.platform.backend == "local":
        start_evidence_shipper(platform)
    try:
        ioloop.IOLoop.current().start()
    except KeyboardInterrupt:  # the hub (or Ctrl-C on the local platform) stops it
        log.info("mlplatform service stopped")
