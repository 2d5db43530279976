"""Hub settings derived from the catalog, shared by the local platform and the Helm chart's hub."""

from __future__ import annotations

import asyncio
from pathlib import Path

from jupyterhub import orm
from mlplatform_core.catalog import Catalog

from . import gpu_handler
from .mlflow_access import handlers as mlflow_access
from .platform_service import ACCESS_SCOPE
from .s3_handler import CUSTOM_SCOPES, SCOPE

# Custom scopes of the hub's endpoints for servers: each user holds them for themselves, a server's token for its user.
SERVER_SCOPES = (SCOPE, mlflow_access.SCOPE, gpu_handler.SCOPE)

TEMPLATES = Path(__file__).parent / "templates"


def configure_hub(c, catalog: Catalog) -> None:
    """Point the authenticator at the catalog's realm and allow the catalog's team groups.

    `c` is the hub's traitlets config (`get_config()` in jupyterhub_config.py). Users outside every
    team group are refused at login with a page that says which groups are allowed; holders of the
    admin realm role are admins and always allowed.

    Credential vending has its own scopes (`custom:mlplatform:s3-credentials`,
    `custom:mlplatform:mlflow-token`): every user holds them for themselves (added to the `user` role
    through `extra_user_scopes`; a `user` role redefined in `load_roles` must list them with `!user`
    itself), and a server's token carries them for its own user. JupyterHub's `admin` role does not
    include them.
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
    # Merged into what the chart's config set before hub.extraConfig runs.
    c.JupyterHub.custom_scopes = {**c.JupyterHub.get("custom_scopes", {}), **CUSTOM_SCOPES,
                                  **mlflow_access.CUSTOM_SCOPES, **gpu_handler.CUSTOM_SCOPES}
    c.JupyterHub.extra_user_scopes = {*c.JupyterHub.get("extra_user_scopes", set()),
                                      *(f"{scope}!user" for scope in SERVER_SCOPES)}
    c.Spawner.server_token_scopes = server_token_scopes
    start_spawner_class_with_the_hub()
    warm_up_with_the_hub()


_started: set[asyncio.Task] = set()  # the event loop keeps only weak references to tasks


def start_spawner_class_with_the_hub() -> None:
    """Once the hub runs, let its spawner class start what it watches before any spawner exists
    (`start_with_the_hub(config)`; CatalogKubeSpawner: the quota cache and the usage ledger's reconcile,
    so a restarted hub closes the intervals of workloads that end before anyone opens a spawn page).

    The hub loads its config file inside its event loop: the start is scheduled there and runs once the
    config is complete (`c.JupyterHub.spawner_class` may be set after this call). Outside an event loop
    (`jupyterhub upgrade-db`, a test building a Config) nothing happens; a failed start is a warning in the
    hub's log and the first spawn page tries again."""
    _once_the_hub_runs(_start_spawner_class)


def warm_up_with_the_hub() -> None:
    """Once the hub runs, warm what the first login and spawn page would otherwise make while a user waits
    (hub_config/warm_up.py); scheduled like `start_spawner_class_with_the_hub`, nothing outside a hub."""
    _once_the_hub_runs(_warm_up)


def _once_the_hub_runs(start) -> None:
    """Schedule the coroutine function `start` in the hub's event loop (the config is loaded inside it), kept
    referenced until it ends; nothing outside an event loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return

    def schedule():
        task = asyncio.ensure_future(start())
        _started.add(task)
        task.add_done_callback(_started.discard)

    loop.call_soon(schedule)


async def _warm_up() -> None:
    from jupyterhub.app import JupyterHub

    from .warm_up import warm_up

    if not JupyterHub.initialized():
        return
    app = JupyterHub.instance()
    try:
        done = await warm_up(app)
    except Exception as e:  # never the hub's problem: the first user pays, as without it
        app.log.warning("Warm-up failed: %s: %s", type(e).__name__, e)
    else:
        app.log.info("Warmed up for the first login: %s", ", ".join(done) or "nothing")


async def _start_spawner_class() -> None:
    from jupyterhub.app import JupyterHub

    if not JupyterHub.initialized():
        return  # not a hub's event loop
    app = JupyterHub.instance()
    start = getattr(app.spawner_class, "start_with_the_hub", None)
    if start is None:
        return
    try:
        await start(app.config)
    except Exception as e:
        app.log.warning("%s did not start with the hub (%s: %s); it starts with the first spawn page instead",
                        app.spawner_class.__name__, type(e).__name__, e)
    else:
        app.log.info("%s started with the hub", app.spawner_class.__name__)


def server_token_scopes(spawner) -> list[str]:
    """JupyterHub's default for a server's token (the `server` role's scopes), plus its own user's credentials
    and access to the platform service (which acts as the token's user, and checks the rest itself).

    `!user` becomes `!user=<the server's user>` when the token is made: a server never reads another user's."""
    return [*orm.Role.find(spawner.user.db, "server").scopes, *(f"{scope}!user" for scope in SERVER_SCOPES),
            ACCESS_SCOPE]
