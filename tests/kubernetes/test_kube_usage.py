"""The usage ledger kept from the GPU pods the hub watches, against the fake API server: served models
and Spark jobs the notebook creates are counted, resized and ended; a server's pod is the spawner's."""

from __future__ import annotations

import asyncio

import pytest
from mlplatform.serving.spec import ServingRequest, ray_service
from mlplatform.spark.job import SparkJob
from mlplatform.spark.spec import labels as spark_labels
from mlplatform_core.names import GPU_TYPE_LABEL, TEAM_LABEL, USER_LABEL
from mlplatform_service.usage import Interval
from sqlalchemy import select
from traitlets.config import Config

from hub_config.governance import Governance
from hub_config.spawners.kube_quota import stop_cluster_quotas
from hub_config.spawners.kubernetes import CatalogKubeSpawner

from .test_kubespawner import spawner, start

VISION = "team-vision"
A100x2 = {"team": VISION, "profile": "gpu-a100", "gpu_type": "a100", "gpu_count": 2}
SPARK_APP = "etl-3f9a1c2e"


@pytest.fixture
async def cluster(fake_kube, kubeconfig):
    fake_kube.namespace(VISION)
    fake_kube.kubelet()
    yield fake_kube
    await CatalogKubeSpawner._stop_all_reflectors()
    await stop_cluster_quotas()


def hub_config(**usage) -> Config:
    config = Config()
    for name, value in usage.items():
        setattr(config.KubeUsage, name, value)
    return config




def ray_pods(app: str, replicas: int) -> list[dict]:
    """The pods KubeRay makes of the RayService the serving backend deploys (its labels, one GPU per replica)."""
    service = ray_service(ServingRequest(name=app, model_uri="models:/iris/1", replicas=replicas, gpus=1),
                          namespace=VISION, model_version="1", labels={
                              TEAM_LABEL: VISION, USER_LABEL: "bob", GPU_TYPE_LABEL: "a100"})
    cluster = service["spec"]["rayClusterConfig"]
    head, worker = cluster["headGroupSpec"]["template"], cluster["workerGroupSpecs"][0]["template"]
    kuberay = {"ray.io/cluster": f"{app}-raycluster-x7k2p", "ray.io/originated-from-crd": "RayService",
               "ray.io/originated-from-cr-name": app}
    return [pod(f"{app}-head", head, kuberay)] + [pod(f"{app}-worker-{i}", worker, kuberay) for i in range(replicas)]


def spark_pods(app_id: str, executors: int) -> list[dict]:
    """Driver and executors of a Spark job on T4s (GPUs the notebook's job asked for through its conf)."""
    job = SparkJob(name="etl", main_file="local:///app/etl.py", executors=executors)
    labels = {**spark_labels(app_id, job, user="carol", team=VISION), GPU_TYPE_LABEL: "t4"}
    container = {"name": "spark", "image": "mlplatform/spark:0.1.0", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
    roles = {"driver": "driver", **{f"exec-{i}": "executor" for i in range(1, executors + 1)}}
    return [pod(f"{app_id}-{name}", {"spec": {"containers": [container]}}, {**labels, "spark-role": role})
            for name, role in roles.items()]


def pod(name: str, template: dict, labels: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": VISION, "labels": {**template.get("metadata", {}).get("labels", {}),
                                                                         **labels}},
            "spec": template["spec"]}


