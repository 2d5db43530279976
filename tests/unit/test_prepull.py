"""Pre-pull DaemonSets: every profile image is pulled, GPU images only onto the nodes of their GPU type,
CPU images only onto nodes of no GPU type; the pods are no-ops that cannot do harm."""

import copy
from pathlib import Path

import pytest
import yaml

from mlplatform_core.catalog import load_catalog, parse_catalog
from hub_config.catalog import DEFAULT_CATALOG
from hub_config.render.prepull import prepull_daemonsets

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = yaml.safe_load((ROOT / "helm-values" / "platform.yaml").read_text())
LOCAL = yaml.safe_load(DEFAULT_CATALOG.read_text())


def catalog_of(data):
    return parse_catalog(data, environ={})


def pulled(daemonset) -> list[str]:
    return [c["image"] for c in daemonset["spec"]["template"]["spec"]["initContainers"]]


def runs_on(daemonset, node_labels: dict[str, str]) -> bool:
    """Would the scheduler place this DaemonSet's pod on a node with these labels (taints aside)?"""
    pod = daemonset["spec"]["template"]["spec"]
    if any(node_labels.get(k) != v for k, v in pod.get("nodeSelector", {}).items()):
        return False
    required = pod.get("affinity", {}).get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    if not required:
        return True

    def matches(expression):
        assert expression["operator"] == "NotIn"
        return node_labels.get(expression["key"]) not in expression["values"]

    return any(all(matches(e) for e in term["matchExpressions"]) for term in required["nodeSelectorTerms"])


@pytest.mark.parametrize("data", [EXAMPLE, LOCAL], ids=["example", "local"])
def test_every_profile_image_is_pulled_and_gpu_images_only_onto_their_gpu_nodes(data):
    catalog = catalog_of(data)
    daemonsets = prepull_daemonsets(catalog)
    assert set(daemonsets) == {"cpu"} | {f"gpu-{name}" for name in catalog.gpu_types}
    everywhere = {image for ds in daemonsets.values() for image in pulled(ds)}
    assert {p.image for p in catalog.profiles.values()} <= everywhere
    cpu_node = {"kubernetes.io/os": "linux"}
    images = catalog.kubernetes.images
    for gpu_name, gpu in catalog.gpu_types.items():
        ds = daemonsets[f"gpu-{gpu_name}"]
        offering = {p.image for p in catalog.profiles.values() if p.gpu and gpu_name in p.gpu.types}
        assert set(pulled(ds)) == offering | {images.serving_gpu}
        assert runs_on(ds, {**cpu_node, **gpu.node_selector}) and not runs_on(ds, cpu_node)
        assert not runs_on(daemonsets["cpu"], {**cpu_node, **gpu.node_selector})
        assert ds["spec"]["template"]["spec"]["tolerations"][:len(gpu.tolerations)] == \
            [t.model_dump(exclude_none=True) for t in gpu.tolerations]
    assert runs_on(daemonsets["cpu"], cpu_node)
    assert set(pulled(daemonsets["cpu"])) == {p.image for p in catalog.profiles.values() if not p.gpu} | {
        images.serving, images.spark}
    assert images.serving_gpu not in pulled(daemonsets["cpu"])


def test_cpu_pool_avoids_gpu_types_with_several_labels():
    data = copy.deepcopy(EXAMPLE)
    data["gpu_types"]["a100"]["node_selector"] = {"pool": "gpu", "nvidia.com/gpu.product": "A100"}
    data["gpu_types"]["t4"]["node_selector"] = {"pool": "gpu", "nvidia.com/gpu.product": "T4"}
    cpu = prepull_daemonsets(catalog_of(data))["cpu"]
    required = {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "pool", "operator": "NotIn", "values": ["gpu"]}]},
            {"matchExpressions": [{"key": "pool", "operator": "NotIn", "values": ["gpu"]},
                                  {"key": "nvidia.com/gpu.product", "operator": "NotIn", "values": ["T4"]}]},
            {"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "NotIn", "values": ["A100"]},
                                  {"key": "pool", "operator": "NotIn", "values": ["gpu"]}]},
            {"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "NotIn", "values": ["A100", "T4"]}]},
    ]}
    assert cpu["spec"]["template"]["spec"]["affinity"] == {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}
    assert runs_on(cpu, {"pool": "cpu"}) and runs_on(cpu, {"pool": "gpu", "nvidia.com/gpu.product": "H100"})
    assert not runs_on(cpu, {"pool": "gpu", "nvidia.com/gpu.product": "A100"})
    assert not runs_on(cpu, {"pool": "gpu", "nvidia.com/gpu.product": "T4"})


def test_without_gpu_types_one_cpu_pool_runs_everywhere():
    data = copy.deepcopy(EXAMPLE)
    del data["gpu_types"]
    for team in data["teams"].values():
        team["gpu_quota"] = {"total": 0}
    data["profiles"] = {"cpu": data["profiles"]["cpu"]}
    daemonsets = prepull_daemonsets(catalog_of(data))
    assert list(daemonsets) == ["cpu"]
    assert "affinity" not in daemonsets["cpu"]["spec"]["template"]["spec"]
    assert pulled(daemonsets["cpu"]) == ["registry.example.org/mlplatform/notebook:0.1.0",
                                         "registry.example.org/mlplatform/ray:0.1.0",
                                         "registry.example.org/mlplatform/spark:0.1.0"]


def test_pods_pull_and_pause_as_nobody_without_privileges():
    for ds in prepull_daemonsets(load_catalog(ROOT / "helm-values" / "platform.yaml", environ={})).values():
        pod = ds["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 65534
        assert [c["name"] for c in pod["containers"]] == ["pause"]
        assert pod["containers"][0]["image"] == "registry.k8s.io/pause:3.10.2"
        for container in pod["initContainers"] + pod["containers"]:
            security = container["securityContext"]
            assert security["capabilities"] == {"drop": ["ALL"]} and security["allowPrivilegeEscalation"] is False
            assert security["runAsNonRoot"] is True and security["runAsUser"] == 65534
            assert container["resources"]["limits"] == {"cpu": "100m", "memory": "64Mi"}
        for init in pod["initContainers"]:
            assert init["command"] == ["/bin/sh", "-c", "echo Pulling complete"]
        names = [c["name"] for c in pod["initContainers"]]
        assert len(set(names)) == len(names)


def test_init_container_names_stay_unique_for_images_with_the_same_name():
    data = copy.deepcopy(EXAMPLE)
    data["profiles"]["cpu"]["image"] = "registry.example.org/team-a/ray:1.0"
    cpu = prepull_daemonsets(catalog_of(data))["cpu"]
    assert [(c["name"], c["image"]) for c in cpu["spec"]["template"]["spec"]["initContainers"]] == [
        ("image-pull-ray", "registry.example.org/team-a/ray:1.0"),
        ("image-pull-ray-2", "registry.example.org/mlplatform/ray:0.1.0"),
        ("image-pull-spark", "registry.example.org/mlplatform/spark:0.1.0"),
    ]
