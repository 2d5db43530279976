"""Pre-pull DaemonSets, one per node pool, in the style of z2jh's continuous image puller
(jupyterhub/templates/image-puller/_helpers-daemonset.tpl): one no-op init container per image makes
the kubelet pull it, then a `pause` container keeps the pod (and so the images) on the node.

Pools come from the catalog: the CPU pool is every node that is no GPU type's node; each GPU type is
a pool of the nodes its node_selector picks, with its tolerations. A GPU image is pulled only onto
GPU nodes, and only onto the GPU types whose profiles use it.
"""

from __future__ import annotations

import re
from typing import Any

from mlplatform_core.catalog import Catalog

from .common import labels
from .images import split_image

PAUSE_IMAGE = "registry.k8s.io/pause:3.10.2"  # the one the z2jh chart's own puller uses
NOBODY = 65534
# z2jh's user pods tolerate these taints (scheduling.userPods.tolerations), so user nodes may carry them.
USER_NODE_TOLERATIONS = [
    {"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user", "effect": "NoSchedule"},
    {"key": "hub.jupyter.org_dedicated", "operator": "Equal", "value": "user", "effect": "NoSchedule"},
]
CONTAINER_SECURITY = {
    "runAsNonRoot": True, "runAsUser": NOBODY, "runAsGroup": NOBODY, "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
}
RESOURCES = {"requests": {"cpu": "1m", "memory": "8Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}}


def _unique(items):
    return list(dict.fromkeys(items))


def pools(catalog: Catalog) -> dict[str, dict[str, Any]]:
    """Pool name → images, nodeSelector, affinity and tolerations of its DaemonSet."""
    images = catalog.kubernetes.images
    cpu_images = [p.image for p in catalog.profiles.values() if not p.gpu] + [images.serving, images.spark]
    result = {"cpu": {"images": _unique(cpu_images), "node_selector": {}, "affinity": _off_gpu_nodes(catalog),
                      "tolerations": []}}
    for name, gpu in catalog.gpu_types.items():
        gpu_images = [p.image for p in catalog.profiles.values() if p.gpu and name in p.gpu.types]
        result[f"gpu-{name}"] = {
            "images": _unique(gpu_images + [images.serving_gpu]),
            "node_selector": dict(gpu.node_selector),
            "affinity": None,
            "tolerations": [t.model_dump(exclude_none=True) for t in gpu.tolerations],
        }
    return result


def _off_gpu_nodes(catalog: Catalog) -> dict[str, Any] | None:
    """Node affinity for "no GPU type's node". A node belongs to a GPU type when it has every label of
    its node_selector, so it belongs to none when, for each type, one of its labels differs: one
    selector term (they are ORed) per way of picking a label from each type."""
    terms: list[list[tuple[str, str]]] = [[]]
    for gpu in catalog.gpu_types.values():
        terms = [term + [item] for term in terms for item in gpu.node_selector.items()]
    selector_terms = []
    for term in terms:
        values: dict[str, list[str]] = {}
        for key, value in term:
            values.setdefault(key, []).append(value)
        expressions = [{"key": k, "operator": "NotIn", "values": _unique(v)} for k, v in values.items()]
        if expressions and {"matchExpressions": expressions} not in selector_terms:
            selector_terms.append({"matchExpressions": expressions})
    if not selector_terms:
        return None
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": selector_terms}}}


def _container_names(images: list[str]) -> list[str]:
    names: list[str] = []
    for image in images:
        base = re.sub(r"[^a-z0-9-]", "-", split_image(image)[0].rsplit("/", 1)[-1])[:40].strip("-")
        name, n = f"image-pull-{base}", 2
        while name in names:
            name, n = f"image-pull-{base}-{n}", n + 1
        names.append(name)
    return names


def daemonset(catalog: Catalog, pool: str, spec: dict[str, Any]) -> dict[str, Any]:
    select = {"app.kubernetes.io/name": "mlplatform-prepull", "mlplatform.io/node-pool": pool}
    pod: dict[str, Any] = {}
    if spec["node_selector"]:
        pod["nodeSelector"] = spec["node_selector"]
    if spec["affinity"]:
        pod["affinity"] = spec["affinity"]
    pod.update({
        "tolerations": spec["tolerations"] + USER_NODE_TOLERATIONS,
        "terminationGracePeriodSeconds": 0,
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": NOBODY, "runAsGroup": NOBODY,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": [
            {"name": name, "image": image, "command": ["/bin/sh", "-c", "echo Pulling complete"],
             "resources": RESOURCES, "securityContext": CONTAINER_SECURITY}
            for name, image in zip(_container_names(spec["images"]), spec["images"])
        ],
        "containers": [{"name": "pause", "image": PAUSE_IMAGE, "resources": RESOURCES,
                        "securityContext": CONTAINER_SECURITY}],
    })
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": f"mlplatform-prepull-{pool}", "namespace": catalog.kubernetes.hub_namespace,
                     "labels": labels(**select)},
        "spec": {
            "selector": {"matchLabels": select},
            # Like z2jh's puller: replace every pod at once, a puller serves nobody while it pulls.
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}},
            "template": {"metadata": {"labels": labels(**select)}, "spec": pod},
        },
    }


def prepull_daemonsets(catalog: Catalog) -> dict[str, dict[str, Any]]:
    """Pool name → its DaemonSet."""
    return {pool: daemonset(catalog, pool, spec) for pool, spec in pools(catalog).items()}
