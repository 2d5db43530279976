"""Serving on Kubernetes against the fake API server: the RayService made, KubeRay's status followed
(the test plays the operator), redeploys as patches, and no RayService left behind by a failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlplatform import serving
from mlplatform.serving import spec
from mlplatform.serving.errors import (
    BackendUnavailable,
    DeploymentNotFound,
    InvalidServingRequest,
    ServingConflict,
    ServingError,
)
from mlplatform.serving.kubernetes import KubernetesServing, KubernetesServingConfig

from mlplatform_core.catalog import load_catalog
from hub_config.catalog import DEFAULT_CATALOG
from hub_config.spawners.kube_quota import quota_snapshot

from ..support.catalogs import direct_mode_catalog, direct_mode_data
from ..support.fake_kube import ApiError

NS, TEAM, USER = "team-vision", "team-vision", "alice"
ENV = {"MLPLATFORM_TEAM": TEAM, "MLPLATFORM_USER": USER, "MLFLOW_TRACKING_URI": "http://mlflow.mlplatform:5000"}
NOW = "2026-01-01T00:00:00Z"


@pytest.fixture
def backend(fake_kube, kubeconfig):
    fake_kube.namespace(NS)
    return KubernetesServing(KubernetesServingConfig(namespace=NS, team=TEAM, user=USER))


def request(**kwargs):
    return spec.serving_request(**{"name": "iris", "model_uri": "models:/iris@champion", "replicas": 2, **kwargs})


def deploy(backend, version="3", **kwargs):
    return backend.deploy(request(**kwargs), model_version=version, env=ENV, owner={"user": USER, "team": TEAM})


def ready(status: str, reason: str) -> dict:
    return {"type": "Ready", "status": status, "reason": reason, "message": "", "lastTransitionTime": NOW}


def upgrading(status: str, reason: str) -> dict:
    return {"type": "UpgradeInProgress", "status": status, "reason": reason, "message": "", "lastTransitionTime": NOW}


def app(status: str, message: str = "", deployment_message: str = "") -> dict:
    return {"iris": {"status": status, "message": message,
                     "serveDeploymentStatuses": {"Model": {"status": "HEALTHY", "message": deployment_message}}}}


def operator_running(fake_kube, generation: int = 1, workers: int = 2):
    """KubeRay's status once Serve runs every application of the RayService's serveConfigV2 (in a rollout the
    champion's and the candidate's)."""
    serve = yaml.safe_load(fake_kube.get("rayservices", "iris", NS)["spec"]["serveConfigV2"])
    statuses = {a["name"]: {"status": "RUNNING", "message": "", "serveDeploymentStatuses": {
        d["name"]: {"status": "HEALTHY", "message": ""} for d in a["deployments"]}} for a in serve["applications"]}
    fake_kube.patch_status("rayservices", "iris", {
        "observedGeneration": generation, "serviceStatus": "Running", "numServeEndpoints": 1,
        "conditions": [ready("True", "NonZeroServeEndpoints"), upgrading("False", "NoPendingCluster")],
        "activeServiceStatus": {"rayClusterName": "iris-x7k2q", "applicationStatuses": statuses,
                                "rayClusterStatus": {"readyWorkerReplicas": workers}},
        "pendingServiceStatus": None}, namespace=NS)


def test_backend_is_chosen_from_the_environment_and_the_catalog(kubeconfig):
    chosen = serving.backend({"MLPLATFORM_BACKEND": "kubernetes", "MLPLATFORM_NAMESPACE": NS, "MLPLATFORM_TEAM": TEAM,
                              "MLPLATFORM_USER": USER, "MLPLATFORM_CATALOG": str(direct_mode_catalog()),
                              "MLPLATFORM_GPU_TYPE": "a100"})
    assert isinstance(chosen, KubernetesServing)
    assert chosen.config == KubernetesServingConfig(
        namespace=NS, team=TEAM, user=USER, image="mlplatform/ray:0.1.0", gpu_image="mlplatform/ray-gpu:0.1.0",
        node_selector=(("nvidia.com/gpu.product", "NVIDIA-A100-SXM4-80GB"),),
        tolerations=('{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}',),
        service_account="mlplatform-serving", gpu_type="a100", team_gpu_types=("a100", "t4"),
        gateway="mlplatform-gateway-team-vision.jupyterhub.svc.cluster.local:8000")
    # Callers reach the team's endpoints through its rollout gateway (hub_config/render/gateway.py).
    assert chosen.url("iris") == "http://mlplatform-gateway-team-vision.jupyterhub.svc.cluster.local:8000/iris"
    with pytest.raises(BackendUnavailable, match="^MLPLATFORM_NAMESPACE, MLPLATFORM_USER not set: serving on Kuber"):
        serving.backend({"MLPLATFORM_BACKEND": "kubernetes", "MLPLATFORM_TEAM": TEAM})


def test_deploy_creates_a_valid_rayservice_and_status_follows_kuberay(backend, fake_kube):
    submitted = deploy(backend)
    stored = fake_kube.get("rayservices", "iris", NS)  # the fake validated it against the CRD (strict)
    expected = spec.ray_service(request(), namespace=NS, model_version="3", env=ENV,
                                labels={"mlplatform.io/team": TEAM, "mlplatform.io/user": USER})
    assert stored["spec"] == expected["spec"]
    assert stored["metadata"]["labels"] == expected["metadata"]["labels"]
    annotations = stored["metadata"]["annotations"]
    assert annotations["mlplatform.io/model-version"] == "3" and annotations["mlplatform.io/user"] == USER
    assert json.loads(annotations["mlplatform.io/request"]) == request().to_dict()
    url = "http://iris-serve-svc.team-vision.svc.cluster.local:8000/iris"
    assert submitted == {**submitted, "name": "iris", "backend": "kubernetes", "state": "submitted", "url": url,
                         "predict_url": f"{url}/predict", "model_uri": "models:/iris@champion",
                         "model_version": "3", "owner": {"user": USER, "team": TEAM},
                         "replicas": {"running": 0, "target": 2}}
    assert backend.url("iris") == url and backend.names() == ["iris"]

    fake_kube.patch_status("rayservices", "iris", {
        "observedGeneration": 1, "conditions": [ready("False", "Initializing"), upgrading("False", "NoActiveCluster")],
        "pendingServiceStatus": {"rayClusterName": "iris-x7k2q"}}, namespace=NS)
    assert backend.status("iris")["state"] == "starting"

    fake_kube.patch_status("rayservices", "iris", {"pendingServiceStatus": {
        "applicationStatuses": app("DEPLOYING", deployment_message="Deploying 2 replicas")}}, namespace=NS)
    assert (backend.status("iris")["state"], backend.status("iris")["message"]) == ("deploying", "Deploying 2 replicas")

    operator_running(fake_kube)
    running = backend.status("iris")
    assert (running["state"], running["message"], running["replicas"]) == ("running", "", {"running": 2, "target": 2})


def test_redeploy_patches_only_the_serve_config(backend, fake_kube):
    deploy(backend, version="3")
    operator_running(fake_kube)
    before = fake_kube.get("rayservices", "iris", NS)
    fake_kube.clear_requests()

    deploy(backend, version="4")
    after = fake_kube.get("rayservices", "iris", NS)
    assert [(r.verb, r.resource) for r in fake_kube.requests] == [("get", "rayservices"), ("patch", "rayservices")]
    assert after["metadata"]["uid"] == before["metadata"]["uid"] and after["metadata"]["generation"] == 2
    assert after["spec"]["rayClusterConfig"] == before["spec"]["rayClusterConfig"]  # no new cluster
    served = yaml.safe_load(after["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert served["model_uri"] == "models:/iris/4"
    assert after["metadata"]["annotations"]["mlplatform.io/previous-version"] == "3"

    status = backend.status("iris")
    assert status["state"] == "deploying" and status["model_version"] == "4"
    assert status["message"] == "KubeRay has not taken the new version yet (version 3 keeps answering)"
    operator_running(fake_kube, generation=2)
    assert backend.status("iris")["state"] == "running"


def test_bigger_replicas_get_a_new_cluster_while_the_old_one_answers(backend, fake_kube):
    deploy(backend)
    operator_running(fake_kube)
    deploy(backend, cpus=2)
    stored = fake_kube.get("rayservices", "iris", NS)
    assert stored["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0][
        "resources"]["limits"]["cpu"] == "2"
    fake_kube.patch_status("rayservices", "iris", {
        "observedGeneration": 2, "conditions": [ready("True", "NonZeroServeEndpoints"),
                                                upgrading("True", "BothActivePendingClustersExist")],
        "pendingServiceStatus": {"rayClusterName": "iris-p9w3m"}}, namespace=NS)
    status = backend.status("iris")
    assert (status["state"], status["message"]) == (
        "deploying", "a new Ray cluster is starting for the new version (version 3 keeps answering)")

    fake_kube.patch_status("rayservices", "iris", {"pendingServiceStatus": {"applicationStatuses": app(
        "DEPLOY_FAILED", deployment_message="Traceback ...\nImportError: no module named sklearn")}}, namespace=NS)
    status = backend.status("iris")
    assert status["state"] == "failed"
    assert status["message"] == "ImportError: no module named sklearn (version 3 keeps answering)"
    assert status["detail"].startswith("Traceback")


def test_a_quota_refusal_of_the_operators_pods_shows_in_the_status(fake_kube, kubeconfig):
    fake_kube.namespace(NS)
    backend = KubernetesServing(KubernetesServingConfig(namespace=NS, team=TEAM, user=USER, gpu_type="a100"))
    fake_kube.seed({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "team-gpus", "namespace": NS},
                    "spec": {"hard": {"requests.nvidia.com/gpu": "1"}}})
    deploy(backend, gpus=1)
    fake_kube.patch_status("rayservices", "iris", {
        "observedGeneration": 1, "conditions": [ready("False", "Initializing")],
        "pendingServiceStatus": {"rayClusterName": "iris-x7k2q"}}, namespace=NS)
    # KubeRay creates the worker pods from the RayService's template; the second GPU is refused.
    worker = fake_kube.get("rayservices", "iris", NS)["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]
    for index in range(2):
        pod = {"apiVersion": "v1", "kind": "Pod", "spec": worker["spec"],
               "metadata": {"name": f"iris-x7k2q-replicas-{index}", "namespace": NS, "labels": worker["metadata"]["labels"]}}
        try:
            fake_kube.seed(pod)
        except ApiError as refused:
            assert refused.code == 403
            fake_kube.seed({"apiVersion": "v1", "kind": "Event", "type": "Warning", "reason": "FailedToCreateWorkerPod",
                            "message": refused.message, "metadata": {"name": "iris-x7k2q.1", "namespace": NS},
                            "involvedObject": {"kind": "RayCluster", "name": "iris-x7k2q", "namespace": NS}})
    status = backend.status("iris")
    assert status["state"] == "starting"
    assert status["message"] == (
        'the Ray cluster is starting; RayCluster/iris-x7k2q: FailedToCreateWorkerPod: pods "iris-x7k2q-replicas-1" is '
        "forbidden: exceeded quota: team-gpus, requested: requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=1, "
        "limited: requests.nvidia.com/gpu=1")


def test_delete_leaves_nothing_behind(backend, fake_kube):
    deploy(backend)
    assert backend.delete("iris") == {"name": "iris", "backend": "kubernetes", "state": "deleted"}
    assert fake_kube.list("rayservices", NS) == [] and backend.names() == []
    with pytest.raises(DeploymentNotFound, match="no serving application 'iris' in namespace team-vision"):
        backend.status("iris")
    with pytest.raises(DeploymentNotFound):
        backend.delete("iris")


def test_a_create_that_failed_after_the_write_leaves_no_rayservice(backend, fake_kube):
    fake_kube.fail("create", "rayservices", 500, "etcdserver: request timed out", after=True)
    with pytest.raises(BackendUnavailable, match="etcdserver: request timed out") as caught:
        deploy(backend)
    assert caught.value.status_code == 503
    assert fake_kube.list("rayservices", NS) == []
    assert [r.verb for r in fake_kube.requests if r.resource == "rayservices"] == ["get", "create", "get", "delete"]


def test_refusals_of_the_api_server_say_why_and_never_show_the_token(backend, fake_kube):
    message = ('rayservices.ray.io is forbidden: User "system:serviceaccount:team-vision:mlplatform-notebook" '
               'cannot create resource "rayservices" in API group "ray.io" in the namespace "team-vision"')
    fake_kube.fail("create", "rayservices", 403, message)
    with pytest.raises(ServingError) as caught:
        deploy(backend)
    assert caught.value.status_code == 403
    assert str(caught.value) == f"creating RayService iris in namespace team-vision failed (403 Forbidden): {message}"
    assert fake_kube.token not in str(caught.value)
    assert fake_kube.list("rayservices", NS) == []


def test_names_too_long_for_kuberay_are_refused_before_any_call(backend, fake_kube):
    fake_kube.clear_requests()
    with pytest.raises(InvalidServingRequest) as caught:
        deploy(backend, name="a" * 48)
    why = f"{'a' * 48!r} has 48 characters; allowed on Kubernetes: at most 47 (KubeRay adds suffixes)"
    assert caught.value.problems == [("name", why)]
    assert fake_kube.count() == 0


def test_a_rayservice_not_made_by_the_platform_is_left_alone(backend, fake_kube):
    foreign = spec.ray_service(request(), namespace=NS, model_version="1")
    foreign["metadata"]["labels"] = {"app": "someone-elses"}
    fake_kube.seed(foreign)
    with pytest.raises(ServingConflict, match="a RayService 'iris' not made by mlplatform exists"):
        deploy(backend)
    with pytest.raises(DeploymentNotFound):
        backend.delete("iris")
    assert backend.names() == []
    assert fake_kube.get("rayservices", "iris", NS)["metadata"]["labels"] == {"app": "someone-elses"}


def test_a_redeploy_racing_another_change_gets_409_not_an_overwrite(backend, fake_kube):
    from mlplatform import kube
    from mlplatform.serving.kubernetes import _changes

    deploy(backend, version="3")
    seen = fake_kube.get("rayservices", "iris", NS)
    fake_kube.patch("rayservices", "iris", {"metadata": {"labels": {"touched": "yes"}}}, namespace=NS)
    body = spec.ray_service(request(), namespace=NS, model_version="4")
    with pytest.raises(kube.KubeError) as caught:
        backend.services.patch("iris", _changes(seen, body))
    assert caught.value.status == 409 and caught.value.reason == "Conflict"


def test_gpu_replicas_count_against_the_teams_per_type_quota(fake_kube, kubeconfig):
    """Worker pods made from the RayService carry the GPU type label the hub's quota cache counts."""
    fake_kube.namespace(NS)
    backend = KubernetesServing(KubernetesServingConfig(namespace=NS, team=TEAM, user=USER, gpu_type="a100"))
    deploy(backend, gpus=1)
    worker = fake_kube.get("rayservices", "iris", NS)["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]
    assert worker["metadata"]["labels"]["mlplatform.io/gpu-type"] == "a100"
    for index in range(2):  # KubeRay's part: the worker pods from the template
        fake_kube.seed({"apiVersion": "v1", "kind": "Pod", "spec": worker["spec"], "metadata": {
            "name": f"iris-x7k2q-replicas-{index}", "namespace": NS, "labels": worker["metadata"]["labels"]}})
    snapshot = quota_snapshot(load_catalog(DEFAULT_CATALOG), [], fake_kube.list("pods", NS), {})
    assert snapshot.used == {TEAM: {"a100": 2}}

    backend.delete("iris", wait=False)
    deploy(backend, "4", replicas=1)  # no GPUs: no GPU type label
    labels = fake_kube.get("rayservices", "iris", NS)["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]
    assert "mlplatform.io/gpu-type" not in labels["metadata"]["labels"]


def environment_backend(catalog_path, **env) -> KubernetesServing:
    return serving.backend({"MLPLATFORM_BACKEND": "kubernetes", "MLPLATFORM_NAMESPACE": NS, "MLPLATFORM_TEAM": TEAM,
                            "MLPLATFORM_USER": USER, "MLPLATFORM_CATALOG": str(catalog_path), **env})


def test_gpu_replicas_without_a_gpu_type_are_refused_before_any_call(fake_kube, kubeconfig):
    """A CPU server of a team with several GPU types cannot tell which type its GPU replicas would be:
    unlabelled GPUs would slip past the per-type quota, so the deploy is refused, naming the types."""
    fake_kube.namespace(NS)
    backend = environment_backend(direct_mode_catalog())  # no MLPLATFORM_GPU_TYPE: a server without GPUs
    assert (backend.config.gpu_type, backend.config.team_gpu_types) == (None, ("a100", "t4"))
    fake_kube.clear_requests()
    with pytest.raises(InvalidServingRequest) as caught:
        deploy(backend, gpus=1)
    assert caught.value.status_code == 400
    assert caught.value.problems == [("gpus", (
        "1 GPU(s) per replica need a GPU type: this server has no GPU and team team-vision has several (a100, t4); "
        "deploy from a server started with a GPU profile of the type to serve on (its replicas get that type), "
        "or deploy with gpus=0"))]
    assert fake_kube.count() == 0 and fake_kube.list("rayservices", NS) == []

    deploy(backend, replicas=1)  # without GPUs it deploys
    labels = fake_kube.get("rayservices", "iris", NS)["metadata"]["labels"]
    assert "mlplatform.io/gpu-type" not in labels

    # Without any GPU type for the team (or any catalog), the same refusal says so.
    lone = KubernetesServing(KubernetesServingConfig(namespace=NS, team=TEAM, user=USER))
    with pytest.raises(InvalidServingRequest) as caught:
        deploy(lone, gpus=0.5)
    assert caught.value.problems == [("gpus", (
        "0.5 GPU(s) per replica need a GPU type, and none is known for team team-vision (the platform catalog gives "
        "it no per-type GPU quota: teams.team-vision.gpu_quota.per_type); deploy with gpus=0, or ask the platform "
        "team for a GPU quota"))]


def test_a_team_with_one_gpu_type_serves_on_it_from_a_cpu_server(fake_kube, kubeconfig, tmp_path):
    data = direct_mode_data()
    data["teams"][TEAM]["gpu_quota"] = {"total": 2, "per_type": {"t4": 2, "a100": 0}}
    catalog = tmp_path / "platform.yaml"
    catalog.write_text(yaml.safe_dump(data))
    fake_kube.namespace(NS)
    backend = environment_backend(catalog)
    assert (backend.config.gpu_type, backend.config.team_gpu_types) == ("t4", ("t4",))
    deploy(backend, gpus=1)
    worker = fake_kube.get("rayservices", "iris", NS)["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]
    assert worker["metadata"]["labels"]["mlplatform.io/gpu-type"] == "t4"
    assert worker["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "Tesla-T4"}


def test_replicas_reach_mlflow_with_a_token_projected_for_it(fake_kube, kubeconfig):
    """With MLflow's access control and the cluster's issuer in the catalog, every Ray pod mounts a
    service-account token for the audience `mlflow`, which MLflow's `mlplatform` auth plugin reads; the
    serving account itself mounts no API token (tests/integration/test_mlflow_workloads.py: MLflow
    accepts such tokens for the team's models only)."""
    fake_kube.namespace(NS)
    example = Path(__file__).resolve().parents[2] / "helm-values" / "platform.yaml"
    backend = environment_backend(example)
    assert backend.config.mlflow_token
    deploy(backend, replicas=1)
    stored = fake_kube.get("rayservices", "iris", NS)  # the fake validated it against the CRD (strict)
    cluster = stored["spec"]["rayClusterConfig"]
    for template in [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]:
        pod = template["spec"]
        assert pod["volumes"] == [{"name": "mlflow-token", "projected": {"sources": [
            {"serviceAccountToken": {"audience": "mlflow", "expirationSeconds": 3600, "path": "token"}}]}}]
        [container] = pod["containers"]
        assert container["volumeMounts"] == [{"name": "mlflow-token", "readOnly": True,
                                              "mountPath": "/var/run/secrets/mlflow"}]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert (env["MLFLOW_TRACKING_AUTH"], env["MLPLATFORM_MLFLOW_TOKEN_FILE"]) == (
            "mlplatform", "/var/run/secrets/mlflow/token")
    # An MLflow without access control (the local catalog names no issuer): nothing mounted.
    assert not environment_backend(direct_mode_catalog()).config.mlflow_token
