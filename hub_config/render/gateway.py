"""Each team's rollout gateway on the cluster (mlplatform_service/gateway_pod.py: HAProxy and the evidence shipper),
in the hub's namespace, where no team's code runs and no team's RBAC reaches.

Pure functions, catalog in, plain dicts out:

- ConfigMap `mlplatform-gateway`: the catalog (the teams' copy: no secret references), mounted at CATALOG_PATH.
- ServiceAccount `mlplatform-gateway`: the gateways' identity, which writes the evidence under the platform's prefix
  (`kubernetes.gateway.service_account_annotations`: e.g. an IRSA role). Its token is mounted in the gateways' pods
  only (the account's own automount stays off): each follows its team's traffic map with it.
- Role and RoleBinding `mlplatform-gateway-traffic-reader`: that account may get, list and watch the teams' traffic
  maps (ConfigMaps `mlplatform-gateway-<team>-traffic`, names.gateway_traffic; a list or watch selecting one by
  `metadata.name` is authorized by its name) and nothing else. No team's account is bound here: a team cannot forge
  the map its gateway applies.
- Role and RoleBinding `mlplatform-hub-traffic-writer`: the hub's account (z2jh's `hub`: the platform service writes
  the maps, mlplatform_service/traffic_maps.py) may create ConfigMaps in the hub's namespace (RBAC cannot limit a
  create by name; the hub creates pods and Secrets there already) and get, update and patch the traffic maps only.
- per team, `mlplatform-gateway-<team>`: a Deployment (`kubernetes.gateway.replicas`, the hub's image running
  `mlplatform-gateway --team <team>`), its Service (GATEWAY_PORT: the team's endpoint URLs, serving/kubernetes.py)
  and a NetworkPolicy: only pods of the team's namespace reach its gateway, so no team calls another's models
  through it. The gateway reaches the team's Ray pods on Serve's port through the team's own policy
  (network.py, `mlplatform-gateway-to-serve`).
"""

from __future__ import annotations

from typing import Any

from mlplatform_core.catalog import Catalog
from mlplatform_core.contract import variable
from mlplatform_core.names import (CATALOG_FILE, CONFIG_DIR, GATEWAY_PORT, GATEWAY_PREFIX, GATEWAY_RUN_DIRECTORY,
                                   gateway_traffic)

from .common import CATALOG_PATH, HUB_SERVICE_ACCOUNT, catalog_document, labels
from .network import NAMESPACE_NAME, gateway_pods

GATEWAY = "mlplatform-gateway"  # the ConfigMap and the ServiceAccount
TRAFFIC_READER = "mlplatform-gateway-traffic-reader"  # the gateways' Role and RoleBinding
TRAFFIC_WRITER = "mlplatform-hub-traffic-writer"  # the hub's
RBAC = "rbac.authorization.k8s.io"
HUB_IMAGE_USER = 1000  # images/hub/Dockerfile's USER
SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


def _meta(catalog: Catalog, name: str, **extra: str) -> dict[str, Any]:
    return {"name": name, "namespace": catalog.kubernetes.hub_namespace, "labels": labels(**extra)}


def config_map(catalog: Catalog) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(catalog, GATEWAY),
            "data": {CATALOG_FILE: catalog_document(catalog, for_notebooks=True)}}


def service_account(catalog: Catalog) -> dict[str, Any]:
    meta = _meta(catalog, GATEWAY)
    if catalog.kubernetes.gateway.service_account_annotations:
        meta["annotations"] = dict(catalog.kubernetes.gateway.service_account_annotations)
    return {"apiVersion": "v1", "kind": "ServiceAccount", "automountServiceAccountToken": False, "metadata": meta}


