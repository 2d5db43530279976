"""Kubernetes RBAC as the API server decides it: every RBAC object `mlplatform render` writes for
helm-values/platform.yaml, plus the Spark operator chart's Role for the drivers' account, loaded into
the fake API server, whose authorizer (tests/support/fake_kube/rbac.py) follows the real one's rules.
Each actor calls with its own token through the Kubernetes client; writes are dry runs (authorized as
real ones, nothing changes), so every cell sees the same cluster.
"""

from __future__ import annotations

import json

import kubernetes
import pytest
from mlplatform.serving import spec
from mlplatform.serving.spec import serving_request
from mlplatform.spark import spec as spark_spec
from mlplatform.spark.job import SparkJob
from mlplatform_core.names import gateway_traffic

from ..support.authz import authorization_matrix
from ..support.fake_kube import FakeKube
from ..support.rendered_cluster import CATALOG, chart_objects, load_rendered_cluster
from ..support.workload_webhook import workload_webhook

K8S = CATALOG.kubernetes
A, B = CATALOG.teams["team-vision"].namespace, CATALOG.teams["team-nlp"].namespace
HUB = K8S.hub_namespace
# The teams' traffic maps in the hub's namespace (mlplatform_service/traffic_maps.py): A's exists, B's not yet.
MAP_A, MAP_B = gateway_traffic("team-vision"), gateway_traffic("team-nlp")
DRY = {"dry_run": "All"}
RAY = ("ray.io", "v1", "rayservices")
SPARK = ("sparkoperator.k8s.io", "v1beta2", "sparkapplications")

ACTORS = {
    "notebook SA, team A": f"{A}/{K8S.service_account}",
    "serving SA, team A": f"{A}/{K8S.serving_service_account}",
    "Spark driver SA, team A": f"{A}/{K8S.spark_service_account}",
    "hub SA": f"{HUB}/hub",
    "gateway SA": f"{HUB}/mlplatform-gateway",  # the teams' rollout gateways (hub_config/render/gateway.py)
    "notebook SA, team B": f"{B}/{K8S.service_account}",
    "unauthenticated": None,
}


def pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "main", "image": "registry.example.org/mlplatform/notebook:0.1.0",
                                     "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                                   "limits": {"cpu": "100m", "memory": "128Mi"}}}]}}


def ray_service(name: str) -> dict:
    """A RayService as the platform's builder makes it (the workload admission policy admits it)."""
    request = serving_request(name=name, model_uri="models:/iris/1")
    return spec.ray_service(request, namespace=A, model_version="1", service_account=K8S.serving_service_account,
                            image=K8S.images.serving)


def traffic_map(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": HUB},
            "data": {"iris": '{"team": "team-vision", "champion_version": "3"}'}}


def watch_one(core: kubernetes.client.CoreV1Api, name: str) -> None:
    """A watch of one ConfigMap of the hub's namespace as gateway_pod.py starts it (by `metadata.name`)."""
    core.list_namespaced_config_map(HUB, field_selector=f"metadata.name={name}", watch=True, timeout_seconds=0,
                                    _preload_content=False).release_conn()


def spark_application(name: str, namespace: str = A) -> dict:
    """A SparkApplication as the platform's builder makes it."""
    return spark_spec.spark_application(SparkJob(name="etl", main_file="local:///app.py"), app_id=name,
                                        namespace=namespace, user="alice", team="team-vision", image=K8S.images.spark,
                                        service_account=K8S.spark_service_account)


