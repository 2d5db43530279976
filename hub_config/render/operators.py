"""Values for the KubeRay and Spark operator charts: both watch the team namespaces only.

Every key exists in the chart's own values.yaml:
- KubeRay: ray-project/kuberay helm-chart/kuberay-operator/values.yaml (`singleNamespaceInstall`,
  `watchNamespace`, `crNamespacedRbacEnable`): with singleNamespaceInstall the chart makes a Role and
  RoleBinding in each watched namespace instead of a ClusterRole.
- Spark operator: kubeflow/spark-operator charts/spark-operator-chart/values.yaml (`spark.jobNamespaces`,
  `spark.serviceAccount.create/.name`, `spark.rbac.create`): the chart creates the drivers' service
  account, with a Role for running executors (pods, services, configmaps, PVCs), in each job namespace.
"""

from __future__ import annotations

from typing import Any

from mlplatform_core.catalog import Catalog


def team_namespaces(catalog: Catalog) -> list[str]:
    return list(dict.fromkeys(team.namespace for team in catalog.teams.values()))


# The operator of the KubeRay release whose CRDs the platform's RayServices are validated against
# (../shared/schemas/kuberay: v1.7.0's); the chart's own default tag is `nightly`.
KUBERAY_OPERATOR_TAG = "v1.7.0"


def kuberay_operator_values(catalog: Catalog) -> dict[str, Any]:
    return {
        "image": {"tag": KUBERAY_OPERATOR_TAG},
        "singleNamespaceInstall": True,
        "crNamespacedRbacEnable": True,
        "watchNamespace": team_namespaces(catalog),
    }


def spark_operator_values(catalog: Catalog) -> dict[str, Any]:
    return {
        "spark": {
            "jobNamespaces": team_namespaces(catalog),
            "serviceAccount": {"create": True, "name": catalog.kubernetes.spark_service_account},
            "rbac": {"create": True},
        },
    }