async def until(condition, what: str, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def cached(quota, names: set[str]) -> bool:
    """The cache holds exactly these of our pods (and the kubelet has run them)."""
    pods = {p["metadata"]["name"]: p for p in quota.live_pods() or []}
    return set(pods) == names and all((p.get("status") or {}).get("phase") == "Running" for p in pods.values())


def open_allocations(config: Config) -> dict[str, tuple]:
    ledger = Governance.of(config).stores()[1]
    return {a.key: (a.kind, a.user, a.gpu_type, a.gpus) for a in ledger.open_allocations()}


def intervals(config: Config) -> list[tuple]:
    with Governance.of(config).stores()[1].sessions() as session:
        return [(i.key, i.gpus, i.ended_at is None) for i in session.scalars(select(Interval).order_by(Interval.id))]


async def test_served_models_and_spark_jobs_are_counted_resized_and_ended(cluster):
    config = hub_config(grace=0.0)  # no reconcile in the background (60 s); vanished pods end at once
    alice = spawner("alice", config=config)
    await start(alice, A100x2)  # the spawner admits server:alice/ (2 × A100) and starts the cache
    quota = alice.quota
    for obj in ray_pods("iris", replicas=2) + spark_pods(SPARK_APP, executors=2):
        cluster.seed(obj)
    names = {"jupyter-alice", "iris-head", "iris-worker-0", "iris-worker-1",
             f"{SPARK_APP}-driver", f"{SPARK_APP}-exec-1", f"{SPARK_APP}-exec-2"}
    await until(lambda: cached(quota, names), "the pods in the hub's cache")

    report = await quota.usage.reconcile()
    assert report == {"opened": ["model:team-vision/iris", f"spark:team-vision/{SPARK_APP}"], "changed": [],
                      "closed": [], "refused": []}  # the server's pod: the spawner's interval, unchanged
    assert open_allocations(config) == {
        "server:alice/": ("server", "alice", "a100", 2),
        "model:team-vision/iris": ("model", "bob", "a100", 2),           # 2 replicas × 1 GPU
        f"spark:team-vision/{SPARK_APP}": ("spark", "carol", "t4", 3),  # driver + 2 executors
    }

    # The Ray autoscaler removes a replica: the interval is resized (a new one at 1 GPU).
    cluster.delete("pods", "iris-worker-1", VISION)
    await until(lambda: cached(quota, names - {"iris-worker-1"}), "the replica gone from the cache")
    assert (await quota.usage.reconcile())["changed"] == ["model:team-vision/iris"]
    assert open_allocations(config)["model:team-vision/iris"] == ("model", "bob", "a100", 1)

    # The Spark job ends (its pods succeed), the RayService is deleted (its pods go).
    for name in (f"{SPARK_APP}-driver", f"{SPARK_APP}-exec-1", f"{SPARK_APP}-exec-2"):
        cluster.patch_status("pods", name, {"phase": "Succeeded"}, namespace=VISION)
    for name in ("iris-head", "iris-worker-0"):
        cluster.delete("pods", name, VISION)
    await until(lambda: {p["metadata"]["name"] for p in quota.live_pods()} == names - {
        "iris-head", "iris-worker-0", "iris-worker-1"} and all(
        p["status"]["phase"] == "Succeeded" for p in quota.live_pods() if SPARK_APP in p["metadata"]["name"]),
        "the workloads' ends in the cache")
    assert (await quota.usage.reconcile())["closed"] == ["model:team-vision/iris", f"spark:team-vision/{SPARK_APP}"]
    assert open_allocations(config) == {"server:alice/": ("server", "alice", "a100", 2)}

    # One interval of the server, the spawner's; the model's two sizes; the job's one.
    assert intervals(config) == [("server:alice/", 2, True), ("model:team-vision/iris", 2, False),
                                 (f"spark:team-vision/{SPARK_APP}", 3, False), ("model:team-vision/iris", 1, False)]

    await alice.stop()  # the spawner closes its own interval
    assert open_allocations(config) == {}


async def test_the_hub_reconciles_on_its_own_and_leaves_cpu_servers_alone(cluster):
    config = hub_config(interval=0.1, grace=0.0)
    bob = spawner("bob", config=config)
    await start(bob, {"team": VISION, "profile": "cpu"})  # 0 GPUs: no pod in the GPU cache
    assert open_allocations(config) == {"server:bob/": ("server", "bob", None, 0)}
    for obj in ray_pods("llm", replicas=1):
        cluster.seed(obj)
    await until(lambda: "model:team-vision/llm" in open_allocations(config), "the background reconcile")
    await asyncio.sleep(0.3)  # a few more rounds: the CPU server's interval stays open
    assert open_allocations(config) == {"server:bob/": ("server", "bob", None, 0),
                                        "model:team-vision/llm": ("model", "bob", "a100", 1)}
    await bob.stop()


async def test_nothing_is_reconciled_while_the_cache_is_not_watching(cluster):
    config = hub_config(grace=0.0)
    alice = spawner("alice", config=config)
    await start(alice, A100x2)
    quota = alice.quota
    await until(lambda: cached(quota, {"jupyter-alice"}), "the server's pod in the cache")
    quota._pods.watch_task.cancel()  # the watch gave up (kubespawner's reflector stops after ~1 minute of errors)
    await until(lambda: quota._pods.watch_task.done(), "the watch to end")
    cluster.delete("pods", "jupyter-alice", VISION)
    assert await quota.usage.reconcile() is None  # a stale cache closes nothing
    assert open_allocations(config) == {"server:alice/": ("server", "alice", "a100", 2)}
