"""Budgets and the audit of deploy and submit on Kubernetes, enforced by the API server's admission webhook.

The rendered cluster in the fake API server (its RBAC, admission policies and the rendered
ValidatingWebhookConfiguration), the platform service's webhook as the hub pod runs it
(tests/support/workload_webhook.py: it puts its own CA in, under the rendered RBAC), and the notebook's
real backends with a token bound to alice's notebook pod, as a pod's projected service-account token is.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import kubernetes
import pytest
from mlplatform.serving import spec
from mlplatform.serving.errors import ServingConflict, ServingError
from mlplatform.serving.kubernetes import KubernetesServing, KubernetesServingConfig
from mlplatform.spark.job import SparkJob
from mlplatform.spark.kubernetes import KubernetesSparkBackend, KubernetesSparkConfig
from mlplatform_core.contract import PlatformEnvironment
from mlplatform_core.names import GPU_TYPE_LABEL, USER_LABEL

from hub_config.render.workload_webhook import WEBHOOK_CONFIGURATION

from ..conftest import ARTIFACTS
from ..support.authz import authorization_matrix
from ..support.openapi import promised_server_errors
from ..support.fake_kube import FakeKube
from ..support.rendered_cluster import CATALOG, chart_objects, load_rendered_cluster
from ..support.workload_webhook import workload_webhook

TEAM = "team-vision"
NS = CATALOG.teams[TEAM].namespace
K8S = CATALOG.kubernetes
POD = "jupyter-alice"
ENV = {"MLPLATFORM_TEAM": TEAM, "MLPLATFORM_USER": "alice"}


@pytest.fixture(scope="module")
def charts():
    return chart_objects(CATALOG)


@pytest.fixture(scope="module")
def authz(request):
    yield from authorization_matrix(request)


@pytest.fixture
def cluster(charts, tmp_path, governance_database):
    """The rendered cluster with alice's notebook pod, and the service's webhook answering for it."""
    with FakeKube() as fake:
        load_rendered_cluster(fake, CATALOG, charts)
        fake.seed({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": POD, "namespace": NS, "annotations": {"hub.jupyter.org/username": "alice"},
            "labels": {"component": "singleuser-server"}},
            "spec": {"serviceAccountName": K8S.service_account,
                     "containers": [{"name": "notebook", "image": "registry.example.org/mlplatform/notebook:0.1.0",
                                     "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}})
        with workload_webhook(fake, CATALOG, governance_database, tmp_path) as stores:
            yield fake, stores


def notebook_client(fake: FakeKube, tmp_path, pod: str = POD):
    """An API client with the notebook service account's token bound to `pod`."""
    token = fake.token_for(service_account=f"{NS}/{K8S.service_account}", pod=pod)
    path = fake.write_kubeconfig(tmp_path / f"kubeconfig-{pod}", namespace=NS, token=token)
    return kubernetes.config.new_client_from_config(config_file=str(path))


def serving(fake, tmp_path) -> KubernetesServing:
    config = KubernetesServingConfig(namespace=NS, team=TEAM, user="alice", image=K8S.images.serving,
                                     gpu_image=K8S.images.serving_gpu, service_account=K8S.serving_service_account,
                                     gpu_type="t4", team_gpu_types=("t4",), mlflow_token=True)
    return KubernetesServing(config, api_client=notebook_client(fake, tmp_path))


def deploy(backend: KubernetesServing, name: str = "iris", **kwargs):
    request = spec.serving_request(**{"name": name, "model_uri": f"models:/{name}/1", "replicas": 1, **kwargs})
    return backend.deploy(request, model_version="1", env=ENV, owner={"user": "alice", "team": TEAM})


def use_up_budget_but(stores, gpu_hours_left: float):
    """Charge team-vision's month with a finished allocation leaving `gpu_hours_left` of its budget."""
    now = datetime.now(UTC)
    budget = CATALOG.teams[TEAM].budget.gpu_hours
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    hours = budget - gpu_hours_left
    gpus = 100  # a big allocation over a short time, well inside this month
    start = max(start, now - timedelta(hours=hours / gpus) - timedelta(minutes=1))
    stores.ledger.open("server:bob/", kind="server", team=TEAM, user="bob", gpu_type="t4", gpus=gpus,
                       at=start)
    stores.ledger.close("server:bob/", at=start + timedelta(hours=hours / gpus))


def records(stores, **filters) -> list[dict]:
    return stores.audit.query(team=TEAM, **filters)


