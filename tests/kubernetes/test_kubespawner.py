"""CatalogKubeSpawner against the fake API server: team namespaces, GPU profiles, quota from the cluster."""

from __future__ import annotations

from dataclasses import dataclass, field

import kubernetes_validate
import pytest
from kubernetes_asyncio.client import ApiClient
from tornado import web

from hub_config.spawners.kube_quota import GPU_TYPE_LABEL
from hub_config.spawners.kubernetes import CatalogKubeSpawner, QuotaExceeded

VISION = "team-vision"
A100x2 = {"team": VISION, "profile": "gpu-a100", "gpu_type": "a100", "gpu_count": 2}
CPU = {"team": VISION, "profile": "cpu"}


@dataclass
class Group:
    name: str


@dataclass
class User:
    """What a spawner reads of JupyterHub's user (the hub itself cannot run pods here)."""

    name: str
    groups: list[Group] = field(default_factory=lambda: [Group(VISION)])
    id: int = 1
    url: str = "/user/"


def gpu_quota(hard: int, name: str = "team-gpus") -> dict:
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name, "namespace": VISION},
            "spec": {"hard": {"requests.nvidia.com/gpu": str(hard), "requests.cpu": "64", "requests.memory": "512Gi"}}}


@pytest.fixture
async def cluster(fake_kube, kubeconfig):
    fake_kube.namespace(VISION)
    fake_kube.namespace("team-nlp")
    fake_kube.kubelet()
    yield fake_kube
    await CatalogKubeSpawner._stop_all_reflectors()
    if CatalogKubeSpawner._quota is not None:
        await CatalogKubeSpawner._quota.stop()
        CatalogKubeSpawner._quota = None


def spawner(name: str, **config) -> CatalogKubeSpawner:
    s = CatalogKubeSpawner(_mock=True, user=User(name), start_timeout=20, http_timeout=20, **config)
    s.api_token = f"token-of-{name}"
    return s


async def start(s: CatalogKubeSpawner, options: dict):
    s.user_options = options
    await s._run_apply_user_options(options)
    return await s.start()


async def test_gpu_server_runs_in_the_team_namespace_with_the_gpu_types_placement(cluster):
    cluster.seed(gpu_quota(8))
    alice = spawner("alice")
    await start(alice, A100x2)
    assert await alice.poll() is None

    [pod] = cluster.list("pods", VISION)
    assert cluster.list("pods", "default") == []
    assert pod["metadata"]["labels"] | {
        "mlplatform.io/team": VISION, "mlplatform.io/user": "alice", "mlplatform.io/profile": "gpu-a100",
        "mlplatform.io/gpu-type": "a100", "mlplatform.io/gpu-count": "2"} == pod["metadata"]["labels"]
    spec = pod["spec"]
    container = next(c for c in spec["containers"] if c["name"] == "notebook")
    assert container["image"] == "mlplatform/notebook-gpu:0.1.0"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["serviceAccountName"] == "mlplatform-notebook"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MLPLATFORM_NAMESPACE"] == VISION and env["MLPLATFORM_GPU_COUNT"] == "2"
    assert env["AWS_CONFIG_FILE"] == "/etc/mlplatform/aws-config"
    assert env["MLPLATFORM_CATALOG"] == "/etc/mlplatform/platform.yaml"
    assert not {k for k in env if k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
    assert {"name": "mlplatform", "mountPath": "/etc/mlplatform", "readOnly": True} in container["volumeMounts"]

    # The manifest KubeSpawner sent is a valid Pod in strict mode (unknown fields rejected).
    manifest = ApiClient().sanitize_for_serialization(await alice.get_pod_manifest())
    kubernetes_validate.validate(manifest, "1.33", strict=True)

    # The cluster quota counts the pod (the fake API server's quota admission, as a real one).
    assert cluster.get("resourcequotas", "team-gpus", VISION)["status"]["used"]["requests.nvidia.com/gpu"] == "2"
    await alice.stop()
    assert cluster.list("pods", VISION) == []
    assert await alice.poll() is not None


async def test_spawn_form_offers_what_the_cluster_quota_leaves_without_api_calls(cluster):
    cluster.seed(gpu_quota(4))
    bob = spawner("bob")
    await start(bob, {**A100x2, "gpu_count": 1})
    carol = spawner("carol")
    await carol.get_options_form()  # the first render starts the cache
    cluster.clear_requests()

    form = await carol.get_options_form()
    assert "A100 ×2 — 3 of 4 team-vision A100 free" in form
    assert "A100 ×4 — only 3 of 4 team-vision A100 free" in form
    assert [r for r in cluster.requests if r.verb != "watch"] == []  # rendered from the cache

    await bob.stop()


async def test_spawn_beyond_quota_is_refused_before_any_pod_exists(cluster):
    cluster.seed(gpu_quota(2))
    dana = spawner("dana")
    with pytest.raises(web.HTTPError) as refused:
        await start(dana, {**A100x2, "gpu_count": 4})
    assert refused.value.status_code == 409
    assert "cannot start with 4 A100 GPUs: only 2 of 2 team-vision GPUs free in total" in refused.value.log_message % \
        refused.value.args
    assert cluster.list("pods", VISION) == []


async def test_exceeded_quota_from_the_api_is_a_clear_message_and_does_not_stick(cluster):
    # Someone else's Ray workers took 7 of 8 GPUs after the cache was read: the API server refuses.
    cluster.seed(gpu_quota(8))
    eve = spawner("eve")
    await eve.get_options_form()
    CatalogKubeSpawner._quota._quotas.resources.clear()  # the cache has not seen the quota's update yet
    cluster.seed({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ray-worker", "namespace": VISION},
                  "spec": {"containers": [{"name": "ray", "image": "rayproject/ray:2.60.0",
                                           "resources": {"requests": {"cpu": "1", "memory": "1Gi"},
                                                         "limits": {"nvidia.com/gpu": "7"}}}]}})
    with pytest.raises(QuotaExceeded) as refused:
        await start(eve, A100x2)
    message = refused.value.jupyterhub_message
    assert message.startswith("Cannot start your server with 2 GPUs: team team-vision's quota in namespace "
                              "team-vision is used up (exceeded quota: team-gpus, requested: requests.nvidia.com/gpu=2")
    assert "limited: requests.nvidia.com/gpu=8" in message
    assert refused.value.status_code == 409
    assert [p["metadata"]["name"] for p in cluster.list("pods", VISION)] == ["ray-worker"]
    assert CatalogKubeSpawner._quota.reservations == {}

    # The same user's next spawn without GPUs works.
    await start(eve, CPU)
    pod = cluster.get("pods", eve.pod_name, VISION)
    assert GPU_TYPE_LABEL not in pod["metadata"]["labels"]
    assert "nvidia.com/gpu" not in pod["spec"]["containers"][0]["resources"].get("limits", {})
    assert pod["spec"].get("nodeSelector") in (None, {})
    await eve.stop()


async def test_state_survives_a_hub_restart(cluster):
    cluster.seed(gpu_quota(8))
    alice = spawner("alice")
    await start(alice, A100x2)
    state = alice.get_state()
    assert state["namespace"] == VISION and state["selection"]["gpu_count"] == 2

    restored = spawner("alice")
    restored.load_state(state)
    assert await restored.poll() is None
    await restored.stop()
    assert cluster.list("pods", VISION) == []
