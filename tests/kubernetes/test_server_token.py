"""No team workload reads a server's JupyterHub API token: CatalogKubeSpawner, running as the hub's
service account in the rendered cluster (its Roles and bindings, the Spark operator chart's Role),
keeps the token in a Secret per server that only the hub may read; the pod spec holds a reference.
"""

from __future__ import annotations

import json

import kubernetes
import pytest
from tornado import web

from hub_config.spawners.kube_quota import stop_cluster_quotas
from hub_config.spawners.kubernetes import CatalogKubeSpawner

from ..support.authz import authorization_matrix
from ..support.fake_kube import point_kubespawner_at
from ..support.rendered_cluster import CATALOG, load_rendered_cluster
from .test_kubespawner import spawner as kube_spawner
from .test_kubespawner import start

VISION = "team-vision"
CPU = {"team": VISION, "profile": "cpu"}
SECRET = "jupyter-alice-api-token"
K8S = CATALOG.kubernetes


class Response:
    """A Kubernetes client call's outcome as the authorization matrix reads it."""

    def __init__(self, status: int, body: str):
        self.status_code, self.text = status, body

    def json(self) -> dict:
        return json.loads(self.text)


def call(api, method: str, *args) -> Response:
    try:
        raw = getattr(api, method)(*args, _preload_content=False)
        return Response(raw.status, raw.data.decode())
    except kubernetes.client.ApiException as error:
        return Response(error.status, error.body)


@pytest.fixture(scope="module")
def authz(request):
    yield from authorization_matrix(request)


@pytest.fixture
async def cluster(fake_kube, tmp_path, monkeypatch):
    load_rendered_cluster(fake_kube)
    fake_kube.kubelet()
    # KubeSpawner runs with the hub's service account: the rendered Roles must be enough for it.
    hub = fake_kube.token_for(service_account=f"{K8S.hub_namespace}/hub")
    path = fake_kube.write_kubeconfig(tmp_path / "hub-kubeconfig", token=hub)
    monkeypatch.setenv("KUBECONFIG", str(path))
    undo = point_kubespawner_at(path)
    yield fake_kube
    await CatalogKubeSpawner._stop_all_reflectors()
    await stop_cluster_quotas()
    undo()


def spawner(name: str) -> CatalogKubeSpawner:
    s = kube_spawner(name, catalog_file=str(CATALOG.path), k8s_api_request_retry_timeout=5)
    s.api_token = f"secret-token-of-{name}"
    return s


def core(fake, account: str) -> kubernetes.client.CoreV1Api:
    token = fake.token_for(service_account=account)
    config = kubernetes.client.Configuration(host=fake.url, api_key={"authorization": f"Bearer {token}"})
    return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(config))


async def test_the_token_is_in_a_secret_only_the_hub_reads_and_gone_when_the_server_stops(cluster, authz):
    alice = spawner("alice")
    await start(alice, CPU)
    assert await alice.poll() is None
    pod = cluster.get("pods", "jupyter-alice", VISION)
    assert pod["status"]["phase"] == "Running"
    container = next(c for c in pod["spec"]["containers"] if c["name"] == "notebook")
    reference = {"secretKeyRef": {"name": SECRET, "key": "token"}}
    assert {e["name"]: e.get("valueFrom") for e in container["env"] if e["name"].endswith("API_TOKEN")} == {
        "JUPYTERHUB_API_TOKEN": reference, "JPY_API_TOKEN": reference}
    assert "secret-token-of-alice" not in json.dumps(pod)
    # The kubelet starts the container with the token, read from the Secret.
    env = cluster.container_env(pod, "notebook")
    assert env["JUPYTERHUB_API_TOKEN"] == env["JPY_API_TOKEN"] == "secret-token-of-alice"
    assert cluster.get("secrets", SECRET, VISION)["metadata"]["labels"] == {
        "mlplatform.io/team": VISION, "mlplatform.io/user": "alice", "mlplatform.io/profile": "cpu",
        "app.kubernetes.io/component": "server-api-token"}

    # The team's workloads: the Spark drivers' account reads the pod (the chart's Role), without the token;
    # the notebooks' account reads no pod; neither reads the Secret.
    spark, notebook = f"{VISION}/{K8S.spark_service_account}", f"{VISION}/{K8S.service_account}"
    read_pod = call(core(cluster, spark), "read_namespaced_pod", "jupyter-alice", VISION)
    authz.check("Spark driver SA (team A)", "get alice's pod", read_pod, allowed=True)
    assert "secret-token-of-alice" not in read_pod.text and SECRET in read_pod.text
    listed = call(core(cluster, spark), "list_namespaced_pod", VISION)
    authz.check("Spark driver SA (team A)", "list pods", listed, allowed=True)
    assert "secret-token-of-alice" not in listed.text
    authz.check("notebook SA (team A)", "get alice's pod",
                call(core(cluster, notebook), "read_namespaced_pod", "jupyter-alice", VISION), allowed=False)
    for actor, account in [("Spark driver SA (team A)", spark), ("notebook SA (team A)", notebook)]:
        refused = call(core(cluster, account), "read_namespaced_secret", SECRET, VISION)
        authz.check(actor, "get alice's token Secret", refused, allowed=False)
        user = "system:serviceaccount:" + account.replace("/", ":")
        assert refused.json()["message"] == (f'secrets "{SECRET}" is forbidden: User "{user}" cannot get resource '
                                             f'"secrets" in API group "" in the namespace "{VISION}"')
        authz.check(actor, "list Secrets", call(core(cluster, account), "list_namespaced_secret", VISION),
                    allowed=False)
    authz.check("hub SA", "get alice's token Secret",
                call(core(cluster, f"{K8S.hub_namespace}/hub"), "read_namespaced_secret", SECRET, VISION),
                allowed=True)

    await alice.stop()
    assert cluster.get("pods", "jupyter-alice", VISION) is None
    assert cluster.get("secrets", SECRET, VISION) is None


async def test_a_failed_pod_create_leaves_no_secret(cluster):
    bob = spawner("bob")
    cluster.fail("create", "pods", 500, "etcd is down", times=100)
    with pytest.raises(Exception, match="etcd is down"):
        await start(bob, CPU)
    assert cluster.list("secrets", VISION) == [] and cluster.list("pods", VISION) == []


async def test_a_quota_refusal_leaves_no_secret(cluster):
    carol = spawner("carol")
    cluster.fail("create", "pods", 403, 'pods "jupyter-carol" is forbidden: exceeded quota: mlplatform-team, '
                                        "requested: requests.cpu=500m, used: requests.cpu=32, limited: requests.cpu=32")
    with pytest.raises(web.HTTPError) as refused:
        await start(carol, CPU)
    assert refused.value.status_code == 409
    assert cluster.list("secrets", VISION) == [] and cluster.list("pods", VISION) == []


async def test_a_secret_left_by_an_earlier_start_is_replaced_with_the_new_token(cluster):
    cluster.seed({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "jupyter-dana-api-token",
                                                                     "namespace": VISION},
                  "stringData": {"token": "an-old-token"}})
    dana = spawner("dana")
    await start(dana, CPU)
    pod = cluster.get("pods", "jupyter-dana", VISION)
    assert cluster.container_env(pod, "notebook")["JUPYTERHUB_API_TOKEN"] == "secret-token-of-dana"
    await dana.stop()
    assert cluster.list("secrets", VISION) == []
