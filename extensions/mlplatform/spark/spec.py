"""The `SparkApplication` (sparkoperator.k8s.io/v1beta2) of a job: a pure function, dicts in, dict out.

No API calls: the Kubernetes backend creates what `spark_application()` returns in the user's team
namespace, and the Spark operator runs it.
"""

from __future__ import annotations

import re
from importlib import metadata
from typing import Any
from urllib.parse import urlparse

from mlplatform_core.contract import FORWARDED_TO_SPARK, PlatformEnvironment
from mlplatform_core.mlflow_token import MOUNT as MLFLOW_TOKEN_MOUNT
from mlplatform_core.mlflow_token import VOLUME as MLFLOW_TOKEN_VOLUME
from mlplatform_core.mlflow_token import environment as mlflow_token_environment
from mlplatform_core.names import (
    APP_ID_LABEL,
    APP_NAME_LABEL,
    DNS_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MAX_DNS_LABEL,
    TEAM_LABEL,
    USER_LABEL,
    annotation_key,
    label_value,
)

from .job import MAX_NAME_LENGTH, SparkJob, SparkJobError

API_VERSION = "sparkoperator.k8s.io/v1beta2"
KIND = "SparkApplication"
# The Spark images are built with the same bundle (and so the same pyspark) as the notebook images.
SPARK_VERSION = metadata.version("pyspark")

# Set for every job on every backend: the job can tell which application it is.
APP_ID_VARIABLE = "MLPLATFORM_SPARK_APP_ID"

MAX_APP_ID_LENGTH = MAX_DNS_LABEL - len("-ui-svc")  # the operator names the UI service `<app id>-ui-svc`
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def labels(app_id: str, job: SparkJob, *, user: str, team: str) -> dict[str, str]:
    """Labels of the resource and of its driver and executor pods."""
    return {
        MANAGED_BY_LABEL: MANAGED_BY,
        APP_ID_LABEL: app_id,
        APP_NAME_LABEL: job.name,
        TEAM_LABEL: team,
        USER_LABEL: label_value(user),
    }


def spark_conf(job: SparkJob, environment: PlatformEnvironment) -> dict[str, str]:
    """The platform's Spark properties, replaced key by key by the job's `conf`.

    With an S3 endpoint in the contract, `s3a://` paths go to it (path-style, as MinIO and SeaweedFS
    need); credentials come from the pods' service account (web identity), never from here."""
    conf = {}
    if environment.s3_endpoint:
        conf["spark.hadoop.fs.s3a.endpoint"] = environment.s3_endpoint
        conf["spark.hadoop.fs.s3a.path.style.access"] = "true"
    return dict(sorted({**conf, **job.conf}.items()))


def _check(field: str, value: Any, ok: bool, allowed: str) -> None:
    if not ok:
        raise SparkJobError(field, value, allowed)


def spark_application(job: SparkJob, *, app_id: str, namespace: str, image: str, user: str, team: str,
                      service_account: str, environment: PlatformEnvironment | None = None,
                      spark_version: str = SPARK_VERSION, mlflow_token: bool = False) -> dict[str, Any]:
    """The SparkApplication that runs `job` as `app_id` in `namespace` (the user's team namespace).

    `job.main_file` must be a URI the driver pod can read: the Kubernetes backend uploads the notebook's
    file to the team's S3 prefix and passes `dataclasses.replace(job, main_file="s3a://...")`.
    `environment` is the notebook's environment contract; its FORWARDED_TO_SPARK variables are handed
    to the driver and executors (not the paths of the notebook's files, nor its credentials URL, which
    needs the notebook's token: the pods get S3 access from their service account). `service_account` runs the driver (it may create executors
    and gets the pods' S3 access). Bad values raise SparkJobError."""
    _check("app_id", app_id, isinstance(app_id, str) and len(app_id) <= MAX_APP_ID_LENGTH
           and bool(DNS_LABEL.fullmatch(app_id)),
           f"is not a valid application id; it is a DNS label of at most {MAX_APP_ID_LENGTH} characters "
           f"(the name, at most {MAX_NAME_LENGTH}, then '-' and 8 hex digits)")
    _check("namespace", namespace, isinstance(namespace, str) and len(namespace) <= MAX_DNS_LABEL
           and bool(DNS_LABEL.fullmatch(namespace)), "is not a namespace name; it is a DNS label")
    _check("image", image, isinstance(image, str) and bool(image.strip()) and not any(c.isspace() for c in image),
           "is not an image reference; e.g. 'registry.example.org/mlplatform/spark:4.3.0'")
    _check("service_account", service_account, isinstance(service_account, str) and len(service_account) <= 253
           and bool(DNS_SUBDOMAIN.fullmatch(service_account)), "is not a service account name; it is a DNS subdomain")
    _check("team", team, isinstance(team, str) and len(team) <= MAX_DNS_LABEL and bool(DNS_LABEL.fullmatch(team)),
           "is not a team name; teams are DNS labels (see the catalog)")
    _check("user", user, isinstance(user, str) and bool(label_value(user)), "is not a username")
    scheme = urlparse(job.main_file).scheme
    _check("main_file", job.main_file, len(scheme) > 1 and scheme != "file",
           "is not a URI the driver pod can read; use s3a://bucket/key.py (the notebook's file uploaded to "
           "S3), local:///path/in/the/image.py or https://...")

    pod_labels = labels(app_id, job, user=user, team=team)
    forwarded = environment.variables(FORWARDED_TO_SPARK) if environment else {}
    if mlflow_token:  # MLflow's access control, with a token projected for it (mlplatform_core/mlflow_token.py)
        forwarded = {**forwarded, **mlflow_token_environment()}
    env = [{"name": name, "value": value} for name, value in forwarded.items()]
    env.append({"name": APP_ID_VARIABLE, "value": app_id})
    spec: dict[str, Any] = {
        "type": "Python",
        "pythonVersion": "3",
        "mode": "cluster",
        "sparkVersion": spark_version,
        "image": image,
        "mainApplicationFile": job.main_file,
    }
    if job.arguments:
        spec["arguments"] = list(job.arguments)
    conf = spark_conf(job, environment or PlatformEnvironment())
    if conf:
        spec["sparkConf"] = conf
    spec.update({
        "restartPolicy": {"type": "Never"},
        "driver": {"cores": job.driver_cores, "memory": job.driver_memory, "serviceAccount": service_account,
                   "labels": dict(pod_labels), "env": [dict(e) for e in env]},
        "executor": {"instances": job.executors, "cores": job.executor_cores, "memory": job.executor_memory,
                     "labels": dict(pod_labels), "env": [dict(e) for e in env]},
    })
    if mlflow_token:
        spec["volumes"] = [dict(MLFLOW_TOKEN_VOLUME)]
        for pod in (spec["driver"], spec["executor"]):
            pod["volumeMounts"] = [dict(MLFLOW_TOKEN_MOUNT)]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": app_id, "namespace": namespace, "labels": pod_labels,
                     "annotations": {annotation_key("user"): user}},
        "spec": spec,
    }
