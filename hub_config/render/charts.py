"""The upstream charts rendered with the values `mlplatform render` writes, as `helm install` renders them.

Helm's own Go SDK does the work in-process (helm-python-sdk, the `render` extra; no helm binary, no
cluster): the same template engine, the same coalescing of values onto the chart's values.yaml. The
objects come back as the API server would store them: the release namespace filled in where a template
leaves it out (helm's client does that at install), none on cluster-scoped kinds; `chart_problems`
validates them like every object render writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .network import KUBERAY_NAMESPACE
from .validation import object_problems, values_problems

# The kinds the three charts make that have no namespace: helm installs them cluster-wide.
CLUSTER_SCOPED = frozenset({"ClusterRole", "ClusterRoleBinding", "PriorityClass", "Namespace",
                            "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
                            "CustomResourceDefinition", "StorageClass", "IngressClass"})


@dataclass(frozen=True)
class Release:
    """How the README installs a chart: `helm install <name> <chart> -n <namespace> -f <values>`."""
    chart: str
    name: str
    namespace: str | None  # None: the hub's (kubernetes.hub_namespace)

    @property
    def values(self) -> str:
        """The values file render writes for it, relative to its output folder."""
        return f"helm-values/{self.chart}.yaml"


RELEASES = {release.chart: release for release in (
    Release("jupyterhub", "jupyterhub", None),
    Release("kuberay-operator", "kuberay-operator", KUBERAY_NAMESPACE),
    Release("spark-operator", "spark-operator", "spark-operator"),
)}


def render_chart(chart_dir: str | Path, values: dict[str, Any], release: str, namespace: str) -> list[dict[str, Any]]:
    """Every object `helm install <release> <chart_dir> -n <namespace> -f values` creates, in template order."""
    import helm_python  # the `render` extra: only needed when a chart is given

    with helm_python.Chart.load(str(chart_dir)) as chart:
        manifests = chart.render(values, name=release, namespace=namespace, is_install=True)
    objects = []
    for path in sorted(manifests):
        if not path.endswith((".yaml", ".yml")):  # NOTES.txt
            continue
        for obj in yaml.safe_load_all(manifests[path]):
            if obj:
                if obj["kind"] in CLUSTER_SCOPED:  # a namespace given there is ignored by the API server
                    obj["metadata"].pop("namespace", None)
                else:
                    obj["metadata"].setdefault("namespace", namespace)
                objects.append(obj)
    return objects


def merged_values(chart_dir: str | Path, values: dict[str, Any]) -> dict[str, Any]:
    """The values a release of the chart uses: ours coalesced onto its values.yaml by Helm itself."""
    import helm_python

    with helm_python.Chart.load(str(chart_dir)) as chart:
        return chart.merge_values(values)


def chart_problems(chart_dir: str | Path, release: Release, values: dict[str, Any], hub_namespace: str) -> list[str]:
    """What would fail at `helm install`: the chart's values schema (z2jh ships it as values.schema.yaml,
    which helm itself does not read), a template that does not render, an object the API server refuses."""
    import helm_python

    source = f"{release.values} (chart {release.chart})"
    schema_file = Path(chart_dir) / "values.schema.yaml"
    problems = []
    try:
        if schema_file.is_file():
            problems += values_problems(source, merged_values(chart_dir, values), yaml.safe_load(schema_file.read_text()))
        objects = render_chart(chart_dir, values, release.name, release.namespace or hub_namespace)
    except helm_python.HelmError as e:
        return [*problems, f"{source}: helm cannot render the chart: {e}"]
    for obj in objects:
        problems += object_problems(source, obj)
    return problems
