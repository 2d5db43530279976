"""The settings file of MLflow's auth app (MLFLOW_AUTH_CONFIG_PATH) with the platform's authorization function.

Written by the local platform at each start and by `mlplatform render` (mlflow/auth.ini) for a
tracking server in a cluster. Nobody logs in with a password: server.py authenticates every request
with the hub's tokens, and the admin (the platform identity) acts with platform tokens only.
"""

from __future__ import annotations

from .tokens import PLATFORM_IDENTITY

TEMPLATE = """\
[mlflow]
# Nothing without a grant: teams get their rights through the roles the hub provisions.
default_permission = NO_PERMISSIONS
database_uri = {database_uri}
admin_username = {admin}
authorization_function = hub_config.mlflow_access.server:authenticate
grant_default_workspace_access = false

[mlplatform]
# The hub's public key: MLflow verifies the tokens the hub signs with it.
public_key_file = {public_key_file}
# Where a browser without a token is sent to log in (the hub's MLflow login page).
ui_login_url = {hub_url}/hub/mlplatform/mlflow-login
cookie_secure = {cookie_secure}
# Aliases only the platform identity moves (the catalog's promotion.alias and protected_aliases).
protected_aliases = {protected_aliases}
"""


WORKLOADS = """\
# Workloads in the cluster (RayService and Spark pods) with service-account tokens projected for MLflow.
kubernetes_issuer = {issuer}
kubernetes_jwks_url = {jwks_url}

[mlplatform.namespaces]
{namespaces}

[mlplatform.service_accounts]
{service_accounts}
"""


def auth_ini(*, database_uri: str, public_key_file: str, hub_url: str, protected_aliases: list[str],
             issuer: str | None = None,
             jwks_url: str | None = None, namespaces: dict[str, str] | None = None,
             service_accounts: dict[str, str] | None = None) -> str:
    """The ini; with `issuer`, service-account tokens of `service_accounts` (name = role) in `namespaces`
    (namespace = team) are accepted too."""
    text = TEMPLATE.format(database_uri=database_uri, admin=PLATFORM_IDENTITY, public_key_file=public_key_file,
                           hub_url=hub_url.rstrip("/"), cookie_secure=str(hub_url.startswith("https:")).lower(),
                           protected_aliases=" ".join(protected_aliases))
    if issuer:
        text += WORKLOADS.format(issuer=issuer, jwks_url=jwks_url,
                                 namespaces="\n".join(f"{k} = {v}" for k, v in (namespaces or {}).items()),
                                 service_accounts="\n".join(f"{k} = {v}" for k, v in (service_accounts or {}).items()))
    return text