def test_a_deploy_is_admitted_charged_and_audited_as_the_notebooks_user(cluster, tmp_path):
    fake, stores = cluster
    backend = serving(fake, tmp_path)
    deploy(backend, gpus=1, replicas=2)
    # The worker group may surge to twice the replicas while a new version rolls out (spec.ray_service).
    status = stores.budgets.status(TEAM)
    assert status.running == 1 and status.held_gpu_hours == 4 * CATALOG.platform_service.budget_hold_hours
    [deployed] = records(stores, action="deploy")
    assert (deployed["actor"], deployed["target"], deployed["outcome"]) == ("alice", f"model:{TEAM}/iris", "admitted")
    assert deployed["details"] | {} == {"namespace": NS, "name": "iris", "via": "kubernetes", "gpus": 4,
                                        "gpu_type": "t4"}

    deploy(backend, gpus=1, replicas=1)  # a resize: a redeploy, the allocation follows
    [redeployed] = records(stores, action="redeploy")
    assert redeployed["actor"] == "alice" and redeployed["details"]["gpus"] == 2
    assert stores.budgets.status(TEAM).held_gpu_hours == 2 * CATALOG.platform_service.budget_hold_hours

    fake.patch("rayservices", "iris", {"metadata": {"labels": {"extra": "label"}}}, namespace=NS)
    backend.delete("iris", wait=False)
    [deleted] = records(stores, action="delete")
    assert (deleted["actor"], deleted["target"]) == ("alice", f"model:{TEAM}/iris")
    assert len(records(stores)) == 3  # the label change by the fake (an operator) is not an action


def test_a_deploy_past_the_budget_is_refused_with_the_numbers_and_leaves_nothing(cluster, tmp_path, authz):
    fake, stores = cluster
    use_up_budget_but(stores, gpu_hours_left=1.5)
    backend = serving(fake, tmp_path)
    with pytest.raises(ServingConflict) as refused:
        deploy(backend, gpus=1, replicas=1)  # 2 GPUs held ahead (surge room): more than 1.5 left
    message = str(refused.value)
    assert 'admission webhook "workloads.mlplatform.io" denied the request' in message
    assert f"{TEAM}'s budget for" in message and "more than the budget of 500 GPU-hours" in message
    assert fake.get("rayservices", "iris", namespace=NS) is None
    [refusal] = records(stores, action="budget-refusal")
    assert (refusal["actor"], refusal["target"]) == ("alice", f"model:{TEAM}/iris")
    assert records(stores, action="deploy") == []
    authz.check("alice's notebook pod (team-vision)", "create RayService past the budget",
                _response(lambda: deploy(backend, gpus=1, replicas=1)), allowed=False, status=409)
    authz.check("alice's notebook pod (team-vision)", "create RayService without GPUs past the budget",
                _response(lambda: deploy(backend, name="cpu-model")), allowed=True)

    stores.overrides.grant(TEAM, granted_by="admin", until=datetime.now(UTC) + timedelta(hours=1), reason="demo day")
    deploy(backend, gpus=1, replicas=1)
    [override] = records(stores, action="budget-override")
    assert override["actor"] == "admin" and override["details"]["for"] == "alice"
    assert [r["actor"] for r in records(stores, action="deploy")] == ["alice", "alice"]