# action → what it does with a CoreV1Api, CustomObjectsApi and RbacAuthorizationV1Api on one client
ACTIONS = {
    "get pod (A)": lambda c, x, r: c.read_namespaced_pod("jupyter-alice", A),
    "list pods (A)": lambda c, x, r: c.list_namespaced_pod(A),
    "get pods/log (A)": lambda c, x, r: c.read_namespaced_pod_log("jupyter-alice", A),
    "get Secret (A)": lambda c, x, r: c.read_namespaced_secret("jupyter-alice-api-token", A),
    "create RayService (A)": lambda c, x, r: x.create_namespaced_custom_object(*RAY[:2], A, RAY[2],
                                                                                ray_service("new"), **DRY),
    "patch RayService (A)": lambda c, x, r: x.patch_namespaced_custom_object(*RAY[:2], A, RAY[2], "serve",
                                                                              {"metadata": {"labels": {"x": "y"}}}, **DRY),
    "delete RayService (A)": lambda c, x, r: x.delete_namespaced_custom_object(*RAY[:2], A, RAY[2], "serve", **DRY),
    "deletecollection RayServices (A)": lambda c, x, r: x.delete_collection_namespaced_custom_object(
        *RAY[:2], A, RAY[2], **DRY),
    "create SparkApplication (A)": lambda c, x, r: x.create_namespaced_custom_object(
        *SPARK[:2], A, SPARK[2], spark_application("new"), **DRY),
    "patch SparkApplication (A)": lambda c, x, r: x.patch_namespaced_custom_object(
        *SPARK[:2], A, SPARK[2], "job", {"metadata": {"labels": {"x": "y"}}}, **DRY),
    "delete SparkApplication (A)": lambda c, x, r: x.delete_namespaced_custom_object(*SPARK[:2], A, SPARK[2], "job",
                                                                                      **DRY),
    "list events (A)": lambda c, x, r: c.list_namespaced_event(A),
    "create pod (A)": lambda c, x, r: c.create_namespaced_pod(A, pod("new"), **DRY),
    "patch pod (A)": lambda c, x, r: c.patch_namespaced_pod("jupyter-alice", A, {"metadata": {"labels": {"x": "y"}}},
                                                             **DRY),
    "get ConfigMap mlplatform (A)": lambda c, x, r: c.read_namespaced_config_map("mlplatform", A),
    "create RoleBinding (A)": lambda c, x, r: r.create_namespaced_role_binding(A, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "mine"},
        "subjects": [{"kind": "ServiceAccount", "name": K8S.service_account, "namespace": A}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "mlplatform-hub"}}, **DRY),
    "get pod (B)": lambda c, x, r: c.read_namespaced_pod("jupyter-bob", B),
    "get pods/log (B)": lambda c, x, r: c.read_namespaced_pod_log("jupyter-bob", B),
    "list RayServices (B)": lambda c, x, r: x.list_namespaced_custom_object(*RAY[:2], B, RAY[2]),
    "create SparkApplication (B)": lambda c, x, r: x.create_namespaced_custom_object(
        *SPARK[:2], B, SPARK[2], spark_application("new", B), **DRY),
    "get ConfigMap mlplatform (B)": lambda c, x, r: c.read_namespaced_config_map("mlplatform", B),
    "list pods (all namespaces)": lambda c, x, r: c.list_pod_for_all_namespaces(),
    # The service (the hub's account) puts its CA into its own webhook configuration; no other may be changed.
    "patch ValidatingWebhookConfiguration mlplatform-workloads": lambda c, x, r: kubernetes.client.AdmissionregistrationV1Api(
        c.api_client).patch_validating_webhook_configuration(
            "mlplatform-workloads", {"metadata": {"labels": {"x": "y"}}}, **DRY),
    "create ValidatingWebhookConfiguration": lambda c, x, r: kubernetes.client.AdmissionregistrationV1Api(
        c.api_client).create_validating_webhook_configuration({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "mine"}, "webhooks": []}, **DRY),
    "list resourcequotas (all namespaces)": lambda c, x, r: c.list_resource_quota_for_all_namespaces(),
    # The traffic maps: the gateways read them, the platform service (the hub's account) writes them, and no
    # team's account can do either (a team must not forge what its gateway routes or its evidence's versions).
    "get traffic map (A)": lambda c, x, r: c.read_namespaced_config_map(MAP_A, HUB),
    "watch traffic map (A)": lambda c, x, r: watch_one(c, MAP_A),
    "update traffic map (A)": lambda c, x, r: c.replace_namespaced_config_map(MAP_A, HUB, traffic_map(MAP_A), **DRY),
    "patch traffic map (A)": lambda c, x, r: c.patch_namespaced_config_map(MAP_A, HUB, {"data": {"iris": "{}"}}, **DRY),
    "create traffic map (B)": lambda c, x, r: c.create_namespaced_config_map(HUB, traffic_map(MAP_B), **DRY),
    "delete traffic map (A)": lambda c, x, r: c.delete_namespaced_config_map(MAP_A, HUB, **DRY),
    "list ConfigMaps (hub)": lambda c, x, r: c.list_namespaced_config_map(HUB),
    "get ConfigMap mlplatform-gateway (hub)": lambda c, x, r: c.read_namespaced_config_map("mlplatform-gateway", HUB),
    "get Secret hub (hub)": lambda c, x, r: c.read_namespaced_secret("hub", HUB),
}

NOTEBOOK_A = {"get pods/log (A)", "create RayService (A)", "patch RayService (A)", "delete RayService (A)",
              "create SparkApplication (A)", "patch SparkApplication (A)", "delete SparkApplication (A)",
              "list events (A)"}
