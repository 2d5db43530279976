"""The GPU pods the hub's cache holds → the allocations the usage ledger records (pure, pod dicts)."""

from __future__ import annotations

import pytest
from mlplatform_core.catalog import load_catalog
from mlplatform_core.names import (
    APP_ID_LABEL,
    APP_NAME_LABEL,
    COMPONENT_LABEL,
    GPU_TYPE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    PROFILE_LABEL,
    SERVING_COMPONENT,
    TEAM_LABEL,
    USER_LABEL,
)

from hub_config.catalog import DEFAULT_CATALOG
from hub_config.spawners.kube_usage import observed_allocations


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(DEFAULT_CATALOG)


def pod(name: str, labels: dict, gpus: int = 0, *, namespace: str = "team-vision", phase: str = "Running",
        annotations: dict | None = None, **metadata) -> dict:
    limits = {"cpu": "1", **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels,
                         "annotations": annotations or {}, **metadata},
            "spec": {"containers": [{"name": "main", "resources": {"limits": limits}}]},
            "status": {"phase": phase}}


def notebook(user: str, server: str = "", gpus: int = 2, gpu_type: str = "a100", **kw) -> dict:
    """As KubeSpawner makes it: escaped names in labels, exact ones in annotations (servername only when named)."""
    labels = {"component": "singleuser-server", "app.kubernetes.io/component": "singleuser-server",
              "hub.jupyter.org/username": user.replace("@", "-40"), TEAM_LABEL: "team-vision",
              USER_LABEL: user.replace("@", "-"), PROFILE_LABEL: f"gpu-{gpu_type}", GPU_TYPE_LABEL: gpu_type}
    annotations = {"hub.jupyter.org/username": user, **({"hub.jupyter.org/servername": server} if server else {})}
    return pod(f"jupyter-{user}", labels, gpus, annotations=annotations, **kw)


def ray(app: str, name: str, gpus: int, gpu_type: str = "a100", user: str = "bob", **kw) -> dict:
    """A pod of a RayService the ServeModel widget deployed (its head: 0 GPUs, labelled all the same)."""
    labels = {"app.kubernetes.io/name": app, COMPONENT_LABEL: SERVING_COMPONENT, MANAGED_BY_LABEL: MANAGED_BY,
              TEAM_LABEL: "team-vision", USER_LABEL: user, GPU_TYPE_LABEL: gpu_type, "ray.io/cluster": f"{app}-x7k2p"}
    return pod(name, labels, gpus, **kw)


def spark(app_id: str, role: str, gpus: int, gpu_type: str = "t4", **kw) -> dict:
    labels = {MANAGED_BY_LABEL: MANAGED_BY, APP_ID_LABEL: app_id, APP_NAME_LABEL: app_id.rsplit("-", 1)[0],
              TEAM_LABEL: "team-vision", USER_LABEL: "carol", GPU_TYPE_LABEL: gpu_type, "spark-role": role,
              "sparkoperator.k8s.io/app-name": app_id}
    return pod(f"{app_id}-{role}", labels, gpus, **kw)


def test_servers_models_and_spark_jobs_become_one_allocation_each(catalog):
    pods = [notebook("alice"), notebook("dana@example.org", "big", gpus=1, gpu_type="t4"),
            ray("iris", "iris-head", 0), ray("iris", "iris-worker-1", 2), ray("iris", "iris-worker-2", 2),
            spark("etl-3f9a1c2e", "driver", 1), spark("etl-3f9a1c2e", "exec-1", 1), spark("etl-3f9a1c2e", "exec-2", 1)]
    assert observed_allocations(catalog, pods) == {
        "server:alice/": {"kind": "server", "team": "team-vision", "user": "alice", "profile": "gpu-a100",
                          "model": None, "gpu_type": "a100", "gpus": 2},
        # The exact names (annotations), not the escaped labels: the key the spawner admitted.
        "server:dana@example.org/big": {"kind": "server", "team": "team-vision", "user": "dana@example.org",
                                        "profile": "gpu-t4", "model": None, "gpu_type": "t4", "gpus": 1},
        "model:team-vision/iris": {"kind": "model", "team": "team-vision", "user": "bob", "profile": None,
                                   "model": "iris", "gpu_type": "a100", "gpus": 4},  # 2 replicas × 2 GPUs
        "spark:team-vision/etl-3f9a1c2e": {"kind": "spark", "team": "team-vision", "user": "carol", "profile": None,
                                           "model": None, "gpu_type": "t4", "gpus": 3},  # driver + 2 executors
    }


def test_pods_that_hold_nothing_or_are_not_a_teams_are_left_out(catalog):
    pods = [
        ray("iris", "iris-worker-1", 2, phase="Succeeded"), spark("etl-1", "driver", 1, phase="Failed"),
        ray("iris", "iris-worker-2", 2, deletionTimestamp="2026-12-07T10:00:00Z"),
        ray("elsewhere", "w", 2, namespace="default"),          # not a team namespace
        ray("odd", "w", 2, gpu_type="h100"),                    # not a GPU type of the catalog
        ray("cpu", "w", 0),                                     # labelled, but holds no GPU
        pod("mystery", {GPU_TYPE_LABEL: "a100"}, 1),            # no workload the ledger knows
        notebook("erin", phase="Pending"),                      # pending: the quota counts it, so do we
    ]
    assert list(observed_allocations(catalog, pods)) == ["server:erin/"]


def test_the_team_is_the_namespaces_not_a_label(catalog):
    [(key, fields)] = observed_allocations(catalog, [ray("iris", "w", 1, namespace="team-nlp")]).items()
    assert (key, fields["team"]) == ("model:team-nlp/iris", "team-nlp")


def test_workloads_made_outside_the_widgets_are_named_by_their_operators_labels(catalog):
    kuberay = pod("llm-raycluster-abcde-worker-1", {GPU_TYPE_LABEL: "a100", "ray.io/originated-from-crd": "RayService",
                                                    "ray.io/originated-from-cr-name": "llm"}, 4)
    submitted = pod("pi-driver", {GPU_TYPE_LABEL: "t4", "spark-role": "driver", "spark-app-selector": "spark-1a2b"}, 1)
    ray_job = pod("job-worker", {GPU_TYPE_LABEL: "a100", "ray.io/originated-from-crd": "RayJob",
                                 "ray.io/originated-from-cr-name": "job"}, 1)  # not a served model
    observed = observed_allocations(catalog, [kuberay, submitted, ray_job])
    assert {key: (f["kind"], f["user"], f["gpus"]) for key, f in observed.items()} == {
        "model:team-vision/llm": ("model", "(unlabelled)", 4),
        "spark:team-vision/spark-1a2b": ("spark", "(unlabelled)", 1)}


def test_an_application_on_two_gpu_types_is_priced_at_the_type_holding_most(catalog):
    pods = [ray("iris", "old-1", 1, gpu_type="t4"), ray("iris", "new-1", 2), ray("iris", "new-2", 2)]
    fields = observed_allocations(catalog, pods)["model:team-vision/iris"]
    assert (fields["gpu_type"], fields["gpus"]) == ("a100", 5)
