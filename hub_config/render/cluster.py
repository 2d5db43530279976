"""The one cluster-wide grant: the hub's quota cache reads ResourceQuotas and GPU pods of all namespaces.

hub_config/spawners/kube_quota.py keeps them with one list + watch each across all namespaces
(`list_resource_quota_for_all_namespaces`, `list_pod_for_all_namespaces`), which a namespaced Role
cannot allow. The grant is read-only and limited to list and watch of those two resources; creating
and deleting pods stays with the per-team Roles (teams.py).
"""

from __future__ import annotations

from typing import Any

from mlplatform_core.catalog import Catalog

from .common import HUB_SERVICE_ACCOUNT, labels

HUB_QUOTA_READER = "mlplatform-hub-quota-reader"


def hub_cluster_role() -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": HUB_QUOTA_READER, "labels": labels()},
            "rules": [{"apiGroups": [""], "resources": ["pods", "resourcequotas"], "verbs": ["list", "watch"]}]}


def hub_cluster_role_binding(catalog: Catalog, role: str = HUB_QUOTA_READER) -> dict[str, Any]:
    """The hub's service account bound to the ClusterRole `role` (named after it)."""
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": role, "labels": labels()},
            "subjects": [{"kind": "ServiceAccount", "name": HUB_SERVICE_ACCOUNT,
                          "namespace": catalog.kubernetes.hub_namespace}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}}


def cluster_objects(catalog: Catalog) -> list[dict[str, Any]]:
    return [hub_cluster_role(), hub_cluster_role_binding(catalog)]
