"""The hub's side of MLflow access control: its settings, the token endpoint and the UI login page.

    GET /hub/api/mlplatform/mlflow-token/<user>[?server=<name>]   {"token": ..., "expires_at": ...}
    GET /hub/mlplatform/mlflow-login[?next=<MLflow path>]          the MLflow UI, logged in

The token endpoint needs the scope `custom:mlplatform:mlflow-token` for that user and a running
server of a team the user is still in (server_handler.py); the token carries the user's MLflow roles
as the catalog and the user's groups say now (tokens.mlflow_roles). The login page serves a browser
session: it mints a token for the logged-in user and hands it to MLflow in a POST form (never in a
URL), where it becomes an HttpOnly cookie.
"""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone

from jupyterhub.handlers import BaseHandler
from tornado import web
from traitlets import Unicode
from traitlets.config import Configurable

from ..server_handler import RunningServerHandler, broker
from .provisioning import TeamProvisioner
from .tokens import TokenSigner, mlflow_roles

SCOPE = "custom:mlplatform:mlflow-token"
CUSTOM_SCOPES = {SCOPE: {"description": "Read a user's short-lived MLflow token for their running server."}}
LOGIN_PATH = "/mlplatform-login"  # server.LOGIN_PATH, on the MLflow server


class MlflowAccess(Configurable):
    """The hub's MLflow signing key and the team provisioner that uses it; one per key file in a process."""

    _instances: dict[str, MlflowAccess] = {}

    @classmethod
    def of(cls, config) -> MlflowAccess:
        """The one for the hub's config (spawners and handlers share its provisioner's memory)."""
        key = cls(config=config).signing_key_file
        return cls._instances.setdefault(key, cls(config=config))

    signing_key_file = Unicode("", config=True, help="""
        PEM file of the RS256 private key the hub signs MLflow tokens with. MLflow's auth app verifies
        them with the public key (`public_key_file` in its ini file). Needed when the catalog's
        `mlflow.access.mode` is `hub-tokens`. The local platform makes one in its data directory.
        """)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.signer = TokenSigner(self.signing_key_file) if self.signing_key_file else None
        self.provisioner = TeamProvisioner(self.signer)

    def require_signer(self) -> TokenSigner:
        if self.signer is None:
            raise web.HTTPError(503, "MLflow tokens are not configured on this hub (c.MlflowAccess.signing_key_file)")
        return self.signer


def mint_for(settings: dict, user, team: str | None, teams: list[str]) -> tuple[str, float]:
    catalog = broker(settings).catalog
    lifetime = catalog.mlflow.access.token_lifetime_seconds
    signer = MlflowAccess.of(settings.get("config")).require_signer()
    return signer.mint(user.name, roles=mlflow_roles(catalog, teams), team=team, lifetime=lifetime)


class MlflowTokenHandler(RunningServerHandler):
    scope = SCOPE
    what = "MLflow tokens"

    async def get(self, username: str):
        user, selection = await self.team_server(username)
        token, expires_at = mint_for(self.settings, user, selection.team, self.teams_of(user))
        self.set_header("Cache-Control", "no-store")
        self.audit(username, selection.team, "succeeded",
                   expires=datetime.fromtimestamp(expires_at, timezone.utc).isoformat())
        self.finish(json.dumps({"token": token, "expires_at": expires_at}))


class MlflowLoginHandler(BaseHandler):
    """The MLflow UI for the logged-in user: a page that POSTs a fresh token to MLflow's login path."""

    @web.authenticated
    async def get(self):
        user = self.current_user
        catalog = broker(self.settings).catalog
        teams = catalog.teams_of([group.name for group in user.groups])
        if not teams:
            raise web.HTTPError(403, f"{user.name} is in no team of the catalog: MLflow is open to team members")
        token, _ = mint_for(self.settings, user, None, teams)
        target = self.get_argument("next", "/")
        if not target.startswith("/") or target.startswith("//"):
            target = "/"
        action = catalog.mlflow.tracking_uri.rstrip("/") + LOGIN_PATH
        self.set_header("Cache-Control", "no-store")
        self.finish(f"""<!doctype html><title>MLflow</title>
<form method="post" action="{html.escape(action)}">
<input type="hidden" name="token" value="{html.escape(token)}">
<input type="hidden" name="next" value="{html.escape(target)}">
<noscript><button type="submit">Open MLflow</button></noscript></form>
<script>document.forms[0].submit()</script>""")
