"""The SparkApplication builder: whole-dict asserts, and every object validates against the upstream CRD."""

import copy
import dataclasses

import jsonschema
import pytest

from mlplatform.spark import SparkJob, SparkJobError, spark_application
from mlplatform.spark.spec import SPARK_VERSION

from mlplatform_core.contract import PlatformEnvironment
from mlplatform_core.names import label_value

from ..support.crd import errors, validate

# The environment contract of alice's notebook (hub_config/environment.py writes it).
NOTEBOOK_ENV = {
    "MLPLATFORM_CONTRACT_VERSION": "1",
    "MLPLATFORM_USER": "alice",
    "MLPLATFORM_TEAM": "team-vision",
    "MLPLATFORM_NAMESPACE": "team-vision",
    "MLPLATFORM_BACKEND": "kubernetes",
    "MLPLATFORM_CATALOG": "/etc/mlplatform/platform.yaml",
    "MLPLATFORM_PROFILE": "gpu-a100",
    "MLPLATFORM_GPU_TYPE": "a100",
    "MLPLATFORM_GPU_COUNT": "2",
    "CUDA_VISIBLE_DEVICES": "0,1",
    "MLFLOW_TRACKING_URI": "http://mlflow.mlplatform:5000",
    "MLFLOW_EXPERIMENT_NAME": "team-vision",
    "MLFLOW_S3_ENDPOINT_URL": "https://s3.example.org",
    "MLPLATFORM_S3_ENDPOINT": "https://s3.example.org",
    "MLPLATFORM_S3_BUCKET": "platform",
    "MLPLATFORM_S3_PREFIX": "users/alice/",
    "MLPLATFORM_S3_TEAM_PREFIX": "teams/team-vision/",
    "AWS_ENDPOINT_URL_S3": "https://s3.example.org",
    "AWS_REGION": "eu-west-1",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_CONFIG_FILE": "/home/alice/.mlplatform/aws_config",
    "AWS_SDK_LOAD_CONFIG": "1",
    "MLPLATFORM_CREDENTIALS_URL": "http://hub:8081/hub/api/mlplatform/s3-credentials/alice",
    "JUPYTERHUB_API_TOKEN": "secret-token",
    "CPU_LIMIT": "4",
    "MEM_LIMIT": "16G",
}
NOTEBOOK = PlatformEnvironment.from_environ(NOTEBOOK_ENV)

JOB = SparkJob(name="wordcount", main_file="s3a://platform/users/alice/spark/wordcount-3f9a1c2e/wordcount.py",
               arguments=["s3a://platform/teams/team-vision/corpus/", "--top", "20"], executors=3,
               executor_cores=2, executor_memory="4g", driver_memory="2g",
               conf={"spark.sql.shuffle.partitions": "12"})

COMMON = {"app_id": "wordcount-3f9a1c2e", "namespace": "team-vision",
          "image": "registry.example.org/mlplatform/spark:4.3.0", "user": "alice", "team": "team-vision",
          "service_account": "spark-team-vision"}

