"""Hub API endpoint that hands a user's running server its short-lived S3 credentials.

    GET /hub/api/mlplatform/s3-credentials/<user>[?server=<name>]

answers the JSON of an AWS `credential_process` (Version, AccessKeyId, SecretAccessKey, SessionToken,
Expiration). Only the user themselves (their server's token, their browser session) and admins may
read it; the user must have the server running, and the credentials are scoped to that server's team.
Registered by KeycloakOAuthenticator.get_handlers, since the authenticator holds the ID tokens.
"""

from __future__ import annotations

import json

from jupyterhub.apihandlers import APIHandler
from tornado import web

from .s3_broker import CredentialsUnavailable, S3CredentialBroker


def broker(settings: dict) -> S3CredentialBroker:
    """One broker per hub, made on first use from the hub's config (c.S3CredentialBroker.*)."""
    if "mlplatform_s3_broker" not in settings:
        settings["mlplatform_s3_broker"] = S3CredentialBroker(config=settings.get("config"))
    return settings["mlplatform_s3_broker"]


class S3CredentialsHandler(APIHandler):
    async def get(self, username: str):
        requester = self.current_user
        if requester is None:
            raise web.HTTPError(403, "S3 credentials need authentication: send the server's token "
                                     "(JUPYTERHUB_API_TOKEN) as 'Authorization: token ...'")
        if requester.name != username and not getattr(requester, "admin", False):
            raise web.HTTPError(403, f"only {username} and admins may read {username}'s S3 credentials")
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
            except Exception as e:  # refresh refused or the realm is down: the user must log in again
                raise CredentialsUnavailable(401, f"cannot refresh the login of {username} ({type(e).__name__}): "
                                                  "log in to the hub again") from None

        try:
            creds = await broker(self.settings).credentials(username, selection.team, id_token)
        except CredentialsUnavailable as e:
            self.log.warning("No S3 credentials for %s: %s", username, e)
            raise web.HTTPError(e.status, str(e)) from None
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(creds.as_credential_process()))
