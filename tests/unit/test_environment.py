"""The environment contract, written by the hub and read by the notebook package."""

import pytest
from mlplatform.environment import NotOnPlatformError, PlatformEnvironment
from mlplatform_core.catalog import load_catalog
from mlplatform_core.contract import FORWARDED_TO_SERVING, FORWARDED_TO_SPARK, VARIABLES

from hub_config.catalog import DEFAULT_CATALOG
from hub_config.environment import notebook_environment
from hub_config.profiles import Selection

CATALOG = load_catalog(DEFAULT_CATALOG, environ={"MLPLATFORM_S3_PORT": "19300"})


def test_contract_for_a_gpu_server():
    env = notebook_environment(CATALOG, "alice", Selection("team-vision", "gpu-a100", "a100", 2),
                               hub_api_url="http://127.0.0.1:18081/hub/api", aws_config_file="/opt/aws_config",
                               service_url="http://127.0.0.1:18082/services/mlplatform")
    assert env == {
        "MLPLATFORM_CONTRACT_VERSION": "1",
        "MLPLATFORM_USER": "alice",
        "MLPLATFORM_TEAM": "team-vision",
        "MLPLATFORM_NAMESPACE": "team-vision",
        "MLPLATFORM_BACKEND": "local",
        "MLPLATFORM_CATALOG": CATALOG.path,
        "MLPLATFORM_PROFILE": "gpu-a100",
        "MLPLATFORM_GPU_TYPE": "a100",
        "MLPLATFORM_GPU_COUNT": "2",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:18500",
        "MLFLOW_EXPERIMENT_NAME": "team-vision",
        # MLflow's access control: the team's workspace, tokens from the hub through MLflow's auth plugin.
        "MLFLOW_WORKSPACE": "team-vision",
        "MLFLOW_TRACKING_AUTH": "mlplatform",
        "MLPLATFORM_MLFLOW_TOKEN_URL": "http://127.0.0.1:18081/hub/api/mlplatform/mlflow-token/alice",
        "MLFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:19300",
        "MLPLATFORM_S3_ENDPOINT": "http://127.0.0.1:19300",
        "MLPLATFORM_S3_BUCKET": "platform",
        "MLPLATFORM_S3_PREFIX": "users/alice/",
        "MLPLATFORM_S3_TEAM_PREFIX": "teams/team-vision/",
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:19300",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/opt/aws_config",
        "AWS_SDK_LOAD_CONFIG": "1",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "3",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
        "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER": "false",
        "MLPLATFORM_CREDENTIALS_URL": "http://127.0.0.1:18081/hub/api/mlplatform/s3-credentials/alice",
        # The platform service: promotion (and budgets, usage, audit) with the server's token.
        "MLPLATFORM_SERVICE_URL": "http://127.0.0.1:18082/services/mlplatform",
    }


def test_notebook_side_reads_what_the_hub_wrote():
    env = notebook_environment(CATALOG, "bob", Selection("team-nlp", "cpu"), hub_api_url="http://hub/hub/api/",
                               aws_config_file="/opt/aws_config", server_name="gpu")
    assert env["MLPLATFORM_CREDENTIALS_URL"] == "http://hub/hub/api/mlplatform/s3-credentials/bob?server=gpu"
    platform = PlatformEnvironment.from_environ(env)
    assert (platform.user, platform.team, platform.gpu_type, platform.gpu_count) == ("bob", "team-nlp", None, 0)
    assert platform.s3_uri() == "s3://platform/users/bob/"
    assert platform.s3_uri("data/train.csv", team=True) == "s3://platform/teams/team-nlp/data/train.csv"
    assert platform.mlflow_tracking_uri == "http://127.0.0.1:18500"


def test_outside_the_platform_says_so():
    with pytest.raises(NotOnPlatformError, match="MLPLATFORM_USER, MLPLATFORM_TEAM, MLPLATFORM_BACKEND not set"):
        PlatformEnvironment.from_environ({})


def test_what_the_hub_writes_reads_back_as_the_same_environment():
    written = PlatformEnvironment.for_server(CATALOG, user="alice", team="team-vision", profile="gpu-a100",
                                             gpu_type="a100", gpu_count=2, aws_config_file="/opt/aws_config",
                                             hub_api_url="http://hub/hub/api",
                                             catalog_path="/etc/mlplatform/platform.yaml")
    assert PlatformEnvironment.from_environ(written.to_environ()) == written
    assert written.catalog_path == "/etc/mlplatform/platform.yaml"  # the server's path, not the hub's


def test_a_garbled_gpu_count_says_which_variable():
    with pytest.raises(NotOnPlatformError, match=r"^MLPLATFORM_GPU_COUNT='two' is not a whole number$"):
        PlatformEnvironment.from_environ({"MLPLATFORM_USER": "a", "MLPLATFORM_TEAM": "t", "MLPLATFORM_BACKEND": "local",
                                          "MLPLATFORM_GPU_COUNT": "two"})


def test_forwarded_subsets_never_carry_notebook_paths_or_the_credentials_url():
    forwarded = set(FORWARDED_TO_SERVING) | set(FORWARDED_TO_SPARK)
    assert not forwarded & {"catalog_path", "aws_config_file", "credentials_url"}
    assert set(FORWARDED_TO_SERVING) <= set(VARIABLES) and set(FORWARDED_TO_SPARK) <= set(VARIABLES)
