"""The `SparkApplication` (sparkoperator.k8s.io/v1beta2) of a job: a pure function, dicts in, dict out.

No API calls: the Kubernetes backend creates what `spark_application()` returns in the user's team
namespace, and the Spark operator runs it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import metadata
from typing import Any
from urllib.parse import urlparse

from ..names import label_value
from .job import DNS_LABEL, MAX_NAME_LENGTH, SparkJob, SparkJobError

API_VERSION = "sparkoperator.k8s.io/v1beta2"
KIND = "SparkApplication"
# The Spark images are built with the same bundle (and so the same pyspark) as the notebook images.
SPARK_VERSION = metadata.version("pyspark")

# Variables of the environment contract (hub_config/environment.py) that the driver and executors get.
# Left out on purpose: the GPU variables and CUDA_VISIBLE_DEVICES (the notebook's devices, not the
# job's), the profile's CPU/memory limits, MLPLATFORM_CATALOG and AWS_CONFIG_FILE (paths inside the
# notebook), MLPLATFORM_CREDENTIALS_URL (needs the notebook server's own token): the pods get their S3
# access from their service account instead.
FORWARDED_ENVIRONMENT = (
    "MLPLATFORM_CONTRACT_VERSION", "MLPLATFORM_USER", "MLPLATFORM_TEAM", "MLPLATFORM_NAMESPACE",
    "MLPLATFORM_BACKEND", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_S3_ENDPOINT_URL",
    "MLPLATFORM_S3_ENDPOINT", "MLPLATFORM_S3_BUCKET", "MLPLATFORM_S3_PREFIX", "MLPLATFORM_S3_TEAM_PREFIX",
    "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
)
# Set for every job on every backend: the job can tell which application it is.
APP_ID_VARIABLE = "MLPLATFORM_SPARK_APP_ID"

MAX_APP_ID_LENGTH = 63 - len("-ui-svc")  # the operator names the UI service `<app id>-ui-svc`
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def labels(app_id: str, job: SparkJob, *, user: str, team: str) -> dict[str, str]:
    """Labels of the resource and of its driver and executor pods."""
    return {
        "app.kubernetes.io/managed-by": "mlplatform",
        "mlplatform.io/app-id": app_id,
        "mlplatform.io/app-name": job.name,
        "mlplatform.io/team": team,
        "mlplatform.io/user": label_value(user),
    }


def spark_conf(job: SparkJob, environment: Mapping[str, str]) -> dict[str, str]:
    """The platform's Spark properties, replaced key by key by the job's `conf`.

    With an S3 endpoint in the contract, `s3a://` paths go to it (path-style, as MinIO and SeaweedFS
    need); credentials come from the pods' service account (web identity), never from here."""
    conf = {}
    if environment.get("MLPLATFORM_S3_ENDPOINT"):
        conf["spark.hadoop.fs.s3a.endpoint"] = environment["MLPLATFORM_S3_ENDPOINT"]
        conf["spark.hadoop.fs.s3a.path.style.access"] = "true"
    return dict(sorted({**conf, **job.conf}.items()))


def _check(field: str, value: Any, ok: bool, allowed: str) -> None:
    if not ok:
        raise SparkJobError(field, value, allowed)


def spark_application(job: SparkJob, *, app_id: str, namespace: str, image: str, user: str, team: str,
                      service_account: str, environment: Mapping[str, str] | None = None,
                      spark_version: str = SPARK_VERSION) -> dict[str, Any]:
    """The SparkApplication that runs `job` as `app_id` in `namespace` (the user's team namespace).

    `job.main_file` must be a URI the driver pod can read: the Kubernetes backend uploads the notebook's
    file to the team's S3 prefix and passes `dataclasses.replace(job, main_file="s3a://...")`.
    `environment` is the notebook's environment; the contract's variables in FORWARDED_ENVIRONMENT are
    handed to the driver and executors. `service_account` runs the driver (it may create executors
    and gets the pods' S3 access). Bad values raise SparkJobError."""
    environment = {} if environment is None else environment
    _check("app_id", app_id, isinstance(app_id, str) and len(app_id) <= MAX_APP_ID_LENGTH
           and bool(DNS_LABEL.match(app_id)),
           f"is not a valid application id; it is a DNS label of at most {MAX_APP_ID_LENGTH} characters "
           f"(the name, at most {MAX_NAME_LENGTH}, then '-' and 8 hex digits)")
    _check("namespace", namespace, isinstance(namespace, str) and len(namespace) <= 63
           and bool(DNS_LABEL.match(namespace)), "is not a namespace name; it is a DNS label")
    _check("image", image, isinstance(image, str) and bool(image.strip()) and not any(c.isspace() for c in image),
           "is not an image reference; e.g. 'registry.example.org/mlplatform/spark:4.3.0'")
    _check("service_account", service_account, isinstance(service_account, str) and len(service_account) <= 253
           and bool(DNS_SUBDOMAIN.match(service_account)), "is not a service account name; it is a DNS subdomain")
    _check("team", team, isinstance(team, str) and len(team) <= 63 and bool(DNS_LABEL.match(team)),
           "is not a team name; teams are DNS labels (see the catalog)")
    _check("user", user, isinstance(user, str) and bool(label_value(user)), "is not a username")
    scheme = urlparse(job.main_file).scheme
    _check("main_file", job.main_file, len(scheme) > 1 and scheme != "file",
           "is not a URI the driver pod can read; use s3a://bucket/key.py (the notebook's file uploaded to "
           "S3), local:///path/in/the/image.py or https://...")

    pod_labels = labels(app_id, job, user=user, team=team)
    env = [{"name": name, "value": environment[name]} for name in FORWARDED_ENVIRONMENT if environment.get(name)]
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
    conf = spark_conf(job, environment)
    if conf:
        spec["sparkConf"] = conf
    spec.update({
        "restartPolicy": {"type": "Never"},
        "driver": {"cores": job.driver_cores, "memory": job.driver_memory, "serviceAccount": service_account,
                   "labels": dict(pod_labels), "env": [dict(e) for e in env]},
        "executor": {"instances": job.executors, "cores": job.executor_cores, "memory": job.executor_memory,
                     "labels": dict(pod_labels), "env": [dict(e) for e in env]},
    })
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": app_id, "namespace": namespace, "labels": pod_labels,
                     "annotations": {"mlplatform.io/user": user}},
        "spec": spec,
    }
