"""The environment contract: what the hub tells every notebook server about its user and platform.

The hub is the only place that knows the user's identity, team and profile. It builds a
`PlatformEnvironment` and hands the server `to_environ()`; the notebook side reads it back with
`PlatformEnvironment.from_environ()` and nothing else. MLflow and the AWS SDKs read their own
standard variables (written here too), so `mlflow.start_run()` and `boto3.client("s3")` need nothing
configured by hand. Each variable is named once, on its field; the README lists them all.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .catalog import Catalog

CONTRACT_VERSION = "1"

# The AWS SDKs read AWS_CONFIG_FILE's profile settings. MLflow's client retries for about four minutes
# (7 tries, 120 s each) by default: bounded here so a call to a stopped MLflow fails in about 2 s, to a
# hung one in about 11 s (3 tries of 3 s, backoff 0 then ~2 s), and a Retry-After never stretches that.
CONSTANTS = {"AWS_SDK_LOAD_CONFIG": "1", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3",
             "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
             "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER": "false"}
REQUIRED = ("user", "team", "backend")

# What goes on to processes the notebook starts elsewhere. Ray replicas and Spark pods get the
# identity and endpoints, never the path of files only the notebook has (catalog, AWS config) nor
# the credentials URL (it needs the server's own token).
FORWARDED_TO_SERVING = ("version", "user", "team", "namespace", "backend", "mlflow_tracking_uri",
                        "mlflow_workspace", "s3_endpoint", "s3_region", "s3_bucket", "s3_team_prefix")
FORWARDED_TO_SPARK = FORWARDED_TO_SERVING + ("mlflow_experiment", "s3_prefix")
# On one machine, processes the notebook starts may ask the hub for credentials too (with the
# server's token, which they get apart from these): S3 through the AWS credential process, MLflow
# through the mlplatform auth plugin.
HUB_CREDENTIALS = ("aws_config_file", "credentials_url", "mlflow_tracking_auth", "mlflow_token_url")
MLFLOW_AUTH_PLUGIN = "mlplatform"  # MLFLOW_TRACKING_AUTH: the notebook package's request auth provider


def variable(field: str) -> str:
    """The name of a field's variable (the one read), for code that sets it outside a PlatformEnvironment."""
    return VARIABLES[field][0]


class NotOnPlatformError(RuntimeError):
    """Raised outside a server started by the platform's hub."""


def _variables(*names: str, default=""):
    """A field of the contract and its variables: the first is the one read, all are written."""
    return dataclasses.field(default=default, metadata={"variables": names})


