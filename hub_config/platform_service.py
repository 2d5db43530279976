"""The hub's side of the platform service (mlplatform_service): started by the hub as a managed service.

`configure_platform_service(c, catalog, url=..., environment=...)` adds the service to the hub's
config: its command (`mlplatform-service`) and environment, the role its own token gets (read users
and their groups: who calls and in which teams), and `access:services!service=mlplatform` for every
user (their browser) and every server's token (the notebook's API calls). `c.PlatformService.url` is
where servers reach it (MLPLATFORM_SERVICE_URL in the environment contract).
"""

from __future__ import annotations

from mlplatform_core.catalog import Catalog
from mlplatform_core.contract import CONSTANTS
from traitlets import Unicode
from traitlets.config import Configurable

SERVICE = "mlplatform"
ACCESS_SCOPE = f"access:services!service={SERVICE}"
BIND_URL = "MLPLATFORM_SERVICE_BIND_URL"  # read by mlplatform_service.app; default: JUPYTERHUB_SERVICE_URL
SERVICE_SCOPES = ["list:users", "read:users", "read:users:groups", "read:servers"]


class PlatformService(Configurable):
    url = Unicode("", config=True, help="""
        URL of the platform service as notebook servers reach it (their MLPLATFORM_SERVICE_URL). Empty:
        servers get no service URL, and promotion from a notebook says the platform has no service.
        """)


def configure_platform_service(c, catalog: Catalog, *, url: str, environment: dict[str, str],
                               url_for_servers: str | None = None, bind_url: str | None = None) -> None:
    """Run the service at `url` (where the hub starts it and its proxy route points) with `environment`
    (MLPLATFORM_CATALOG, MLPLATFORM_MLFLOW_SIGNING_KEY, optionally MLPLATFORM_SERVICE_DATABASE_URL, and
    every variable the catalog refers to: a managed service gets only what is listed, not the hub's
    environment). `bind_url`: where it listens when `url` names no address of this machine (on
    Kubernetes, the hub Service's name: it binds all interfaces of the hub pod); else it listens on `url`."""
    services = [s for s in c.JupyterHub.get("services", []) if s.get("name") != SERVICE]
    c.JupyterHub.services = [*services, {
        "name": SERVICE,
        "display": True,
        "info": {"description": f"{catalog.platform.name}: promotion, audit log, usage and budgets"},
        "url": url,
        "command": ["mlplatform-service"],
        # MLflow's client bounded as in notebooks: a stopped MLflow is an error in seconds, not minutes.
        "environment": {**CONSTANTS, **environment, **({BIND_URL: bind_url} if bind_url else {})},
        "oauth_no_confirm": True,
    }]
    roles = [r for r in c.JupyterHub.get("load_roles", []) if r.get("name") != "mlplatform-service"]
    c.JupyterHub.load_roles = [*roles, {"name": "mlplatform-service", "description": "the platform service",
                                        "scopes": SERVICE_SCOPES, "services": [SERVICE]}]
    c.JupyterHub.extra_user_scopes = {*c.JupyterHub.get("extra_user_scopes", set()), ACCESS_SCOPE}
    # The hub writes to the same database (budgets at spawn, usage of servers, its audit records).
    if environment.get("MLPLATFORM_SERVICE_DATABASE_URL"):
        c.Governance.database_url = environment["MLPLATFORM_SERVICE_DATABASE_URL"]
    # The service serves under its prefix also when reached directly (not through the proxy).
    c.PlatformService.url = f"{(url_for_servers or url).rstrip('/')}/services/{SERVICE}"
