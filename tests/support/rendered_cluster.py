"""The cluster as `mlplatform render` (for helm-values/platform.yaml) and the three charts installed with its
values leave it, loaded into the fake API server so that its RBAC authorizer answers for the real Roles and
bindings: the charts of ../shared/charts are rendered by Helm's SDK (hub_config/render/charts.py), as
`helm install` would, so the Spark drivers' Role is the chart's own and the hub's Role is z2jh's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlplatform_core.catalog import Catalog, load_catalog

from hub_config.render.build import documents
from hub_config.render.charts import RELEASES, render_chart

from .fake_kube import FakeKube
from .fake_kube import resources

ROOT = Path(__file__).resolve().parents[2]
CATALOG = load_catalog(ROOT / "helm-values" / "platform.yaml", environ={})
CHARTS = {chart: ROOT.parent / "shared" / "charts" / chart for chart in RELEASES}


def rendered_objects(catalog: Catalog = CATALOG) -> list[dict[str, Any]]:
    """Every Kubernetes object `mlplatform render` writes (cluster/, teams/, prepull/), in file order."""
    return [obj for path, (_, objs) in documents(catalog).items() if not path.startswith("helm-values/")
            for obj in objs]


def chart_objects(catalog: Catalog = CATALOG) -> dict[str, list[dict[str, Any]]]:
    """Chart name → every object `helm install` of it with the rendered values creates (README's releases)."""
    docs = documents(catalog)
    return {chart: render_chart(CHARTS[chart], docs[release.values][1][0], release.name,
                                release.namespace or catalog.kubernetes.hub_namespace)
            for chart, release in RELEASES.items()}


def load_rendered_cluster(fake: FakeKube, catalog: Catalog = CATALOG,
                          charts: dict[str, list[dict[str, Any]]] | None = None) -> list[dict[str, Any]]:
    """Create (validated, as `kubectl apply` and `helm install` would) every rendered object of a kind the fake
    serves, then the charts' (`charts`: chart_objects(catalog) when not given); the releases' namespaces too.
    Returns what was skipped (NetworkPolicies, Deployments, ...; the operators' own webhook configurations:
    the operators do not run here, the tests play them)."""
    charts = chart_objects(catalog) if charts is None else charts
    fake.namespace(catalog.kubernetes.hub_namespace)
    for release in RELEASES.values():
        if release.namespace:
            fake.namespace(release.namespace)
    skipped = []
    chart_made = [obj for objects in charts.values() for obj in objects]
    for obj in rendered_objects(catalog) + chart_made:
        if obj in chart_made and obj["kind"].endswith("WebhookConfiguration"):
            skipped.append(obj)
            continue
        try:
            resources.for_object(obj)
        except ValueError:
            skipped.append(obj)
            continue
        fake.seed(obj)
    return skipped
