"""What every hub endpoint that hands a running server its credentials checks first.

    GET /hub/api/mlplatform/<what>/<user>[?server=<name>]

The caller needs the endpoint's custom scope for that user: every user holds it for themselves (the
`user` role), a server's token carries it for its own user, nothing else has it — not JupyterHub's
admin role, not a token limited to other scopes. The user must have the server running, started with
a team profile, and still be in that team (groups refreshed from the realm when older than
`c.S3CredentialBroker.membership_max_age`).
"""

from __future__ import annotations

from jupyterhub.apihandlers import APIHandler
from tornado import web

from .governance import Governance
from .keycloak import RealmUnreachable, RefreshRefused
from .profiles import Selection
from .s3_broker import CredentialsUnavailable, S3CredentialBroker


def broker(settings: dict) -> S3CredentialBroker:
    """One broker per hub, made on first use from the hub's config (c.S3CredentialBroker.*); it also
    keeps when each user's groups were last read from the realm."""
    if "mlplatform_s3_broker" not in settings:
        settings["mlplatform_s3_broker"] = S3CredentialBroker(config=settings.get("config"))
    return settings["mlplatform_s3_broker"]


def refresh_failure(e: Exception, username: str) -> CredentialsUnavailable:
    if isinstance(e, RefreshRefused):
        return CredentialsUnavailable(401, f"{e}: {username} must log in to the hub again")
    return CredentialsUnavailable(503, f"{e}: try again when the realm is back")


class RunningServerHandler(APIHandler):
    scope: str  # the custom scope of the endpoint
    what: str  # what it hands out, for messages ("S3 credentials")

    async def refresh_auth(self, user, force=False):
        # Not while identifying the caller: JupyterHub's refresh would turn an unreachable realm or a
        # bug into "not authenticated". The membership check refreshes, and says which it was.
        return user

    async def team_server(self, username: str):
        """(user, the running server's Selection) once every check above has passed; raises HTTPError."""
        if self.current_user is None:
            raise web.HTTPError(403, f"{self.what} need authentication: send the server's token "
                                     "(JUPYTERHUB_API_TOKEN) as 'Authorization: token ...'")
        needed = f"{self.scope}!user={username}"
        if not self.has_scope(needed):
            raise web.HTTPError(403, f"only {username}'s own servers and login session may read {username}'s "
                                     f"{self.what} (scope {needed}); this token or session lacks it")
        user, spawner = self.running_server(username, f"{self.what} are issued only to running servers; start "
                                                       "one from the hub")
        selection: Selection | None = getattr(spawner, "selection", None)
        if selection is None:
            raise web.HTTPError(409, f"the server of {username} was not started with a team profile")
        try:
            await broker(self.settings).confirm_membership(username, lambda: self._refresh_groups(user))
        except CredentialsUnavailable as e:
            self.log.warning("No %s for %s: %s", self.what, username, e)
            raise web.HTTPError(e.status, str(e)) from None
        if selection.team not in self.teams_of(user):
            self.left_team(username, selection.team)
            self.audit(username, selection.team, "refused", reason="no longer a member of the team")
            raise web.HTTPError(403, f"{username} is no longer a member of team {selection.team}: {self.what} "
                                     f"for it are issued to team members only. Ask a platform administrator to "
                                     f"add {username} back, or start a server for another team")
        return user, selection

    def running_server(self, username: str, why: str):
        """(user, the spawner of their server `?server=`) when it runs; else 404 or 409 saying `why` it must."""
        user = self.find_user(username)
        if user is None:
            raise web.HTTPError(404, f"no such user: {username}")
        server = self.get_argument("server", "")
        spawner = user.spawners[server] if server in user.orm_spawners else None
        if spawner is None or not spawner.ready:
            name = f" {server!r}" if server else ""
            raise web.HTTPError(409, f"{username} has no running server{name}: {why}")
        return user, spawner

    def audit(self, username: str, team: str | None, outcome: str, **details) -> None:
        """A credential vend (or its refusal) in the platform's audit log: who, for which server and team."""
        server = self.get_argument("server", "")
        Governance.of(self.settings.get("config")).record(
            "credentials", actor=username, team=team, target=f"server:{username}/{server}", outcome=outcome,
            details={"credentials": self.what, **details})

    def teams_of(self, user) -> list[str]:
        return broker(self.settings).catalog.teams_of([group.name for group in user.groups])

    def left_team(self, username: str, team: str) -> None:
        """Hook: forget what was cached for `username` in `team`."""

    async def _refresh_groups(self, user) -> None:
        """The user's groups (and admin flag, auth_state) as the realm has them now."""
        try:
            auth_model = await self.authenticator.refreshed_auth_model(user, self)
        except (RefreshRefused, RealmUnreachable) as e:
            raise refresh_failure(e, user.name) from None
        # What JupyterHub's own refresh_auth does with the model: sync groups, admin and auth_state.
        await self.auth_to_user({**auth_model, "name": user.name}, user)
