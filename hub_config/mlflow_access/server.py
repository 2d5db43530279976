"""The authorization function of MLflow's auth app: who is calling, from a token the hub signed.

Runs inside the MLflow tracking server (`mlflow server --app-name basic-auth --enable-workspaces`),
configured by the auth app's ini file (MLFLOW_AUTH_CONFIG_PATH):

    [mlflow]
    authorization_function = hub_config.mlflow_access.server:authenticate
    admin_username = mlplatform-platform
    default_permission = NO_PERMISSIONS
    grant_default_workspace_access = false
    [mlplatform]
    public_key_file = /path/to/mlflow-signing.pub.pem
    ui_login_url = https://hub.example.org/hub/mlplatform/mlflow-login   # optional: the MLflow UI's login
    protected_aliases = champion                     # optional: aliases only the platform moves (protected.py)
    # optional: workloads in the cluster (RayService and Spark pods) with projected service-account tokens
    kubernetes_issuer = https://oidc.eks.eu-central-1.amazonaws.com/id/EXAMPLE
    kubernetes_jwks_url = https://oidc.eks.eu-central-1.amazonaws.com/id/EXAMPLE/keys
    [mlplatform.namespaces]            # team namespace = team
    team-vision = team-vision
    [mlplatform.service_accounts]      # service account = the managed role it gets in its team
    mlplatform-serving = mlplatform-readers
    mlplatform-spark = mlplatform-members

On every request MLflow protects it
1. takes `Authorization: Bearer <token>` (or, for the UI, the `mlplatform-mlflow` cookie) and verifies
   it: a hub token (RS256 with the hub's public key only), or a Kubernetes service-account token of a
   listed account in a team namespace (the cluster issuer's keys, audience `mlflow`: a token projected
   for MLflow, useless against the API server); issuer, audience and expiry required;
2. creates the MLflow user on first sight (with a random password nobody knows: no password login);
3. makes the user's managed role assignments equal the token's `roles` (a token older than one already
   applied changes nothing), so team membership comes from the hub, at most one token lifetime stale;
4. refuses per-user grants and revokes to anyone but MLflow's admins: permissions come from the
   catalog (a resource's creator gets MANAGE, which would let them grant another team EDIT); and
   refuses moves of protected aliases and what would undo them (protected.py) to anyone but the platform;
5. answers a werkzeug `Authorization` with the username; MLflow's own permission checks follow.
"""

from __future__ import annotations

import configparser
import logging
import os
import secrets
import threading
import time
from functools import cache
from urllib.parse import quote

import jwt
from flask import Response, redirect, request
from werkzeug.datastructures import Authorization

from . import protected
from .tokens import ALGORITHM, AUDIENCE, ISSUER, MANAGED_ROLES

log = logging.getLogger(__name__)

COOKIE = "mlplatform-mlflow"
LOGIN_PATH = "/mlplatform-login"
PLATFORM_ONLY = ("/mlflow/users/permissions/grant", "/mlflow/users/permissions/revoke")

_lock = threading.Lock()
_known_users: set[str] = set()
_applied_at: dict[str, float] = {}  # user → `iat` of the newest token whose roles were applied


@cache
def settings() -> dict:
    parser = configparser.ConfigParser()
    parser.read(os.environ["MLFLOW_AUTH_CONFIG_PATH"])
    section = parser["mlplatform"]
    with open(section["public_key_file"]) as f:
        public_key = f.read()
    issuer = section.get("kubernetes_issuer", "")
    return {"public_key": public_key, "admin": parser["mlflow"]["admin_username"],
            "ui_login_url": section.get("ui_login_url", ""),
            "protected_aliases": section.get("protected_aliases", "").split(),
            "cookie_secure": section.getboolean("cookie_secure", False),
            "kubernetes_issuer": issuer,
            "kubernetes_keys": jwt.PyJWKClient(section["kubernetes_jwks_url"], timeout=10) if issuer else None,
            "namespaces": dict(parser["mlplatform.namespaces"]) if parser.has_section("mlplatform.namespaces") else {},
            "service_accounts": (dict(parser["mlplatform.service_accounts"])
                                 if parser.has_section("mlplatform.service_accounts") else {})}


REQUIRED = ["exp", "iat", "sub", "aud", "iss"]


def verify(token: str) -> dict:
    """The claims of a valid token (`sub`, `roles`, `iat`), a hub token or a workload's; raises
    jwt.InvalidTokenError."""
    s = settings()
    issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
    if s["kubernetes_issuer"] and issuer == s["kubernetes_issuer"]:
        return _verify_service_account(token, s)
    claims = jwt.decode(token, s["public_key"], algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER, leeway=5,
                        options={"require": REQUIRED})
    if claims["sub"] == s["admin"] and claims.get("typ") != "platform":
        raise jwt.InvalidTokenError("the platform identity needs a platform token")
    return claims


def _verify_service_account(token: str, s: dict) -> dict:
    """A projected service-account token: the role its account has in the team of its namespace."""
    try:
        key = s["kubernetes_keys"].get_signing_key_from_jwt(token).key
    except jwt.PyJWKClientError as e:
        raise jwt.InvalidTokenError(f"no key of the cluster's issuer verifies it ({e})") from None
    claims = jwt.decode(token, key, algorithms=["RS256", "ES256"], audience=AUDIENCE, issuer=s["kubernetes_issuer"],
                        leeway=5, options={"require": REQUIRED})
    identity = claims.get("kubernetes.io") or {}
    namespace, account = identity.get("namespace"), (identity.get("serviceaccount") or {}).get("name")
    team, role = s["namespaces"].get(namespace), s["service_accounts"].get(account)
    if team is None or role not in MANAGED_ROLES:
        raise jwt.InvalidTokenError(f"service account {account!r} of namespace {namespace!r} has no MLflow access")
    return {"sub": claims["sub"], "iat": claims["iat"], "exp": claims["exp"], "roles": [f"{team}/{role}"]}


