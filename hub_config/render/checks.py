"""What a catalog needs beyond catalog validation before it can be rendered for a cluster.

Each problem names the catalog key, the value and what is allowed, like catalog errors do.
"""

from __future__ import annotations

import re
from urllib.parse import urlparse

from mlplatform_core.catalog import Catalog
from mlplatform_core.names import GATEWAY_PREFIX, MAX_TEAM_WITH_GATEWAY

from .images import catalog_images, image_problem

# Kubernetes qualified names: an optional DNS-subdomain prefix, then a name of at most 63 characters.
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
QUALIFIED_NAME = re.compile(rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_NAME}$")
LABEL_VALUE = re.compile(rf"^({_NAME})?$")


class RenderError(ValueError):
    """The catalog cannot be rendered; `problems` lists every problem, one line each. Nothing was written."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__(f"cannot render {path}:\n" + "\n".join(f"  - {p}" for p in problems))


def check_catalog(catalog: Catalog) -> list[str]:
    problems = []
    if catalog.platform.backend != "kubernetes":
        problems.append(f"platform.backend: {catalog.platform.backend!r} is not allowed here: render makes "
                        "manifests for a cluster; allowed: 'kubernetes'")
    url = urlparse(catalog.kubernetes.public_url)
    if url.scheme not in ("http", "https") or not url.hostname or url.path.strip("/"):
        problems.append(f"kubernetes.public_url: {catalog.kubernetes.public_url!r} is not allowed: use the hub's "
                        "address without a path, e.g. 'https://jupyter.example.org'")
    hub_namespace = catalog.kubernetes.hub_namespace
    owners: dict[str, str] = {}
    for name, team in catalog.teams.items():
        if team.namespace == hub_namespace:
            problems.append(f"teams.{name}.namespace: {team.namespace!r} is not allowed: it is the hub's namespace "
                            "(kubernetes.hub_namespace); give each team a namespace of its own")
        elif team.namespace in owners:
            problems.append(f"teams.{name}.namespace: {team.namespace!r} is not allowed: team {owners[team.namespace]} "
                            "has it already; each team gets a namespace (and quota) of its own")
        owners.setdefault(team.namespace, name)
        if len(name) > MAX_TEAM_WITH_GATEWAY:
            problems.append(f"teams.{name}: a name of {len(name)} characters is not allowed on a cluster: its rollout "
                            f"gateway is the Service {GATEWAY_PREFIX}<team>, a DNS label; allowed: at most "
                            f"{MAX_TEAM_WITH_GATEWAY} characters")
    for ref, keys in catalog_images(catalog).items():
        problem = image_problem(ref)
        if problem:
            problems.extend(f"{key}: {problem}" for key in keys)
    for name, gpu in catalog.gpu_types.items():
        if not QUALIFIED_NAME.match(gpu.resource):
            problems.append(f"gpu_types.{name}.resource: {gpu.resource!r} is not a Kubernetes resource name; "
                            "e.g. 'nvidia.com/gpu'")
        if not gpu.node_selector:
            problems.append(f"gpu_types.{name}.node_selector: empty is not allowed: render places the pre-pull "
                            "DaemonSet of this GPU type's images by it; give the node label of these GPUs, e.g. "
                            "{'nvidia.com/gpu.product': 'NVIDIA-A100-SXM4-80GB'}")
        for key, value in gpu.node_selector.items():
            if not QUALIFIED_NAME.match(key):
                problems.append(f"gpu_types.{name}.node_selector: {key!r} is not a label key; "
                                "e.g. 'nvidia.com/gpu.product'")
            if not LABEL_VALUE.match(value):
                problems.append(f"gpu_types.{name}.node_selector.{key}: {value!r} is not a label value: at most 63 "
                                "letters, digits, '-', '_' or '.', starting and ending with a letter or digit")
    return problems
