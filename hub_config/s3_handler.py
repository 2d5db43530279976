"""Hub API endpoint that hands a user's running server its short-lived S3 credentials.

    GET /hub/api/mlplatform/s3-credentials/<user>[?server=<name>]

answers the JSON of an AWS `credential_process` (Version, AccessKeyId, SecretAccessKey, SessionToken,
Expiration), scoped to the server's team. Who may ask: see server_handler.py (the scope
`custom:mlplatform:s3-credentials`, a running server, current team membership).
Registered by KeycloakOAuthenticator.get_handlers, since the authenticator holds the ID tokens.
"""

from __future__ import annotations

import json

from tornado import web

from .keycloak import RealmUnreachable, RefreshRefused
from .s3_broker import CredentialsUnavailable
from .server_handler import RunningServerHandler, broker, refresh_failure

SCOPE = "custom:mlplatform:s3-credentials"
CUSTOM_SCOPES = {SCOPE: {"description": "Read a user's short-lived S3 credentials for their running server's team."}}


class S3CredentialsHandler(RunningServerHandler):
    scope = SCOPE
    what = "S3 credentials"

    async def get(self, username: str):
        user, selection = await self.team_server(username)

        async def id_token() -> str:
            try:
                return await self.authenticator.fresh_id_token(user, self)
            except (RefreshRefused, RealmUnreachable) as e:
                raise refresh_failure(e, username) from None

        try:
            creds = await broker(self.settings).credentials(username, selection.team, id_token)
        except CredentialsUnavailable as e:
            self.log.warning("No S3 credentials for %s: %s", username, e)
            raise web.HTTPError(e.status, str(e)) from None
        self.set_header("Cache-Control", "no-store")
        self.audit(username, selection.team, "succeeded", expires=creds.expiration.isoformat())
        self.finish(json.dumps(creds.as_credential_process()))

    def left_team(self, username: str, team: str) -> None:
        broker(self.settings).forget(username, team)
