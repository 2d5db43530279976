"""KeycloakOAuthenticator: GenericOAuthenticator configured by a Keycloak realm URL.

Endpoints come from the realm's discovery document; the username is `preferred_username`; Keycloak
groups ("/team-vision") become JupyterHub groups ("team-vision") through `manage_groups`; a realm
role (`admin_role`) makes a user a hub admin; refresh tokens stay in auth_state and are used before
every spawn; logging out of the hub ends the Keycloak session too. The realm's answers to a refresh
become two exceptions callers can tell apart: `RefreshRefused` (log in again) and `RealmUnreachable`.
"""

from __future__ import annotations

import time
from inspect import isawaitable
from urllib.parse import urlencode

import jwt
import requests
from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import OAuthLogoutHandler
from tornado import web
from tornado.httpclient import HTTPClientError
from traitlets import Float, Unicode, default


class RefreshRefused(Exception):
    """The realm refused to refresh the user's login (refresh token expired or revoked, user disabled)."""


class RealmUnreachable(Exception):
    """The realm did not answer a refresh: connection failed, timed out, or a server error."""


def _refresh_outcome(e: Exception, what: str) -> Exception | None:
    """What a failed call to the realm means for a refresh; None when it is no answer of the realm (a bug)."""
    if isinstance(e, OSError) or isinstance(e, HTTPClientError) and e.code >= 500:
        # Said the same whichever HTTP client the hub runs (JupyterHub takes curl's when pycurl is there).
        why = (f"connection failed: {e.strerror or type(e).__name__}" if isinstance(e, OSError) else
               "no response: timed out or the connection failed" if e.code == 599 else f"HTTP {e.code}")
        return RealmUnreachable(f"the realm did not answer {what} ({why})")
    if isinstance(e, HTTPClientError) or isinstance(e, web.HTTPError) and e.status_code == 403:
        # 400 invalid_grant; oauthenticator turns a 200 with an error description into a 403
        return RefreshRefused(f"the realm refused {what}")
    if isinstance(e, web.HTTPError):
        # oauthenticator's "Bad response" (no access token): its message quotes the answer, keep it out
        return RealmUnreachable(f"the realm gave no usable answer to {what}")
    return None


class KeycloakLogoutHandler(OAuthLogoutHandler):
    """Logs out of the hub, then of the realm, with the ID token as hint (no confirmation page)."""

    async def get(self):
        user = self.current_user
        auth_state = await user.get_auth_state() if user else None
        self._id_token = (auth_state or {}).get("id_token")
        await super().get()

    async def render_logout_page(self):
        self.redirect(self.authenticator.end_session_url(self._id_token))


def keycloak_groups(auth_state: dict) -> list[str]:
    """Keycloak group paths ("/team-vision") from the userinfo, as JupyterHub group names."""
    groups = (auth_state.get("oauth_user") or {}).get("groups") or []
    return [group.lstrip("/") for group in groups]