ALLOWED = {
    "notebook SA, team A": NOTEBOOK_A,
    "serving SA, team A": set(),  # RayService pods never call the API
    # The Spark operator chart's Role: pods, configmaps, PVCs and services, every verb (the driver runs executors).
    "Spark driver SA, team A": {"get pod (A)", "list pods (A)", "create pod (A)", "patch pod (A)",
                                "get ConfigMap mlplatform (A)"},
    # z2jh's hub rules in each team namespace, and the quota cache's cluster-wide list/watch; the platform
    # service's rollouts patch the teams' RayServices (get, list, patch; never create or delete).
    "hub SA": {"get pod (A)", "list pods (A)", "get Secret (A)", "list events (A)", "create pod (A)", "get pod (B)",
               "list pods (all namespaces)", "list resourcequotas (all namespaces)",
               "patch ValidatingWebhookConfiguration mlplatform-workloads", "patch RayService (A)",
               "list RayServices (B)", "get Secret hub (hub)",  # z2jh's Role in its own namespace
               # the platform service writes the traffic maps: create (any name: RBAC cannot limit it), then
               # read, update and patch those maps only; never delete one
               "get traffic map (A)", "update traffic map (A)", "patch traffic map (A)", "create traffic map (B)"},
    # Read its team's traffic map (one by name; one account for every team's gateway), nothing else.
    "gateway SA": {"get traffic map (A)", "watch traffic map (A)"},
    "notebook SA, team B": {"get pods/log (B)", "list RayServices (B)", "create SparkApplication (B)"},
    "unauthenticated": set(),
}


class Response:
    """A Kubernetes client call's outcome as the authorization matrix reads it."""

    def __init__(self, status: int, body: str):
        self.status_code, self.text = status, body

    def json(self) -> dict:
        return json.loads(self.text)


@pytest.fixture(scope="module")
def authz(request):
    yield from authorization_matrix(request)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("rbac-matrix")
    with FakeKube() as fake:
        load_rendered_cluster(fake)
        for namespace, name in [(A, "jupyter-alice"), (B, "jupyter-bob")]:
            fake.seed({**pod(name), "metadata": {"name": name, "namespace": namespace}})
            fake.patch_status("pods", name, {"phase": "Running"}, namespace=namespace)
            fake.set_pod_log(namespace, name, "log line\n")
        fake.seed({"apiVersion": "v1", "kind": "Secret", "stringData": {"token": "t"},
                   "metadata": {"name": "jupyter-alice-api-token", "namespace": A}})
        fake.seed({**ray_service("serve"), "metadata": {"name": "serve", "namespace": A}})
        fake.seed({**spark_application("job"), "metadata": {"name": "job", "namespace": A}})
        fake.seed(traffic_map(MAP_A))
        with workload_webhook(fake, CATALOG, f"sqlite:///{state / 'platform.sqlite'}", state):
            yield fake


def clients(fake: FakeKube, account: str | None):
    headers = {"authorization": f"Bearer {fake.token_for(service_account=account)}"} if account else {}
    api = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=fake.url, api_key=headers))
    return (kubernetes.client.CoreV1Api(api), kubernetes.client.CustomObjectsApi(api),
            kubernetes.client.RbacAuthorizationV1Api(api))


def call(action, apis) -> Response:
    try:
        action(*apis)
    except kubernetes.client.ApiException as error:
        return Response(error.status, error.body)
    return Response(200, "{}")


@pytest.mark.parametrize("actor", ACTORS)
def test_rbac_matrix(cluster, authz, actor):
    apis = clients(cluster, ACTORS[actor])
    for action, do in ACTIONS.items():
        allowed = action in ALLOWED[actor]
        response = call(do, apis)
        authz.check(actor, action, response, allowed=allowed)
        if not allowed:
            user = ("system:anonymous" if ACTORS[actor] is None
                    else "system:serviceaccount:" + ACTORS[actor].replace("/", ":"))
            assert f'is forbidden: User "{user}" cannot ' in response.json()["message"]
    assert cluster.list("pods", A) == [cluster.get("pods", "jupyter-alice", A)]  # dry runs changed nothing


def test_the_fake_holds_every_rendered_role_and_binding(cluster):
    """The matrix above is about what is rendered and what the charts install: every Role and binding of them is
    in the fake, nothing else."""
    stored = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
              for kind in ("roles", "rolebindings", "clusterroles", "clusterrolebindings") for o in cluster.list(kind)}
    expected = {(kind, None, name) for kind in ("ClusterRole", "ClusterRoleBinding")
                for name in ("mlplatform-hub-quota-reader", "mlplatform-hub-webhook-ca")}
    for namespace in (A, B):
        for kind in ("Role", "RoleBinding"):
            expected |= {(kind, namespace, "mlplatform-notebook"), (kind, namespace, "mlplatform-hub")}
    for kind in ("Role", "RoleBinding"):  # the traffic maps' (gateway/gateways.yaml)
        expected |= {(kind, HUB, "mlplatform-gateway-traffic-reader"), (kind, HUB, "mlplatform-hub-traffic-writer")}
    charts = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
              for objects in chart_objects().values() for o in objects if o["kind"].endswith(("Role", "RoleBinding"))}
    # The Spark drivers' Role and binding in each team namespace come from the Spark operator chart.
    assert {(kind, ns, K8S.spark_service_account) for kind in ("Role", "RoleBinding") for ns in (A, B)} <= charts
    assert stored == expected | charts