@dataclass(frozen=True)
class PlatformEnvironment:
    """One notebook server's view of the platform. Frozen and hashable: backends are cached per environment."""

    version: str = _variables("MLPLATFORM_CONTRACT_VERSION", default=CONTRACT_VERSION)
    user: str = _variables("MLPLATFORM_USER")
    team: str = _variables("MLPLATFORM_TEAM")
    backend: str = _variables("MLPLATFORM_BACKEND", default="local")
    namespace: str = _variables("MLPLATFORM_NAMESPACE")
    # The notebook reads platform policy (promotion gates, images, quotas) from the catalog, endpoints from here.
    catalog_path: str = _variables("MLPLATFORM_CATALOG")
    profile: str = _variables("MLPLATFORM_PROFILE")
    gpu_type: str | None = _variables("MLPLATFORM_GPU_TYPE", default=None)
    gpu_count: int = _variables("MLPLATFORM_GPU_COUNT", default=0)
    mlflow_tracking_uri: str = _variables("MLFLOW_TRACKING_URI")
    mlflow_experiment: str = _variables("MLFLOW_EXPERIMENT_NAME")  # the team's; the hub creates it before the start
    # With MLflow's access control (catalog `mlflow.access.mode: hub-tokens`): the team's workspace, and
    # short-lived MLflow tokens from the hub, asked with the server's token by MLflow's auth plugin.
    mlflow_workspace: str = _variables("MLFLOW_WORKSPACE")
    mlflow_tracking_auth: str = _variables("MLFLOW_TRACKING_AUTH")
    mlflow_token_url: str = _variables("MLPLATFORM_MLFLOW_TOKEN_URL")
    s3_endpoint: str = _variables("MLPLATFORM_S3_ENDPOINT", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
    s3_region: str = _variables("AWS_REGION", "AWS_DEFAULT_REGION")
    s3_bucket: str = _variables("MLPLATFORM_S3_BUCKET")
    s3_prefix: str = _variables("MLPLATFORM_S3_PREFIX")
    s3_team_prefix: str = _variables("MLPLATFORM_S3_TEAM_PREFIX")
    # No keys: the SDKs run the config's credential process, which asks the hub's broker with the server's token.
    aws_config_file: str = _variables("AWS_CONFIG_FILE")
    credentials_url: str = _variables("MLPLATFORM_CREDENTIALS_URL")
    # The platform service (promotion, audit, budgets), called with the server's token.
    service_url: str = _variables("MLPLATFORM_SERVICE_URL")

    # --- the hub writes -------------------------------------------------------------------------
    @classmethod
    def for_server(cls, catalog: Catalog, *, user: str, team: str, profile: str, gpu_type: str | None,
                   gpu_count: int, aws_config_file: str, hub_api_url: str, server_name: str = "",
                   catalog_path: str | None = None, service_url: str = "") -> PlatformEnvironment:
        """The contract of one server of `user` for `team`. `catalog_path` and `aws_config_file` are
        where the server finds those files (on Kubernetes: its mount, not the hub's path)."""
        s3 = catalog.storage.s3
        user_prefix, team_prefix = s3.prefixes(user, team)
        query = f"?server={server_name}" if server_name else ""
        hub_api = f"{hub_api_url.rstrip('/')}/mlplatform"
        mlflow_access = {}
        if catalog.mlflow.access.mode == "hub-tokens":
            mlflow_access = dict(mlflow_workspace=team, mlflow_tracking_auth=MLFLOW_AUTH_PLUGIN,
                                 mlflow_token_url=f"{hub_api}/mlflow-token/{user}{query}")
        return cls(user=user, team=team, namespace=catalog.teams[team].namespace, backend=catalog.platform.backend,
                   catalog_path=catalog_path or catalog.path, profile=profile, gpu_type=gpu_type or None,
                   gpu_count=gpu_count, mlflow_tracking_uri=catalog.mlflow.tracking_uri, mlflow_experiment=team,
                   s3_endpoint=s3.endpoint_url, s3_region=s3.region, s3_bucket=s3.bucket, s3_prefix=user_prefix,
                   s3_team_prefix=team_prefix, aws_config_file=aws_config_file,
                   credentials_url=f"{hub_api}/s3-credentials/{user}{query}", service_url=service_url,
                   **mlflow_access)

    def to_environ(self) -> dict[str, str]:
        """Every variable of the contract (unset ones empty)."""
        return self.variables(VARIABLES, keep_empty=True)

    def variables(self, fields: Iterable[str], *, keep_empty: bool = False) -> dict[str, str]:
        """The variables of `fields` (see FORWARDED_TO_SERVING, ...); unset ones left out unless `keep_empty`."""
        out, wanted = {}, set(fields)
        for field in (f for f in VARIABLES if f in wanted):  # in the contract's order, whatever the caller's
            value = getattr(self, field)
            value = "" if value is None else str(value)
            if value or keep_empty:
                out.update(dict.fromkeys(VARIABLES[field], value))
        if out.get(VARIABLES["aws_config_file"][0]):
            out.update(CONSTANTS)
        return out

    # --- the notebook reads ---------------------------------------------------------------------
    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, *, required: Iterable[str] = REQUIRED
                     ) -> PlatformEnvironment:
        """The contract in `environ` (default: this process's). Raises NotOnPlatformError when a
        `required` variable is missing; with `required=()`, outside the platform, unset fields keep
        their defaults (backend `local`)."""
        env = os.environ if environ is None else environ
        missing = [VARIABLES[f][0] for f in required if not env.get(VARIABLES[f][0])]
        if missing:
            raise NotOnPlatformError(f"{', '.join(missing)} not set: this is not a server started by the "
                                     "mlplatform hub (see the README's environment contract)")
        values = {}
        for field in dataclasses.fields(cls):
            raw = env.get(VARIABLES[field.name][0])
            if not raw:
                continue
            if field.name == "gpu_count":
                try:
                    values[field.name] = int(raw)
                except ValueError:
                    raise NotOnPlatformError(f"{VARIABLES['gpu_count'][0]}={raw!r} is not a whole number") from None
            else:
                values[field.name] = raw
        return cls(**values)

    def missing(self, fields: Iterable[str]) -> list[str]:
        """The variables of `fields` that are not set (for messages naming them)."""
        return [VARIABLES[f][0] for f in fields if getattr(self, f) in (None, "")]

    def catalog(self) -> Catalog:
        """The platform catalog this server was started with (re-read when the file changes)."""
        if not self.catalog_path:
            raise NotOnPlatformError(f"{VARIABLES['catalog_path'][0]} is not set: the platform's catalog is known "
                                     "only in a server started by the mlplatform hub")
        from .catalog import cached_catalog

        return cached_catalog(self.catalog_path)

    @property
    def acting_user(self) -> str:
        """Who acts, for records: the hub user, else (outside the platform) the login name."""
        return self.user or getpass.getuser()

    def s3_uri(self, key: str = "", *, team: bool = False) -> str:
        """`s3://` URI of `key` under the user's own prefix (`team=True`: the team's shared prefix)."""
        return f"s3://{self.s3_bucket}/{self.s3_team_prefix if team else self.s3_prefix}{key}"


# Field of PlatformEnvironment → its variables (the first is the one read, all are written).
VARIABLES: dict[str, tuple[str, ...]] = {f.name: f.metadata["variables"] for f in dataclasses.fields(PlatformEnvironment)}


def current(*, required: Iterable[str] = REQUIRED) -> PlatformEnvironment:
    """The platform environment of this process."""
    return PlatformEnvironment.from_environ(required=required)
