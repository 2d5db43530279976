"""The cluster quota snapshot: ResourceQuota objects and labelled GPU pods → what the spawn form offers."""

from __future__ import annotations

import pytest
from mlplatform_core.catalog import load_catalog
from mlplatform_core.names import GPU_TYPE_LABEL
from mlplatform_core.quantities import gpu_requests

from hub_config.catalog import DEFAULT_CATALOG
from hub_config.profiles import Selection, SelectionError, select, spawn_choices
from hub_config.spawners.kube_quota import quota_snapshot


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(DEFAULT_CATALOG)


def resource_quota(namespace: str, hard: int, used: int, name: str = "gpu") -> dict:
    return {"metadata": {"namespace": namespace, "name": name},
            "spec": {"hard": {"requests.nvidia.com/gpu": str(hard)}},
            "status": {"hard": {"requests.nvidia.com/gpu": str(hard)}, "used": {"requests.nvidia.com/gpu": str(used)}}}


def gpu_pod(namespace: str, name: str, gpu_type: str, count: int, phase: str = "Running") -> dict:
    return {"metadata": {"namespace": namespace, "name": name, "labels": {GPU_TYPE_LABEL: gpu_type}},
            "spec": {"containers": [{"name": "notebook", "resources": {"limits": {"nvidia.com/gpu": str(count)},
                                                                       "requests": {"nvidia.com/gpu": str(count)}}}]},
            "status": {"phase": phase}}


def test_totals_come_from_the_resource_quota_and_types_from_labelled_pods(catalog):
    snapshot = quota_snapshot(
        catalog,
        [resource_quota("team-vision", hard=8, used=5), resource_quota("elsewhere", hard=1, used=1)],
        [gpu_pod("team-vision", "jupyter-alice", "a100", 2), gpu_pod("team-vision", "jupyter-bob", "t4", 1),
         gpu_pod("team-vision", "jupyter-old", "a100", 4, phase="Succeeded"),
         gpu_pod("kube-system", "other", "a100", 1)],
        {})
    assert snapshot.cluster_totals == {"team-vision": (8, 5)}  # Ray/Spark GPUs are in `used`, not in pods
    assert snapshot.used == {"team-vision": {"a100": 2, "t4": 1}}
    assert snapshot.total(catalog, "team-vision") == (8, 3)
    # No ResourceQuota in its namespace: the catalog's total, counted over pods.
    assert snapshot.total(catalog, "team-nlp") == (2, 2)


def test_spawn_form_shows_cluster_quota(catalog):
    snapshot = quota_snapshot(catalog, [resource_quota("team-vision", hard=4, used=3)],
                              [gpu_pod("team-vision", "jupyter-bob", "a100", 1)], {})
    [vision] = spawn_choices(catalog, ["team-vision"], snapshot)
    assert (vision.gpu_total, vision.gpu_free) == (4, 1)
    a100 = next(p for p in vision.profiles if p.slug == "gpu-a100")
    labels = {c.count: (c.label, c.reason) for c in a100.gpu_choices}
    assert labels[1] == ("A100 ×1 — 1 of 4 team-vision A100 free", None)
    assert labels[2][1] == "only 1 of 4 team-vision GPUs free in total"


def test_reservations_count_until_their_pod_is_cached(catalog):
    pending = {"team-vision/jupyter-carol": Selection("team-vision", "gpu-a100", "a100", 2)}
    quota = resource_quota("team-vision", hard=4, used=1)
    snapshot = quota_snapshot(catalog, [quota], [gpu_pod("team-vision", "jupyter-bob", "a100", 1)], pending)
    assert snapshot.used == {"team-vision": {"a100": 3}}
    assert snapshot.cluster_totals == {"team-vision": (4, 3)}
    with pytest.raises(SelectionError) as refused:
        select(catalog, ["team-vision"], snapshot, {"team": "team-vision", "profile": "gpu-a100",
                                                    "gpu_type": "a100", "gpu_count": 2})
    assert refused.value.status == 409
    assert str(refused.value) == "cannot start with 2 A100 GPUs: only 1 of 4 team-vision A100 free; counts you can take now: 1"
    # Once the pod is in the cache (and in the quota's `used`), it is counted once, not twice.
    seen = quota_snapshot(catalog, [resource_quota("team-vision", hard=4, used=3)],
                          [gpu_pod("team-vision", "jupyter-bob", "a100", 1),
                           gpu_pod("team-vision", "jupyter-carol", "a100", 2)], pending)
    assert seen.used == {"team-vision": {"a100": 3}}
    assert seen.cluster_totals == {"team-vision": (4, 3)}


def test_the_tightest_of_several_quotas_wins(catalog):
    snapshot = quota_snapshot(catalog, [resource_quota("team-nlp", 8, 1, "a"), resource_quota("team-nlp", 4, 3, "b")],
                              [], {})
    assert snapshot.total(catalog, "team-nlp") == (4, 1)


def test_gpu_requests_reads_requests_or_limits():
    pod = {"spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": "2", "cpu": "4"}}},
                                   {"resources": {"requests": {"nvidia.com/gpu": 1}}}, {}]}}
    assert gpu_requests(pod, {"nvidia.com/gpu"}) == 3
    assert gpu_requests(pod, {"amd.com/gpu"}) == 0


def test_the_hubs_start_finds_the_api_settings_its_spawners_will_have():
    """kube_quota.configured: the value a spawner of the class would take from the hub's config (the most
    derived class's section wins), so the cache the hub starts is the one its spawners use."""
    from traitlets.config import Config

    from hub_config.spawners.kube_quota import API_SETTINGS, configured
    from hub_config.spawners.kubernetes import CatalogKubeSpawner

    assert [configured(CatalogKubeSpawner, Config(), name) for name in API_SETTINGS] == ["", "", None]
    config = Config({"KubeSpawner": {"k8s_api_host": "https://a:6443", "k8s_api_verify_ssl": False},
                     "CatalogKubeSpawner": {"k8s_api_host": "https://b:6443"}})
    assert [configured(CatalogKubeSpawner, config, name) for name in API_SETTINGS] == ["https://b:6443", "", False]
    only_kubespawner = Config({"KubeSpawner": {"k8s_api_host": "https://a:6443"}})
    assert configured(CatalogKubeSpawner, only_kubespawner, "k8s_api_host") == "https://a:6443"
    assert "CatalogKubeSpawner" not in only_kubespawner  # reading the config added no section to it