def deployment(catalog: Catalog, team: str) -> dict[str, Any]:
    pods = gateway_pods(team)
    container = {
        "name": "gateway", "image": catalog.kubernetes.images.hub,
        "command": ["mlplatform-gateway", "--team", team],
        "env": [{"name": variable("catalog_path"), "value": CATALOG_PATH}],
        "ports": [{"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 5},
        "resources": RESOURCES, "securityContext": SECURITY,
        "volumeMounts": [{"name": "catalog", "mountPath": CONFIG_DIR, "readOnly": True},
                         {"name": "run", "mountPath": GATEWAY_RUN_DIRECTORY}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    pod = {
        "serviceAccountName": GATEWAY, "automountServiceAccountToken": True,  # it watches its traffic map
        "securityContext": {"runAsNonRoot": True, "runAsUser": HUB_IMAGE_USER, "runAsGroup": HUB_IMAGE_USER,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "catalog", "configMap": {"name": GATEWAY}},
                    {"name": "run", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": _meta(catalog, f"{GATEWAY_PREFIX}{team}", **pods),
            "spec": {"replicas": catalog.kubernetes.gateway.replicas, "selector": {"matchLabels": pods},
                     "template": {"metadata": {"labels": labels(**pods)}, "spec": pod}}}


def service(catalog: Catalog, team: str) -> dict[str, Any]:
    pods = gateway_pods(team)
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(catalog, f"{GATEWAY_PREFIX}{team}", **pods),
            "spec": {"selector": pods,
                     "ports": [{"name": "http", "port": GATEWAY_PORT, "targetPort": "http", "protocol": "TCP"}]}}


def team_only(catalog: Catalog, team: str) -> dict[str, Any]:
    """Only pods of the team's namespace reach its gateway (on its port)."""
    pods = gateway_pods(team)
    namespace = catalog.teams[team].namespace
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _meta(catalog, f"{GATEWAY_PREFIX}{team}", **pods),
            "spec": {"podSelector": {"matchLabels": pods}, "policyTypes": ["Ingress"],
                     "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME: namespace}}}],
                                  "ports": [{"protocol": "TCP", "port": GATEWAY_PORT}]}]}}


def _traffic_maps(catalog: Catalog) -> list[str]:
    return [gateway_traffic(team) for team in catalog.teams]


def traffic_reader(catalog: Catalog) -> dict[str, Any]:
    """The gateways read their traffic maps: gateway_pod.py lists and watches its team's by name."""
    return {"apiVersion": f"{RBAC}/v1", "kind": "Role", "metadata": _meta(catalog, TRAFFIC_READER),
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"],
                       "resourceNames": _traffic_maps(catalog)}]}


def traffic_writer(catalog: Catalog) -> dict[str, Any]:
    """The platform service (in the hub's pod) writes the traffic maps (traffic_maps.py: read, create, replace)."""
    return {"apiVersion": f"{RBAC}/v1", "kind": "Role", "metadata": _meta(catalog, TRAFFIC_WRITER),
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},  # no name to limit by
                      {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "update", "patch"],
                       "resourceNames": _traffic_maps(catalog)}]}


def role_binding(catalog: Catalog, role: str, account: str) -> dict[str, Any]:
    """`account` of the hub's namespace bound to the Role `role` there (the binding named after it)."""
    return {"apiVersion": f"{RBAC}/v1", "kind": "RoleBinding", "metadata": _meta(catalog, role),
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": catalog.kubernetes.hub_namespace}],
            "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": role}}


def gateway_objects(catalog: Catalog) -> list[dict[str, Any]]:
    """Everything `kubectl apply -f gateway/` creates: what all gateways share, then each team's."""
    objects = [config_map(catalog), service_account(catalog),
               traffic_reader(catalog), role_binding(catalog, TRAFFIC_READER, GATEWAY),
               traffic_writer(catalog), role_binding(catalog, TRAFFIC_WRITER, HUB_SERVICE_ACCOUNT)]
    for team in catalog.teams:
        objects += [deployment(catalog, team), service(catalog, team), team_only(catalog, team)]
    return objects