def authenticate() -> Authorization | Response:
    from mlflow.server.auth import store

    if request.method == "POST" and request.path == LOGIN_PATH:
        return _ui_login()
    token = _presented_token()
    if token is None and _is_browser_page() and settings()["ui_login_url"]:
        return redirect(f"{settings()['ui_login_url']}?next={quote(request.full_path.rstrip('?'))}", 302)
    if token is None:
        return _unauthenticated("MLflow needs a token from the platform's hub: in a notebook server MLflow's "
                                "mlplatform auth plugin sends it (MLFLOW_TRACKING_AUTH=mlplatform)")
    try:
        claims = verify(token)
    except jwt.InvalidTokenError as e:
        return _unauthenticated(f"invalid MLflow token: {e}")
    username = claims["sub"]
    _ensure_user(store, username)
    if username != settings()["admin"]:
        _sync_roles(store, username, claims.get("roles", []), float(claims["iat"]))
        if request.path.endswith(PLATFORM_ONLY):
            return Response("permissions come from the platform's catalog: ask a platform administrator\n",
                            status=403, mimetype="text/plain")
        refused = protected.refusal(request.method, request.path, _params(), settings()["protected_aliases"],
                                    _aliases_of)
        if refused:
            return Response(f"{refused}\n", status=403, mimetype="text/plain")
    return Authorization("bearer", {"username": username})


def _params() -> dict:
    """The request's parameters as MLflow's handlers read them: the JSON body, else the query."""
    body = request.get_json(silent=True) if request.method in ("POST", "PATCH", "DELETE") else None
    return body if isinstance(body, dict) else dict(request.args)


def _aliases_of(name: str) -> dict[str, str]:
    """A registered model's aliases, read from MLflow's own store in the request's workspace."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.handlers import _get_model_registry_store
    from mlflow.server.workspace_helpers import WORKSPACE_HEADER_NAME, resolve_workspace_for_request_if_enabled
    from mlflow.utils import workspace_context

    # Not resolved yet at authentication: resolved here as MLflow's own middleware does (it sets it again).
    workspace = resolve_workspace_for_request_if_enabled(request.path, request.headers.get(WORKSPACE_HEADER_NAME))
    workspace_context.set_server_request_workspace(workspace.name if workspace else None)
    try:
        model = _get_model_registry_store().get_registered_model(name)
    except MlflowException:
        return {}  # no such model: MLflow's own handler answers that
    return {alias.alias: str(alias.version) for alias in model.aliases} if isinstance(model.aliases, list) \
        else {k: str(v) for k, v in (model.aliases or {}).items()}


def _presented_token() -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE) or None


def _is_browser_page() -> bool:
    return request.method == "GET" and "text/html" in request.headers.get("Accept", "")


def _unauthenticated(message: str) -> Response:
    # Bearer, not Basic: a browser must not offer a password dialog, there is no password.
    return Response(f"{message}\n", status=401, headers={"WWW-Authenticate": 'Bearer realm="mlflow"'},
                    mimetype="text/plain")


def _ui_login() -> Response:
    """POST /mlplatform-login from the hub's login page (the token in the form body, never in a URL or a
    log): the token becomes an HttpOnly SameSite=Lax cookie, then a redirect to `next` (a local path)."""
    token = request.form.get("token", "")
    try:
        claims = verify(token)
    except jwt.InvalidTokenError as e:
        return _unauthenticated(f"invalid MLflow token: {e}")
    target = request.form.get("next") or "/"
    if not target.startswith("/") or target.startswith("//"):
        target = "/"
    response = redirect(target, 303)
    response.set_cookie(COOKIE, token, max_age=max(0, int(claims["exp"] - time.time())), httponly=True,
                        samesite="Lax", secure=settings()["cookie_secure"], path="/")
    return response


def _ensure_user(store, username: str) -> None:
    if username in _known_users:
        return
    if not store.has_user(username):
        try:  # a password nobody knows: these users log in with hub tokens only
            store.create_user(username, secrets.token_urlsafe(32), is_admin=False)
        except Exception:  # another thread or worker was faster
            if not store.has_user(username):
                raise
    _known_users.add(username)


def _sync_roles(store, username: str, roles: list[str], issued_at: float) -> None:
    """Make the user's managed role assignments those of the token: one query, writes only on a change."""
    with _lock:
        if issued_at < _applied_at.get(username, 0):
            return  # older than a token already applied: two servers' tokens must not flip it back and forth
        _applied_at[username] = issued_at
    user = store.get_user(username)
    wanted = set()
    for qualified in roles:
        workspace, _, name = qualified.partition("/")
        if name in MANAGED_ROLES:
            try:
                wanted.add(store.get_role_by_name(workspace, name).id)
            except Exception:
                log.warning("MLflow role %s does not exist yet (its team has no workspace yet)", qualified)
    current = {role.id for role in store.list_user_roles(user.id) if role.name in MANAGED_ROLES}
    for role_id in wanted - current:
        try:
            store.assign_role_to_user(user.id, role_id)
        except Exception:  # assigned concurrently
            log.debug("role %s already assigned to %s", role_id, username)
    for role_id in current - wanted:
        try:
            store.unassign_role_from_user(user.id, role_id)
        except Exception:
            log.debug("role %s already unassigned from %s", role_id, username)
