"""Hub API endpoint that hands a user's running server its short-lived S3 credentials.

    GET /hub/api/mlplatform/s3-credentials/<user>[?server=<name>]

answers the JSON of an AWS `credential_process` (Version, AccessKeyId, SecretAccessKey, SessionToken,
Expiration). It needs the scope `custom:mlplatform:s3-credentials` for that user: every user holds it
for themselves (the `user` role), a server's token carries it for its own user, nothing else has it —
not JupyterHub's admin role, not a token limited to other scopes. The user must have the server
running and still be in that server's team (groups refreshed from the realm when older than
`c.S3CredentialBroker.membership_max_age`); the credentials are scoped to that team.
Registered by KeycloakOAuthenticator.get_handlers, since the authenticator holds the ID tokens.
"""

from __future__ import annotations

import json

from jupyterhub.apihandlers import APIHandler
from tornado import web

from .keycloak import RealmUnreachable, RefreshRefused
from .s3_broker import CredentialsUnavailable, S3CredentialBroker

SCOPE = "custom:mlplatform:s3-credentials"
CUSTOM_SCOPES = {SCOPE: {"description": "Read a user's short-lived S3 credentials for their running server's team."}}


def broker(settings: dict) -> S3CredentialBroker:
    """One broker per hub, made on first use from the hub's config (c.S3CredentialBroker.*)."""
    if "mlplatform_s3_broker" not in settings:
        settings["mlplatform_s3_broker"] = S3CredentialBroker(config=settings.get("config"))
    return settings["mlplatform_s3_broker"]


def _refresh_failure(e: Exception, username: str) -> CredentialsUnavailable:
    if isinstance(e, RefreshRefused):
        return CredentialsUnavailable(401, f"{e}: {username} must log in to the hub again")
    return CredentialsUnavailable(503, f"{e}: try again when the realm is back")


class S3CredentialsHandler(APIHandler):
    async def refresh_auth(self, user, force=False):
        # Not while identifying the caller: JupyterHub's refresh would turn an unreachable realm or a
        # bug into "not authenticated". The membership check in get() refreshes, and says which it was.
        return user

    async def get(self, username: str):
        if self.current_user is None:
            raise web.HTTPError(403, "S3 credentials need authentication: send the server's token "
                                     "(JUPYTERHUB_API_TOKEN) as 'Authorization: token ...'")
        needed = f"{SCOPE}!user={username}"
        if not self.has_scope(needed):
            raise web.HTTPError(403, f"only {username}'s own servers and login session may read {username}'s S3 "
                                     f"credentials (scope {needed}); this token or session lacks it")
        user = self.find_user(username)
        if user is None:
            raise web.HTTPError(404, f"no such user: {username}")
        server = self.get_argument("server", "")
        spawner = user.spawners[server] if server in user.orm_spawners else None
        if spawner is None or not spawner.ready:
            name = f" {server!r}" if server else ""
            raise web.HTTPError(409, f"{username} has no running server{name}: S3 credentials are issued only to "
                                     "running servers; start one from the hub")
        selection = getattr(spawner, "selection", None)
        if selection is None:
            raise web.HTTPError(409, f"the server of {username} was not started with a team profile")

        async def id_token() -> str:
            try:
                return await self.authenticator.fresh_id_token(user, self)
            except (RefreshRefused, RealmUnreachable) as e:
                raise _refresh_failure(e, username) from None

        s3 = broker(self.settings)
        try:
            await s3.confirm_membership(username, lambda: self._refresh_groups(user))
            groups = [group.name for group in user.groups]
            if selection.team not in s3.catalog.teams_of(groups):
                s3.forget(username, selection.team)
                raise web.HTTPError(403, f"{username} is no longer a member of team {selection.team}: S3 credentials "
                                         f"for its prefix are issued to team members only. Ask a platform "
                                         f"administrator to add {username} back, or start a server for another team")
            creds = await s3.credentials(username, selection.team, id_token)
        except CredentialsUnavailable as e:
            self.log.warning("No S3 credentials for %s: %s", username, e)
            raise web.HTTPError(e.status, str(e)) from None
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(creds.as_credential_process()))

    async def _refresh_groups(self, user) -> None:
        """The user's groups (and admin flag, auth_state) as the realm has them now."""
        try:
            auth_model = await self.authenticator.refreshed_auth_model(user, self)
        except (RefreshRefused, RealmUnreachable) as e:
            raise _refresh_failure(e, user.name) from None
        # What JupyterHub's own refresh_auth does with the model: sync groups, admin and auth_state.
        await self.auth_to_user({**auth_model, "name": user.name}, user)