LABELS = {
    "app.kubernetes.io/managed-by": "mlplatform",
    "mlplatform.io/app-id": "wordcount-3f9a1c2e",
    "mlplatform.io/app-name": "wordcount",
    "mlplatform.io/team": "team-vision",
    "mlplatform.io/user": "alice",
}
ENV = [
    {"name": "MLPLATFORM_CONTRACT_VERSION", "value": "1"},
    {"name": "MLPLATFORM_USER", "value": "alice"},
    {"name": "MLPLATFORM_TEAM", "value": "team-vision"},
    {"name": "MLPLATFORM_BACKEND", "value": "kubernetes"},
    {"name": "MLPLATFORM_NAMESPACE", "value": "team-vision"},
    {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.mlplatform:5000"},
    {"name": "MLFLOW_EXPERIMENT_NAME", "value": "team-vision"},
    {"name": "MLPLATFORM_S3_ENDPOINT", "value": "https://s3.example.org"},
    {"name": "MLFLOW_S3_ENDPOINT_URL", "value": "https://s3.example.org"},
    {"name": "AWS_ENDPOINT_URL_S3", "value": "https://s3.example.org"},
    {"name": "AWS_REGION", "value": "eu-west-1"},
    {"name": "AWS_DEFAULT_REGION", "value": "eu-west-1"},
    {"name": "MLPLATFORM_S3_BUCKET", "value": "platform"},
    {"name": "MLPLATFORM_S3_PREFIX", "value": "users/alice/"},
    {"name": "MLPLATFORM_S3_TEAM_PREFIX", "value": "teams/team-vision/"},
    {"name": "MLPLATFORM_SPARK_APP_ID", "value": "wordcount-3f9a1c2e"},
]


def test_whole_spark_application():
    app = spark_application(JOB, environment=NOTEBOOK, **COMMON)
    assert app == {
        "apiVersion": "sparkoperator.k8s.io/v1beta2",
        "kind": "SparkApplication",
        "metadata": {"name": "wordcount-3f9a1c2e", "namespace": "team-vision", "labels": LABELS,
                     "annotations": {"mlplatform.io/user": "alice"}},
        "spec": {
            "type": "Python",
            "pythonVersion": "3",
            "mode": "cluster",
            "sparkVersion": SPARK_VERSION,
            "image": "registry.example.org/mlplatform/spark:4.3.0",
            "mainApplicationFile": "s3a://platform/users/alice/spark/wordcount-3f9a1c2e/wordcount.py",
            "arguments": ["s3a://platform/teams/team-vision/corpus/", "--top", "20"],
            "sparkConf": {
                "spark.hadoop.fs.s3a.endpoint": "https://s3.example.org",
                "spark.hadoop.fs.s3a.path.style.access": "true",
                "spark.sql.shuffle.partitions": "12",
            },
            "restartPolicy": {"type": "Never"},
            "driver": {"cores": 1, "memory": "2g", "serviceAccount": "spark-team-vision", "labels": LABELS,
                       "env": ENV},
            "executor": {"instances": 3, "cores": 2, "memory": "4g", "labels": LABELS, "env": ENV},
        },
    }
    validate(app)
    assert SPARK_VERSION == "4.3.0"  # the bundle's pyspark, and so the Spark images'


def test_minimal_application_without_environment():
    job = SparkJob(name="pi", main_file="local:///opt/spark/examples/src/main/python/pi.py")
    app = spark_application(job, **{**COMMON, "app_id": "pi-00000000"})
    labels = {**LABELS, "mlplatform.io/app-id": "pi-00000000", "mlplatform.io/app-name": "pi"}
    env = [{"name": "MLPLATFORM_SPARK_APP_ID", "value": "pi-00000000"}]
    assert app["spec"] == {
        "type": "Python", "pythonVersion": "3", "mode": "cluster", "sparkVersion": SPARK_VERSION,
        "image": "registry.example.org/mlplatform/spark:4.3.0",
        "mainApplicationFile": "local:///opt/spark/examples/src/main/python/pi.py",
        "restartPolicy": {"type": "Never"},
        "driver": {"cores": 1, "memory": "1g", "serviceAccount": "spark-team-vision", "labels": labels, "env": env},
        "executor": {"instances": 1, "cores": 1, "memory": "1g", "labels": labels, "env": env},
    }
    validate(app)


def test_no_secret_or_notebook_only_variable_reaches_the_pods():
    app = spark_application(JOB, environment=NOTEBOOK, **COMMON)
    names = {e["name"] for e in app["spec"]["driver"]["env"]}
    for leftover in ("JUPYTERHUB_API_TOKEN", "MLPLATFORM_CREDENTIALS_URL", "AWS_CONFIG_FILE", "CUDA_VISIBLE_DEVICES",
                     "MLPLATFORM_GPU_COUNT", "MLPLATFORM_CATALOG", "CPU_LIMIT"):
        assert leftover not in names
    assert "secret-token" not in repr(app)


def test_the_jobs_conf_replaces_platform_defaults_key_by_key():
    job = dataclasses.replace(JOB, conf={"spark.hadoop.fs.s3a.path.style.access": "false"})
    conf = spark_application(job, environment=NOTEBOOK, **COMMON)["spec"]["sparkConf"]
    assert conf == {"spark.hadoop.fs.s3a.endpoint": "https://s3.example.org",
                    "spark.hadoop.fs.s3a.path.style.access": "false"}


def test_the_builder_does_not_touch_its_inputs():
    first = spark_application(JOB, environment=NOTEBOOK, **COMMON)
    first["spec"]["driver"]["labels"]["x"] = "y"
    assert NOTEBOOK == PlatformEnvironment.from_environ(NOTEBOOK_ENV)
    assert spark_application(JOB, environment=NOTEBOOK, **COMMON)["spec"]["driver"]["labels"] == LABELS
    assert "x" not in first["spec"]["executor"]["labels"]  # driver and executor do not share dicts


def test_unusual_username_is_a_valid_label_and_kept_exactly_in_an_annotation():
    app = spark_application(JOB, **{**COMMON, "user": "alice@example.org"})
    assert app["metadata"]["labels"]["mlplatform.io/user"] == "alice-example.org"
    assert app["metadata"]["annotations"] == {"mlplatform.io/user": "alice@example.org"}
    assert label_value("-x" * 40) == ("x-" * 30) + "x"  # cut to 63, then alphanumeric at both ends
    validate(app)


@pytest.mark.parametrize("overrides,message", [
    ({"app_id": "Wordcount-1"}, "app_id: 'Wordcount-1' is not a valid application id; it is a DNS label of at most "
                                "56 characters (the name, at most 47, then '-' and 8 hex digits)"),
    ({"app_id": "a" * 57}, None),
    ({"namespace": "Team Vision"}, "namespace: 'Team Vision' is not a namespace name; it is a DNS label"),
    ({"image": ""}, "image: '' is not an image reference; e.g. 'registry.example.org/mlplatform/spark:4.3.0'"),
    ({"service_account": "Spark_SA"}, "service_account: 'Spark_SA' is not a service account name; it is a DNS "
                                      "subdomain"),
    ({"team": "Vision"}, "team: 'Vision' is not a team name; teams are DNS labels (see the catalog)"),
    ({"user": "@@"}, "user: '@@' is not a username"),
])
def test_bad_parameters(overrides, message):
    with pytest.raises(SparkJobError) as info:
        spark_application(JOB, **{**COMMON, **overrides})
    [field] = overrides
    assert info.value.field == field
    if message:
        assert str(info.value) == message


@pytest.mark.parametrize("main_file", ["/home/alice/wordcount.py", "wordcount.py", "file:///home/alice/wc.py"])
def test_main_file_must_be_reachable_from_the_driver_pod(main_file):
    with pytest.raises(SparkJobError) as info:
        spark_application(dataclasses.replace(JOB, main_file=main_file), **COMMON)
    assert str(info.value) == (f"main_file: {main_file!r} is not a URI the driver pod can read; use "
                               "s3a://bucket/key.py (the notebook's file uploaded to S3), "
                               "local:///path/in/the/image.py or https://...")


def test_a_broken_application_is_rejected_by_the_crd():
    app = spark_application(JOB, environment=NOTEBOOK, **COMMON)
    misspelled = copy.deepcopy(app)
    misspelled["spec"]["executor"]["instance"] = misspelled["spec"]["executor"].pop("instances")
    with pytest.raises(jsonschema.ValidationError):
        validate(misspelled)
    assert errors(misspelled) == ["spec.executor: Additional properties are not allowed ('instance' was unexpected)"]
    zero = copy.deepcopy(app)
    zero["spec"]["executor"]["instances"] = 0
    assert errors(zero) == ["spec.executor.instances: 0 is less than the minimum of 1"]
    numeric_conf = copy.deepcopy(app)
    numeric_conf["spec"]["sparkConf"]["spark.sql.shuffle.partitions"] = 12
    assert errors(numeric_conf) == ["spec.sparkConf.spark.sql.shuffle.partitions: 12 is not of type 'string'"]
