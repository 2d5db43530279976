"""The environment contract: what the hub tells every notebook server about its user and platform.

The hub is the only place that knows the user's identity, team and profile. It hands the notebook
these variables, and the notebook side (`mlplatform.environment`) reads only these. MLflow and the
AWS SDKs read their own standard variables, so `mlflow.start_run()` and `boto3.client("s3")` need
nothing configured by hand. The README lists every variable.
"""

from __future__ import annotations

from .catalog import Catalog
from .profiles import Selection
from .s3_policy import prefixes

CONTRACT_VERSION = "1"


def notebook_environment(catalog: Catalog, username: str, selection: Selection, *, hub_api_url: str,
                         aws_config_file: str, server_name: str = "") -> dict[str, str]:
    """The contract for one server. `aws_config_file` is where the notebook finds mlplatform's AWS config
    (the `credential_process`); `hub_api_url` is the hub API as the server reaches it."""
    team = catalog.teams[selection.team]
    s3 = catalog.storage.s3
    user_prefix, team_prefix = prefixes(catalog, username, selection.team)
    return {
        "MLPLATFORM_CONTRACT_VERSION": CONTRACT_VERSION,
        "MLPLATFORM_USER": username,
        "MLPLATFORM_TEAM": selection.team,
        "MLPLATFORM_NAMESPACE": team.namespace,
        "MLPLATFORM_BACKEND": catalog.platform.backend,
        # The notebook reads platform policy (promotion gates, ...) from the catalog, endpoints from here.
        "MLPLATFORM_CATALOG": catalog.path,
        "MLPLATFORM_PROFILE": selection.profile,
        "MLPLATFORM_GPU_TYPE": selection.gpu_type or "",
        "MLPLATFORM_GPU_COUNT": str(selection.gpu_count),
        "MLFLOW_TRACKING_URI": catalog.mlflow.tracking_uri,
        "MLFLOW_EXPERIMENT_NAME": selection.team,  # created by the hub (hub_config/mlflow_experiments.py)
        "MLFLOW_S3_ENDPOINT_URL": s3.endpoint_url,  # MLflow's own name for it
        "MLPLATFORM_S3_ENDPOINT": s3.endpoint_url,
        "MLPLATFORM_S3_BUCKET": s3.bucket,
        "MLPLATFORM_S3_PREFIX": user_prefix,
        "MLPLATFORM_S3_TEAM_PREFIX": team_prefix,
        "AWS_ENDPOINT_URL_S3": s3.endpoint_url,
        "AWS_REGION": s3.region,
        "AWS_DEFAULT_REGION": s3.region,
        # No keys: the SDKs run the credential process, which asks the hub's broker with the server's token.
        "AWS_CONFIG_FILE": aws_config_file,
        "AWS_SDK_LOAD_CONFIG": "1",
        "MLPLATFORM_CREDENTIALS_URL": f"{hub_api_url.rstrip('/')}/mlplatform/s3-credentials/{username}"
                                      + (f"?server={server_name}" if server_name else ""),
    }
