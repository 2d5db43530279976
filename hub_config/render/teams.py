"""A team's namespace and everything in it: quota, configuration, notebook identity, the hub's access,
Pod Security (pod_security.py) and NetworkPolicies (network.py).

Pure functions, catalog in, plain dicts out (like kubespawner/objects.py). RBAC is least privilege,
every verb listed, no wildcards, nothing cluster-wide:

- the notebooks' service account manages RayServices and SparkApplications in its own namespace; it
  may get pods/log there (`mlplatform.spark.logs()` reads the Spark driver's log) and list events
  (serving status shows why Ray pods do not start). It needs no pods themselves (`pods/log` is a
  subresource of its own in RBAC and does not include the pod), and reads no Secrets: each server's
  JupyterHub API token is in one (spawners/server_token.py). It cannot create pods or touch another
  namespace. tests/kubernetes/test_rbac_matrix.py checks all of this with the API server's rules.
- the hub's service account (z2jh's `hub`, in the hub namespace) gets what KubeSpawner uses in a team
  namespace: the rules of z2jh's own hub Role (jupyterhub/templates/hub/rbac.yaml), and get, list and
  patch of RayServices for the platform service it runs (a rollout's traffic, controlled by the platform:
  mlplatform_service/rollouts.py). What it watches across namespaces for the quota cache is in cluster.py.
"""

from __future__ import annotations

from typing import Any

from mlplatform_core.aws import aws_config_text
from mlplatform_core.catalog import Catalog, Team
from mlplatform_core.names import AWS_CONFIG_KEY, CATALOG_FILE, TEAM_CONFIG_MAP, TEAM_LABEL
from mlplatform_core.quantities import cpu_quantity, parse_cpu

from .common import HUB_SERVICE_ACCOUNT, catalog_document, labels
from .network import network_policies
from .pod_security import namespace_labels

QUOTA_NAME = "mlplatform-team"
NOTEBOOK_ROLE = "mlplatform-notebook"
HUB_ROLE = "mlplatform-hub"
# z2jh's hub NetworkPolicy admits pods from other namespaces carrying this label on both the pod and
# its namespace when hub.networkPolicy.interNamespaceAccessLabels is "accept" (jupyterhub.py sets it).
HUB_ACCESS_LABEL = {"hub.jupyter.org/network-access-hub": "true"}
MANAGE = ["get", "list", "watch", "create", "update", "patch", "delete"]


def _team_labels(name: str) -> dict[str, str]:
    return labels(**{TEAM_LABEL: name})


def _meta(name: str, team_name: str, team: Team) -> dict[str, Any]:
    return {"name": name, "namespace": team.namespace, "labels": _team_labels(team_name)}


def namespace(team_name: str, team: Team) -> dict[str, Any]:
    """The namespace, labelled for the hub's NetworkPolicy and for Pod Security Admission (Baseline
    enforced: pod_security.py)."""
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": team.namespace,
                         "labels": {**_team_labels(team_name), **HUB_ACCESS_LABEL, **namespace_labels()}}}


def quota_hard(catalog: Catalog, team: Team) -> dict[str, str]:
    """`requests.<resource>` per GPU resource: at most the team's total, and at most what its per-type
    quotas of the types sharing that resource add up to (an unlisted type: none)."""
    hard: dict[str, str] = {}
    per_resource: dict[str, int] = {}
    for gpu_name, gpu in catalog.gpu_types.items():
        per_resource[gpu.resource] = per_resource.get(gpu.resource, 0) + team.gpu_quota.per_type.get(gpu_name, 0)
    for resource, count in per_resource.items():
        hard[f"requests.{resource}"] = str(min(count, team.gpu_quota.total))
    if team.quota.cpu is not None:
        hard["requests.cpu"] = cpu_quantity(parse_cpu(team.quota.cpu))
    if team.quota.memory is not None:
        hard["requests.memory"] = str(team.quota.memory)
    return hard


def resource_quota(catalog: Catalog, team_name: str, team: Team) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": _meta(QUOTA_NAME, team_name, team),
            "spec": {"hard": quota_hard(catalog, team)}}


def config_map(catalog: Catalog, team_name: str, team: Team, document: str | None = None) -> dict[str, Any]:
    """What notebooks read from files (CatalogKubeSpawner mounts it): the catalog (MLPLATFORM_CATALOG;
    promotion gates) and the AWS config whose credential_process asks the hub (AWS_CONFIG_FILE)."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(TEAM_CONFIG_MAP, team_name, team),
            "data": {CATALOG_FILE: document or catalog_document(catalog, for_notebooks=True),
                     AWS_CONFIG_KEY: aws_config_text()}}


def notebook_service_account(catalog: Catalog, team_name: str, team: Team) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": _meta(catalog.kubernetes.service_account, team_name, team)}


def serving_service_account(catalog: Catalog, team_name: str, team: Team) -> dict[str, Any]:
    """RayService pods run as it: no Role binds it, they never call the Kubernetes API."""
    return {"apiVersion": "v1", "kind": "ServiceAccount", "automountServiceAccountToken": False,
            "metadata": _meta(catalog.kubernetes.serving_service_account, team_name, team)}


def notebook_role(team_name: str, team: Team) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": _meta(NOTEBOOK_ROLE, team_name, team),
            "rules": [
                {"apiGroups": ["ray.io"], "resources": ["rayservices"], "verbs": list(MANAGE)},
                {"apiGroups": ["sparkoperator.k8s.io"], "resources": ["sparkapplications"], "verbs": list(MANAGE)},
                {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},  # not pods: least privilege
                {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
            ]}


def hub_role(team_name: str, team: Team) -> dict[str, Any]:
    """z2jh's hub Role's rules, and RayService patches for the platform service's rollouts."""
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": _meta(HUB_ROLE, team_name, team),
            "rules": [
                {"apiGroups": [""], "resources": ["pods", "persistentvolumeclaims", "secrets", "services"],
                 "verbs": ["get", "watch", "list", "create", "delete"]},
                {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "watch", "list"]},
                # The platform service (in the hub pod) moves a rollout's traffic: the RayService's serveConfigV2.
                {"apiGroups": ["ray.io"], "resources": ["rayservices"], "verbs": ["get", "list", "patch"]},
            ]}


def role_binding(name: str, team_name: str, team: Team, *, account: str, account_namespace: str) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": _meta(name, team_name, team),
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": account_namespace}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}}


def team_objects(catalog: Catalog, team_name: str, document: str | None = None) -> list[dict[str, Any]]:
    """Everything `kubectl apply -f teams/<team>.yaml` creates, the Namespace first, its NetworkPolicies
    last. `document`: the catalog as `catalog_document` renders it, when the caller has it already (one
    dump for all teams)."""
    team = catalog.teams[team_name]
    k8s = catalog.kubernetes
    return [
        namespace(team_name, team),
        resource_quota(catalog, team_name, team),
        config_map(catalog, team_name, team, document),
        notebook_service_account(catalog, team_name, team),
        serving_service_account(catalog, team_name, team),
        notebook_role(team_name, team),
        role_binding(NOTEBOOK_ROLE, team_name, team, account=k8s.service_account, account_namespace=team.namespace),
        hub_role(team_name, team),
        role_binding(HUB_ROLE, team_name, team, account=HUB_SERVICE_ACCOUNT, account_namespace=k8s.hub_namespace),
        *network_policies(catalog, team_name),
    ]