class KeycloakOAuthenticator(GenericOAuthenticator):
    login_service = Unicode("Keycloak", config=True, help="Name shown on the login button.")
    logout_handler = KeycloakLogoutHandler

    realm_url = Unicode(
        config=True,
        help="""
        URL of the Keycloak realm, the OpenID issuer. Endpoints are read from its discovery document
        (`<realm_url>/.well-known/openid-configuration`) when the hub starts.

            c.KeycloakOAuthenticator.realm_url = "https://sso.example.org/realms/platform"
        """,
    )

    admin_role = Unicode(
        "platform-admin",
        config=True,
        help="""
        Realm role (from the `realm_access.roles` claim) that makes a user a JupyterHub admin.
        Admins are allowed in even when they are in none of `allowed_groups`. Empty: no role grants admin.
        """,
    )

    post_logout_redirect_uri = Unicode(
        config=True,
        help="""
        Where Keycloak sends the browser after logout. Must be registered as a valid post-logout
        redirect URI of the client. Defaults to the hub's login page next to `oauth_callback_url`.
        """,
    )

    discovery_timeout = Float(
        60,
        config=True,
        help="Seconds to keep retrying the realm's discovery document while Keycloak starts up.",
    )

    @default("post_logout_redirect_uri")
    def _default_post_logout_redirect_uri(self):
        return self.oauth_callback_url.replace("/oauth_callback", "/login")

    @default("auto_login")
    def _default_auto_login(self):
        # One identity provider: /hub/login goes straight to it, not to a page with one button (issue 13: a page
        # fewer between the hub and the spawn form). After a logout the provider's login form is what shows.
        return True

    @default("username_claim")
    def _default_username_claim(self):
        return "preferred_username"

    @default("scope")
    def _default_scope(self):
        return ["openid", "profile", "email", "groups", "roles"]

    @default("manage_groups")
    def _default_manage_groups(self):
        return True

    @default("auth_state_groups_key")
    def _default_groups_key(self):
        return keycloak_groups

    @default("enable_auth_state")
    def _default_enable_auth_state(self):
        return True

    @default("refresh_pre_spawn")
    def _default_refresh_pre_spawn(self):
        return True

    @default("authorize_url")
    def _default_authorize_url(self):
        return self.discovery["authorization_endpoint"]

    @default("token_url")
    def _default_token_url(self):
        return self.discovery["token_endpoint"]

    @default("userdata_url")
    def _default_userdata_url(self):
        return self.discovery["userinfo_endpoint"]

    @default("logout_redirect_url")
    def _default_logout_redirect_url(self):
        return self.end_session_url()

    _discovery: dict | None = None

    @property
    def discovery(self) -> dict:
        """The realm's OpenID discovery document, fetched once (retried while the realm starts)."""
        if self._discovery is None:
            if not self.realm_url:
                raise ValueError("KeycloakOAuthenticator.realm_url is not set: give the URL of the Keycloak realm, "
                                 "for example https://sso.example.org/realms/platform")
            url = self.realm_url.rstrip("/") + "/.well-known/openid-configuration"
            deadline = time.monotonic() + self.discovery_timeout
            while True:
                try:
                    response = requests.get(url, timeout=5)
                    response.raise_for_status()
                    self._discovery = response.json()
                    break
                except (requests.RequestException, ValueError) as e:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"cannot read the realm's discovery document {url}: {e}") from None
                    self.log.warning("Waiting for the realm's discovery document %s: %s", url, e)
                    time.sleep(1)
        return self._discovery

    def end_session_url(self, id_token: str | None = None) -> str:
        params = {"client_id": self.client_id, "post_logout_redirect_uri": self.post_logout_redirect_uri}
        if id_token:
            params["id_token_hint"] = id_token
        return self.discovery["end_session_endpoint"] + "?" + urlencode(params)

    def get_handlers(self, app):
        # Not at the top: the handlers import this module.
        from .mlflow_access.handlers import MlflowLoginHandler, MlflowTokenHandler
        from .gpu_handler import GpuReservationsHandler
        from .rollout_gpu_handler import RolloutGpusHandler
        from .s3_handler import S3CredentialsHandler

        return [*super().get_handlers(app), (r"/api/mlplatform/s3-credentials/([^/]+)", S3CredentialsHandler),
                (r"/api/mlplatform/mlflow-token/([^/]+)", MlflowTokenHandler),
                (r"/mlplatform/mlflow-login", MlflowLoginHandler),
                (r"/api/mlplatform/gpu-reservations/([^/]+)/([^/]+)", GpuReservationsHandler),
                (r"/api/mlplatform/rollout-gpus/([^/]+)/([^/]+)(?:/([^/]+))?", RolloutGpusHandler)]

    async def fresh_id_token(self, user, handler, min_validity: float = 60) -> str:
        """The user's ID token, refreshed with the refresh token when it expires within `min_validity` s.

        STS validates the ID token's expiry, which is as short as the access token's (5 minutes in
        Keycloak by default), so the broker asks for a fresh one before each AssumeRoleWithWebIdentity.
        Raises RefreshRefused or RealmUnreachable; anything else is a bug and propagates as it is.
        """
        auth_state = await user.get_auth_state() or {}
        id_token = auth_state.get("id_token")
        if id_token and _expires_at(id_token) - time.time() > min_validity:
            return id_token
        if not auth_state.get("refresh_token"):
            raise RefreshRefused(f"{user.name} has no refresh token")
        params = self.build_refresh_token_request_params(auth_state["refresh_token"])
        try:
            token_info = await self.get_token_info(handler, params)
        except (OSError, HTTPClientError, web.HTTPError) as e:
            outcome = _refresh_outcome(e, f"the refresh of {user.name}'s tokens")
            if outcome is None:
                raise
            raise outcome from None
        token_info.setdefault("refresh_token", auth_state["refresh_token"])  # not rotated: keep the current one
        fresh = self.build_auth_state_dict(token_info, auth_state.get(self.user_auth_state_key))
        if isawaitable(fresh):
            fresh = await fresh
        if not fresh.get("id_token"):  # not the user's fault, nor the realm's outage: the operator must look
            raise RuntimeError(f"the realm's answer to the refresh of {user.name}'s tokens has no ID token; "
                               "check that the client's scopes include openid")
        await user.save_auth_state({**auth_state, **fresh})
        self.log.info("Refreshed the tokens of %s for S3 credentials", user.name)
        return fresh["id_token"]

    async def refreshed_auth_model(self, user, handler) -> dict:
        """JupyterHub's `refresh_user` (userinfo with the access token, else the refresh token): the
        user's current auth model, groups included. Raises RefreshRefused or RealmUnreachable.

        oauthenticator answers False for a refused refresh and raises for an unreachable userinfo
        endpoint; callers that must not hand out anything on stale groups need the two apart.
        """
        try:
            auth_model = await self.refresh_user(user, handler)
        except (OSError, HTTPClientError) as e:
            outcome = _refresh_outcome(e, f"the refresh of {user.name}'s login")
            if outcome is None:
                raise
            raise outcome from None
        if not auth_model:
            raise RefreshRefused(f"the realm refused the refresh of {user.name}'s login")
        return auth_model

    async def get_authenticated_user(self, handler, data):
        """A login (not a refresh): audited once it passed every check."""
        auth_model = await super().get_authenticated_user(handler, data)
        if auth_model:
            from .governance import Governance  # not at the top: it imports the service's database layer

            groups = auth_model.get("groups") or []
            Governance.of(self.config).record("login", actor=auth_model["name"], target=f"user:{auth_model['name']}",
                                              outcome="succeeded", details={"groups": sorted(groups),
                                                                            "admin": bool(auth_model.get("admin"))})
        return auth_model

    async def check_allowed(self, username, auth_model):
        """At login: refused (in no team group, not an admin) is audited too, with the groups the realm gave."""
        allowed = await super().check_allowed(username, auth_model)
        if not allowed:
            from .governance import Governance

            groups = (auth_model or {}).get("groups") or []
            Governance.of(self.config).record("login", actor=username, target=f"user:{username}", outcome="refused",
                                              details={"groups": sorted(groups), "allowed_groups": sorted(
                                                  self.allowed_groups)})
        return allowed

    async def update_auth_model(self, auth_model):
        auth_model = await super().update_auth_model(auth_model)
        user_info = auth_model["auth_state"].get(self.user_auth_state_key) or {}
        roles = (user_info.get("realm_access") or {}).get("roles") or []
        if self.admin_role:
            # Admin follows the role on every login: removing the role in Keycloak removes admin.
            auth_model["admin"] = bool(auth_model["admin"]) or self.admin_role in roles
        return auth_model


def _expires_at(token: str) -> float:
    """`exp` of a JWT, read without verifying: the token came straight from the realm's token endpoint."""
    try:
        return float(jwt.decode(token, options={"verify_signature": False}).get("exp", 0))
    except jwt.PyJWTError:
        return 0.0