def test_concurrent_deploys_never_pass_the_budget_together(cluster, tmp_path):
    fake, stores = cluster
    use_up_budget_but(stores, gpu_hours_left=3)  # room for one deploy of 2 GPUs held, not for two
    outcomes: dict[str, object] = {}

    def one(name):
        try:
            outcomes[name] = deploy(serving(fake, tmp_path / name), name=name, gpus=1)
        except ServingError as e:
            outcomes[name] = e

    for name in ("first", "second"):
        (tmp_path / name).mkdir()
    threads = [threading.Thread(target=one, args=(name,)) for name in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    refused = [name for name, outcome in outcomes.items() if isinstance(outcome, ServingConflict)]
    assert len(refused) == 1, outcomes
    assert len(fake.list("rayservices", NS)) == 1
    status = stores.budgets.status(TEAM)
    assert status.used_gpu_hours + status.held_gpu_hours <= 500 + 1e-6


def test_usage_is_charged_to_the_sender_and_gpus_name_their_type(cluster, tmp_path, authz):
    fake, _ = cluster
    custom = kubernetes.client.CustomObjectsApi(notebook_client(fake, tmp_path))
    body = spec.ray_service(spec.serving_request(name="iris", model_uri="models:/iris/1", gpus=1), namespace=NS,
                            model_version="1", image=K8S.images.serving_gpu,
                            service_account=K8S.serving_service_account, mlflow_token=True,
                            labels={USER_LABEL: "bob", GPU_TYPE_LABEL: "t4"})
    response = _response(lambda: custom.create_namespaced_custom_object("ray.io", "v1", NS, "rayservices", body))
    authz.check("alice's notebook pod (team-vision)", "create RayService labelled as bob's", response, allowed=False)
    assert f"metadata.labels[{USER_LABEL}]: 'bob' is not allowed; allowed: 'alice'" in response.json()["message"]

    body["metadata"]["labels"][USER_LABEL] = "alice"
    for group in [body["spec"]["rayClusterConfig"]["headGroupSpec"]] + body["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        group["template"]["metadata"]["labels"].pop(GPU_TYPE_LABEL, None)
    response = _response(lambda: custom.create_namespaced_custom_object("ray.io", "v1", NS, "rayservices", body))
    authz.check("alice's notebook pod (team-vision)", "create RayService with GPUs of no type", response,
                allowed=False, status=422)
    assert f"labels[{GPU_TYPE_LABEL}] of the pods with GPUs: None is not allowed; allowed: one of" in \
        response.json()["message"]
    assert fake.list("rayservices", NS) == []


def test_spark_submit_and_cancel_are_audited_as_the_user(cluster, tmp_path):
    fake, stores = cluster
    config = KubernetesSparkConfig(namespace=NS, team=TEAM, user="alice", bucket="b", team_prefix="teams/vision/",
                                   image=K8S.images.spark, service_account=K8S.spark_service_account,
                                   mlflow_token=True)
    backend = KubernetesSparkBackend(config, environment=PlatformEnvironment(user="alice", team=TEAM),
                                     api_client=notebook_client(fake, tmp_path))
    submitted = backend.submit(SparkJob(name="etl", main_file="s3a://b/teams/vision/etl.py"))
    backend.cancel(submitted["app_id"])
    assert [(r["action"], r["actor"], r["target"]) for r in records(stores)] == [
        ("submit", "alice", f"spark:{TEAM}/{submitted['app_id']}"),
        ("cancel", "alice", f"spark:{TEAM}/{submitted['app_id']}")]


def test_a_dry_run_records_nothing_and_another_identity_acts_under_its_own_name(cluster, tmp_path):
    fake, stores = cluster
    custom = kubernetes.client.CustomObjectsApi(notebook_client(fake, tmp_path))
    body = spec.ray_service(spec.serving_request(name="iris", model_uri="models:/iris/1"), namespace=NS,
                            model_version="1", image=K8S.images.serving, service_account=K8S.serving_service_account,
                            mlflow_token=True)
    custom.create_namespaced_custom_object("ray.io", "v1", NS, "rayservices", body, dry_run="All")
    assert records(stores) == [] and stores.budgets.status(TEAM).running == 0

    # A token bound to a pod that is no hub user's server acts as its service account.
    stranger = kubernetes.client.CustomObjectsApi(notebook_client(fake, tmp_path, pod="not-a-notebook"))
    stranger.create_namespaced_custom_object("ray.io", "v1", NS, "rayservices", body)
    [deployed] = records(stores, action="deploy")
    assert deployed["actor"] == f"system:serviceaccount:{NS}:{K8S.service_account}"


def test_without_the_service_nothing_is_deployed(charts, tmp_path):
    """The rendered configuration fails closed: before the service put its CA in, the API server refuses."""
    with FakeKube() as fake:
        load_rendered_cluster(fake, CATALOG, charts)
        backend = serving(fake, tmp_path)
        with pytest.raises(ServingError) as refused:
            deploy(backend)
        assert refused.value.status_code == 503  # the API server's 500: the backend is unavailable
        assert 'failed calling webhook "workloads.mlplatform.io"' in str(refused.value)
        assert fake.list("rayservices", NS) == []
        assert fake.get("validatingwebhookconfigurations", WEBHOOK_CONFIGURATION) is not None


class _Answer:
    def __init__(self, status: int, body: str):
        self.status_code, self.text = status, body

    def json(self):
        return json.loads(self.text)


def _response(action) -> _Answer:
    """The API server's answer to what `action` sends (an ApiException's, or 201)."""
    try:
        action()
    except kubernetes.client.ApiException as e:
        return _Answer(e.status, e.body)
    except ServingError as e:
        cause = e.__cause__ or e.__context__
        return _Answer(e.status_code, json.dumps({"message": str(cause or e)}))
    return _Answer(201, "{}")


WEBHOOK_OPENAPI = Path(__file__).resolve().parents[2] / "extensions" / "mlplatform_service" / "webhook-openapi.yaml"


def test_the_webhook_document_promises_no_server_error():
    assert promised_server_errors(WEBHOOK_OPENAPI) == set()


def test_fuzzed_admission_reviews_get_only_documented_answers(cluster, tmp_path):
    """A bounded schemathesis run (fixed seed) posting AdmissionReviews, well-formed and not, straight to the
    webhook's port: each answer is a documented one (an AdmissionReview response, or 400), never a 500."""
    _, stores = cluster
    report = tmp_path / "schemathesis.xml"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "st"), "run", str(WEBHOOK_OPENAPI), "--url", stores.url,
         "--tls-verify", "false", "--checks", "status_code_conformance,response_schema_conformance",
         "--max-examples", "60", "--seed", "1", "--generation-deterministic", "--request-timeout", "30",
         "--report", "junit", "--report-junit-path", str(report), "--no-color"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "schemathesis-webhook.log").write_text(result.stdout + result.stderr)
    summary = result.stdout[result.stdout.find("=== FAILURES"):] if "FAILURES" in result.stdout else result.stdout
    assert result.returncode == 0, summary[-6000:]
