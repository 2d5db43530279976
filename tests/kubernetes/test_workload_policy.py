"""RayServices and SparkApplications only as the platform's builders make them (hub_config/render/admission.py).

The notebook's account may create both in its team's namespace, with kubectl as well as through the
platform's API. In the fake API server with the rendered cluster, what the builders write (through the
real backends' spec functions, with the catalog's images and accounts) is admitted; another service
account, another image or Spark's own Kubernetes settings are refused by the API server. Dry runs.
"""

from __future__ import annotations

import copy

import pytest

from mlplatform.serving.spec import ray_service, serving_request
from mlplatform.spark.job import SparkJob
from mlplatform.spark.spec import spark_application
from mlplatform_core.names import GPU_TYPE_LABEL

from ..support.authz import authorization_matrix
from ..support.rendered_cluster import CATALOG
from .test_rbac_matrix import call, clients

A = CATALOG.teams["team-vision"].namespace
K8S = CATALOG.kubernetes
NOTEBOOK = f"{A}/{K8S.service_account}"


@pytest.fixture(scope="module")
def authz(request):
    yield from authorization_matrix(request)


def built_ray_service(gpus: float = 0) -> dict:
    request = serving_request(name="iris", model_uri="models:/iris/1", gpus=gpus)
    return ray_service(request, namespace=A, model_version="1", service_account=K8S.serving_service_account,
                       image=K8S.images.serving_gpu if gpus else K8S.images.serving, mlflow_token=True,
                       labels={GPU_TYPE_LABEL: "t4"} if gpus else None)  # as the backend labels GPU replicas


def built_spark_application() -> dict:
    job = SparkJob(name="etl", main_file="s3a://bucket/job.py")
    return spark_application(job, app_id="etl-1a2b3c4d", namespace=A, user="alice", team="team-vision",
                             image=K8S.images.spark, service_account=K8S.spark_service_account, mlflow_token=True)


def changed(obj: dict, change) -> dict:
    obj = copy.deepcopy(obj)
    change(obj)
    return obj


def head(obj: dict) -> dict:
    return obj["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]


def worker(obj: dict) -> dict:
    return obj["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]


RAY = ("ray.io", "v1", "rayservices")
SPARK = ("sparkoperator.k8s.io", "v1beta2", "sparkapplications")
CASES = {
    "RayService as built (CPU)": (RAY, built_ray_service(), None),
    "RayService as built (GPU)": (RAY, built_ray_service(gpus=1), None),
    "RayService, workers as the notebook account": (
        RAY, changed(built_ray_service(), lambda o: worker(o).update(serviceAccountName=K8S.service_account)),
        f"a RayService's pods run as {K8S.serving_service_account}"),
    "RayService, head without a service account": (
        RAY, changed(built_ray_service(), lambda o: head(o).pop("serviceAccountName")),
        f"a RayService's pods run as {K8S.serving_service_account}"),
    "RayService, another image": (
        RAY, changed(built_ray_service(), lambda o: head(o)["containers"][0].update(image="evil/miner:1")),
        "a RayService's containers run the platform's serving images"),
    "SparkApplication as built": (SPARK, built_spark_application(), None),
    "SparkApplication, driver as the notebook account": (
        SPARK, changed(built_spark_application(), lambda o: o["spec"]["driver"].update(serviceAccount=K8S.service_account)),
        f"a SparkApplication's driver runs as {K8S.spark_service_account}"),
    "SparkApplication, another executor image": (
        SPARK, changed(built_spark_application(), lambda o: o["spec"]["executor"].update(image="evil/miner:1")),
        f"a SparkApplication runs the platform's Spark image {K8S.images.spark}"),
    "SparkApplication, a pod template in sparkConf": (
        SPARK, changed(built_spark_application(), lambda o: o["spec"].setdefault("sparkConf", {}).update(
            {"spark.kubernetes.driver.podTemplateFile": "s3a://bucket/privileged.yaml"})),
        "spark.kubernetes.* settings (pod templates, service accounts, images, volumes) are the platform's"),
}


def test_workloads_only_as_the_platforms_builders_make_them(rendered_cluster, authz):
    _, custom, _ = clients(rendered_cluster, NOTEBOOK)
    for case, ((group, version, plural), obj, refusal) in CASES.items():
        response = call(lambda: custom.create_namespaced_custom_object(group, version, A, plural, obj, dry_run="All"),
                        ())
        authz.check("notebook SA, team A", f"create {case}", response, allowed=refusal is None)
        if refusal:
            assert (f"is forbidden: ValidatingAdmissionPolicy 'mlplatform-workloads' with binding "
                    f"'mlplatform-workloads' denied request: {refusal}") in response.json()["message"]
