"""JupyterHub configuration of the local platform (started by `mlplatform-local up`).

Everything platform-specific comes from the catalog; this file only wires the local processes
together. `mlplatform-local` sets the variables read here; they are documented in README.md.
"""

import os
from pathlib import Path

from mlplatform_core.catalog import load_catalog
from mlplatform_core.contract import variable

from hub_config.catalog import configured_catalog_path
from hub_config.culling import configure_culling
from hub_config.hub import configure_hub
from hub_config.platform_service import configure_platform_service
from hub_config.rollout_gpu_handler import grant_rollout_gpus

c = get_config()  # noqa: F821 (provided by JupyterHub)

data_dir = Path(os.environ["MLPLATFORM_DATA_DIR"])
catalog = load_catalog(configured_catalog_path())
hub_port = int(os.environ.get("MLPLATFORM_HUB_PORT", "18000"))
hub_url = f"http://127.0.0.1:{hub_port}"

configure_hub(c, catalog)
configure_culling(c, catalog)  # the idle culler, a hub-managed service (hub_config/culling.py)
# The hub's secrets go into its config and out of its environment, which the proxy (and anything else
# the hub starts) would inherit.
c.KeycloakOAuthenticator.client_secret = os.environ.pop("OAUTH_CLIENT_SECRET", "")
c.CryptKeeper.keys = [key for key in os.environ.pop("JUPYTERHUB_CRYPT_KEY", "").split(";") if key]
service_s3_access_key, _, service_s3_secret_key = os.environ.pop("MLPLATFORM_SERVICE_S3_KEYS", "").partition(":")
service_gitops_credentials = os.environ.pop("MLPLATFORM_SERVICE_GITOPS_CREDENTIALS", "")
c.KeycloakOAuthenticator.oauth_callback_url = f"{hub_url}/hub/oauth_callback"
# The key the hub signs MLflow tokens with (a path: the key stays in its 0600 file).
c.MlflowAccess.signing_key_file = os.environ.get("MLPLATFORM_MLFLOW_SIGNING_KEY", "")
# Access tokens are short-lived (Keycloak's default is 5 minutes): check and refresh them often.
c.KeycloakOAuthenticator.auth_refresh_age = 60

c.JupyterHub.spawner_class = "mlplatform-local"
c.LocalPlatformSpawner.catalog_file = catalog.path
c.LocalPlatformSpawner.data_dir = str(data_dir)
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 90

c.JupyterHub.bind_url = hub_url
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{int(os.environ.get('MLPLATFORM_HUB_API_PORT', hub_port + 81))}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{int(os.environ.get('MLPLATFORM_PROXY_API_PORT', hub_port + 1))}"
c.ConfigurableHTTPProxy.command = [os.environ.get("MLPLATFORM_CHP", "configurable-http-proxy")]
c.ConfigurableHTTPProxy.pid_file = str(data_dir / "proxy.pid")
c.JupyterHub.db_url = f"sqlite:///{data_dir / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(data_dir / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(data_dir / "jupyterhub.pid")
c.JupyterHub.cleanup_servers = True
c.JupyterHub.cleanup_proxy = True

# The platform service (promotion, audit log, usage, budgets), started by the hub. Its database, which the hub's
# governance shares: $MLPLATFORM_SERVICE_DATABASE_URL when set (PostgreSQL: postgresql+psycopg://...), else SQLite in
# the data directory. Taken out of the hub's environment (it may hold a password): the service and the hub's config
# get it.
service_port = int(os.environ.get("MLPLATFORM_SERVICE_PORT", hub_port + 82))
service_database_url = (os.environ.pop("MLPLATFORM_SERVICE_DATABASE_URL", "")
                        or f"sqlite:///{data_dir / 'platform.sqlite'}")
configure_platform_service(c, catalog, url=f"http://127.0.0.1:{service_port}", environment={
    # The ports and paths the catalog refers to (managed services get only what is listed here).
    **{name: value for name, value in os.environ.items() if name.startswith("MLPLATFORM_")},
    variable("catalog_path"): catalog.path,
    "MLPLATFORM_MLFLOW_SIGNING_KEY": c.MlflowAccess.signing_key_file,
    "MLPLATFORM_SERVICE_DATABASE_URL": service_database_url,
    # Its S3 identity (reads the teams' inference logs: hub_config/local/seaweedfs.py)
    **({"AWS_ACCESS_KEY_ID": service_s3_access_key, "AWS_SECRET_ACCESS_KEY": service_s3_secret_key}
       if service_s3_access_key else {}),
    # Its credential for the GitOps repository (mlplatform_service.gitops.Credentials.from_environ): notebooks never
    # get it.
    **({"MLPLATFORM_GITOPS_CREDENTIALS": service_gitops_credentials} if service_gitops_credentials else {}),
})
# It reserves the GPUs of rollout candidates in the hub's local pool with its own token.
grant_rollout_gpus(c)
