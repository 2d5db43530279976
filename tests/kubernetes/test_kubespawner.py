"""CatalogKubeSpawner against the fake API server: team namespaces, GPU profiles, quota from the cluster."""

from __future__ import annotations

import asyncio
import gc
import weakref

import kubernetes_validate
import pytest
from kubernetes_asyncio.client import ApiClient
from mlplatform_core.names import GPU_TYPE_LABEL, USER_LABEL, label_value
from tornado import web
from traitlets.config import Config

from hub_config.spawners.kube_quota import stop_cluster_quotas
from hub_config.spawners.kubernetes import CatalogKubeSpawner, QuotaExceeded

from ..support.hub_user import User

VISION = "team-vision"
A100x2 = {"team": VISION, "profile": "gpu-a100", "gpu_type": "a100", "gpu_count": 2}
CPU = {"team": VISION, "profile": "cpu"}


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
    await stop_cluster_quotas()


def spawner(name: str, **config) -> CatalogKubeSpawner:
    s = CatalogKubeSpawner(_mock=True, user=User(name), start_timeout=20, http_timeout=20, **config)
    s.api_token = f"token-of-{name}"
    return s


async def start(s: CatalogKubeSpawner, options: dict):
    """What JupyterHub's User.spawn does: apply the options, run the pre-spawn hook, start."""
    s.user_options = options
    await s._run_apply_user_options(options)
    await s.run_pre_spawn_hook()
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
    eve.quota._quotas.resources.clear()  # the cache has not seen the quota's update yet
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
    assert eve.quota.reservations == {}

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


# z2jh puts the user pods' scheduling and extra resources into KubeSpawner's config like this.
Z2JH_TOLERATIONS = [{"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user", "effect": "NoSchedule"},
                    {"key": "hub.jupyter.org_dedicated", "operator": "Equal", "value": "user", "effect": "NoSchedule"}]
Z2JH = Config({"KubeSpawner": {"tolerations": Z2JH_TOLERATIONS,
                               "node_selector": {"hub.jupyter.org/node-purpose": "user"},
                               "extra_resource_limits": {"ephemeral-storage": "10Gi"}}})
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


async def placement(s: CatalogKubeSpawner, options: dict) -> dict:
    """The pod KubeSpawner would create for `options`: node selector, tolerations, extended resources."""
    s.user_options = options
    await s._run_apply_user_options(options)
    manifest = ApiClient().sanitize_for_serialization(await s.get_pod_manifest())
    kubernetes_validate.validate(manifest, "1.33", strict=True)
    spec = manifest["spec"]
    resources = next(c for c in spec["containers"] if c["name"] == "notebook")["resources"]
    extended = {kind: {k: v for k, v in resources.get(kind, {}).items() if k not in ("cpu", "memory")}
                for kind in ("requests", "limits")}
    return {"nodeSelector": spec.get("nodeSelector"), "tolerations": spec.get("tolerations"), **extended}


async def test_gpu_placement_merges_onto_the_configured_one_and_a_cpu_server_gets_it_back(cluster):
    cluster.seed(gpu_quota(8))
    alice = spawner("alice", config=Z2JH)
    assert await placement(alice, A100x2) == {
        "nodeSelector": {"hub.jupyter.org/node-purpose": "user", "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
        "tolerations": Z2JH_TOLERATIONS + [GPU_TOLERATION],
        "requests": {"nvidia.com/gpu": "2"},
        "limits": {"ephemeral-storage": "10Gi", "nvidia.com/gpu": "2"}}
    configured = {"nodeSelector": {"hub.jupyter.org/node-purpose": "user"}, "tolerations": Z2JH_TOLERATIONS,
                  "requests": {}, "limits": {"ephemeral-storage": "10Gi"}}
    assert await placement(alice, CPU) == configured
    assert await placement(alice, {**A100x2, "profile": "gpu-t4", "gpu_type": "t4", "gpu_count": 1}) == {
        "nodeSelector": {"hub.jupyter.org/node-purpose": "user", "nvidia.com/gpu.product": "Tesla-T4"},
        "tolerations": Z2JH_TOLERATIONS + [GPU_TOLERATION],  # once, however many GPU selections came before
        "requests": {"nvidia.com/gpu": "1"},
        "limits": {"ephemeral-storage": "10Gi", "nvidia.com/gpu": "1"}}
    assert await placement(alice, CPU) == configured

    # A toleration the deployment already has (here in KubeSpawner's dict form) is not added twice.
    bob = spawner("bob", tolerations={"gpu": GPU_TOLERATION})
    assert (await placement(bob, A100x2))["tolerations"] == [GPU_TOLERATION]
    alice.release()
    bob.release()


async def test_the_user_label_is_the_one_the_notebook_side_writes(cluster):
    cluster.seed(gpu_quota(8))
    dana = spawner("dana.x@example.org")
    await start(dana, A100x2)
    [pod] = cluster.list("pods", VISION)
    # The same value as on the user's RayServices and SparkApplications (mlplatform.serving / .spark).
    assert pod["metadata"]["labels"][USER_LABEL] == label_value("dana.x@example.org") == "dana.x-example.org"
    await dana.stop()


async def test_one_quota_cache_per_hub_that_outlives_the_spawner_that_started_it(cluster):
    cluster.seed(gpu_quota(4))
    alice = spawner("alice")
    await alice.get_options_form()  # alice's spawn page starts the hub's cache
    bob = spawner("bob")
    assert bob.quota is alice.quota
    gone = weakref.ref(alice)
    del alice
    gc.collect()
    assert gone() is None  # the cache keeps nothing of the spawner that happened to come first

    # Its watches run on: another workload's GPU pod shows up on bob's page, and bob's server starts.
    cluster.seed({"apiVersion": "v1", "kind": "Pod",
                  "metadata": {"name": "training", "namespace": VISION, "labels": {GPU_TYPE_LABEL: "a100"}},
                  "spec": {"containers": [{"name": "train", "image": "mlplatform/notebook-gpu:0.1.0",
                                           "resources": {"requests": {"cpu": "1", "memory": "1Gi"},
                                                         "limits": {"nvidia.com/gpu": "1"}}}]}})
    for _ in range(100):
        if "A100 ×2 — 3 of 4 team-vision A100 free" in await bob.get_options_form():
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"the cache did not see the pod: {bob.quota_snapshot()}")
    await start(bob, {**A100x2, "gpu_count": 1})
    assert await bob.poll() is None
    assert spawner("carol").quota_snapshot().used == {VISION: {"a100": 2}}
    await bob.stop()
