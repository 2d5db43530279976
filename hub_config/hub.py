"""Hub settings derived from the catalog, shared by the local platform and the Helm chart's hub."""

from __future__ import annotations

from pathlib import Path

from mlplatform_core.catalog import Catalog

TEMPLATES = Path(__file__).parent / "templates"


def configure_hub(c, catalog: Catalog) -> None:
    """Point the authenticator at the catalog's realm and allow the catalog's team groups.

    `c` is the hub's traitlets config (`get_config()` in jupyterhub_config.py). Users outside every
    team group are refused at login with a page that says which groups are allowed; holders of the
    admin realm role are admins and always allowed.
    """
    sso = catalog.sso
    groups = catalog.team_groups
    c.JupyterHub.authenticator_class = "keycloak"
    c.KeycloakOAuthenticator.realm_url = sso.realm_url
    c.KeycloakOAuthenticator.client_id = sso.client_id
    c.KeycloakOAuthenticator.admin_role = sso.admin_role
    c.KeycloakOAuthenticator.scope = list(sso.scopes)
    c.KeycloakOAuthenticator.allowed_groups = set(groups)
    c.KeycloakOAuthenticator.custom_403_message = (
        f"Your account is not in any team of {catalog.platform.name}. Allowed groups: {', '.join(groups)}. "
        "Ask a platform administrator to add you to a team group in Keycloak, then log in again."
    )
    c.JupyterHub.template_paths = [str(TEMPLATES)]
    # The S3 credential broker (served by the authenticator's /hub/api/mlplatform/s3-credentials/<user>).
    c.S3CredentialBroker.catalog_file = catalog.path
