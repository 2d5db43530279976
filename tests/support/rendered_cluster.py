"""The cluster as `mlplatform render` (for helm-values/platform.yaml) and the Spark operator chart leave it,
loaded into the fake API server so that its RBAC authorizer answers for the real Roles and bindings.

The Spark operator chart (../shared/charts/spark-operator, templates/spark/) puts a ServiceAccount, a
Role and a RoleBinding into each `spark.jobNamespaces` entry; the drivers run as that account. No Helm
is installed here, so the Role's rules are read from the chart's template itself (its `rules:` block is
plain YAML) and its names come from our values (spark_operator_values), as the chart's helpers make them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from mlplatform_core.catalog import Catalog, load_catalog

from hub_config.render.build import documents
from hub_config.render.operators import spark_operator_values

from .fake_kube import FakeKube
from .fake_kube import resources

ROOT = Path(__file__).resolve().parents[2]
CATALOG = load_catalog(ROOT / "helm-values" / "platform.yaml", environ={})
SPARK_CHART = ROOT.parent / "shared" / "charts" / "spark-operator"
# What Helm puts into the chart's `spark-operator.labels` for release "spark-operator" of chart 2.5.0-rc.0.
SPARK_CHART_LABELS = {"helm.sh/chart": "spark-operator-2.5.0-rc.0", "app.kubernetes.io/name": "spark-operator",
                      "app.kubernetes.io/instance": "spark-operator", "app.kubernetes.io/version": "2.5.0-rc.0",
                      "app.kubernetes.io/managed-by": "Helm"}


def rendered_objects(catalog: Catalog = CATALOG) -> list[dict[str, Any]]:
    """Every Kubernetes object `mlplatform render` writes (cluster/, teams/, prepull/), in file order."""
    return [obj for path, (_, objs) in documents(catalog).items() if not path.startswith("helm-values/")
            for obj in objs]


def spark_chart_rules() -> list[dict[str, Any]]:
    """The rules of the chart's Role for the Spark service account, as written in templates/spark/rbac.yaml."""
    text = (SPARK_CHART / "templates" / "spark" / "rbac.yaml").read_text()
    block = text.split("\nrules:\n", 1)[1].split("\n---", 1)[0]
    if "{{" in block:
        raise AssertionError(f"the chart's Spark Role rules are templated now; render the chart instead:\n{block}")
    return yaml.safe_load(block)


def spark_chart_objects(catalog: Catalog = CATALOG) -> list[dict[str, Any]]:
    """The chart's ServiceAccount, Role and RoleBinding (all named after the account) per job namespace."""
    spark = spark_operator_values(catalog)["spark"]
    assert spark["serviceAccount"]["create"] and spark["rbac"]["create"], spark
    name = spark["serviceAccount"]["name"]
    objects = []
    for namespace in spark["jobNamespaces"]:
        meta = {"name": name, "namespace": namespace, "labels": dict(SPARK_CHART_LABELS)}
        objects += [
            {"apiVersion": "v1", "kind": "ServiceAccount", "automountServiceAccountToken": True, "metadata": meta},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
             "rules": spark_chart_rules()},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
             "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}},
        ]
    return objects


def load_rendered_cluster(fake: FakeKube, catalog: Catalog = CATALOG) -> list[dict[str, Any]]:
    """Create (validated, as `kubectl apply` would) every rendered object of a kind the fake serves, then the
    Spark chart's; the hub's namespace too. Returns what was skipped (NetworkPolicies, DaemonSets)."""
    fake.namespace(catalog.kubernetes.hub_namespace)
    skipped = []
    for obj in rendered_objects(catalog) + spark_chart_objects(catalog):
        try:
            resources.for_object(obj)
        except ValueError:
            skipped.append(obj)
            continue
        fake.seed(obj)
    return skipped
