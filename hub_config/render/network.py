"""The NetworkPolicies of a team namespace: who may connect to its pods, and the cloud metadata block.

Pure functions, catalog in, plain dicts out. Kubernetes adds up the policies selecting a pod (a
connection is allowed when any of them allows it), so each one below opens one path:

- `mlplatform-same-namespace` (every pod): ingress only from pods of the same namespace. Pods of
  other teams, of the hub's namespace and of anything else in the cluster are refused; teammates'
  notebooks can reach the team's model endpoints (`<name>-serve-svc:8000`), Ray and Spark pods reach
  each other. The Ray dashboard (job submission) and GCS of the team's RayServices are reachable
  from this namespace only, and ask for Ray's token besides (serving/spec.py, `authOptions`).
- `mlplatform-hub-to-notebooks` (notebook pods, KubeSpawner's `component: singleuser-server`):
  ingress on the notebook port from the hub and the proxy of the hub namespace, the pods z2jh labels
  `hub.jupyter.org/network-access-singleuser: "true"` (the chart's own policy for user pods admits
  the same, but only in its release namespace).
- `mlplatform-kuberay-to-ray-heads` (Ray head pods): ingress on the dashboard port from the KubeRay
  operator, which reads and updates Serve applications there (with the cluster's token).
- `mlplatform-gateway-to-serve` (Ray pods): ingress on Serve's port from the team's rollout gateway, the pods
  gateway.py makes in the hub namespace (its own policy there admits the team's namespace only).
- `mlplatform-egress` (every pod): egress anywhere but the cloud metadata server (169.254.169.254 and
  AWS's IPv6 fd00:ec2::254), whose node credentials a pod must never get. Anywhere includes the hub
  pod's ports, the hub API (8081) and the platform service (jupyterhub.py, PLATFORM_SERVICE_PORT); which
  pods get in there is for the hub's own policy to say (z2jh's, with the ingress jupyterhub.py adds).
  z2jh's own block (an iptables init container, privileged) covers only its release namespace and
  would break the namespace's Pod Security, so the chart's is switched off (jupyterhub.py) and this
  one applies to every pod of the team. Pods are allowed by a namespace selector besides the IP
  blocks, since some network plugins (Cilium) do not match pod addresses with `ipBlock`.

Not covered: the kubelet's probes and other traffic from the node itself (network plugins let it
through), and anything reaching a team's model from outside its namespace but its gateway (an ingress for
model endpoints would need a policy of its own).
"""

from __future__ import annotations

from typing import Any

from mlplatform_core.catalog import Catalog, Team
from mlplatform_core.names import COMPONENT_LABEL, GATEWAY_COMPONENT, SERVE_PORT, TEAM_LABEL

from .common import labels

# Where README's "Deploy on Kubernetes" installs the KubeRay operator (`helm install ... -n kuberay`),
# and the label its chart gives the operator's pods.
KUBERAY_NAMESPACE = "kuberay"
KUBERAY_OPERATOR = {"app.kubernetes.io/name": "kuberay-operator"}
RAY_HEAD = {"ray.io/node-type": "head"}  # KubeRay's label of head pods
RAY_DASHBOARD_PORT = 8265
RAY_NODE = {"ray.io/is-ray-node": "yes"}  # KubeRay's label of every pod of a Ray cluster
# KubeSpawner labels user pods `component: singleuser-server` and names their port `notebook-port`;
# z2jh labels the hub and proxy pods, which route to user servers, with SINGLEUSER_ACCESS.
NOTEBOOK_POD = {"component": "singleuser-server"}
NOTEBOOK_PORT = "notebook-port"
# z2jh's hub and proxy pods (besides its `app` and `release` labels).
HUB_POD = {"component": "hub"}
PROXY_POD = {"component": "proxy"}
SINGLEUSER_ACCESS = {"hub.jupyter.org/network-access-singleuser": "true"}
# The well-known label the API server sets on every namespace (Kubernetes 1.21+): its name.
NAMESPACE_NAME = "kubernetes.io/metadata.name"
CLOUD_METADATA = {"0.0.0.0/0": ["169.254.169.254/32"], "::/0": ["fd00:ec2::254/128"]}


def _policy(name: str, team_name: str, team: Team, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": team.namespace, "labels": labels(**{TEAM_LABEL: team_name})},
            "spec": spec}


def pods_of(namespace: str, pod_labels: dict[str, str]) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME: namespace}},
            "podSelector": {"matchLabels": dict(pod_labels)}}


def same_namespace_ingress(team_name: str, team: Team) -> dict[str, Any]:
    return _policy("mlplatform-same-namespace", team_name, team, {
        "podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [{"podSelector": {}}]}]})


def hub_to_notebooks(catalog: Catalog, team_name: str, team: Team) -> dict[str, Any]:
    return _policy("mlplatform-hub-to-notebooks", team_name, team, {
        "podSelector": {"matchLabels": dict(NOTEBOOK_POD)}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [pods_of(catalog.kubernetes.hub_namespace, SINGLEUSER_ACCESS)],
                     "ports": [{"protocol": "TCP", "port": NOTEBOOK_PORT}]}]})


def kuberay_to_ray_heads(team_name: str, team: Team) -> dict[str, Any]:
    return _policy("mlplatform-kuberay-to-ray-heads", team_name, team, {
        "podSelector": {"matchLabels": dict(RAY_HEAD)}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [pods_of(KUBERAY_NAMESPACE, KUBERAY_OPERATOR)],
                     "ports": [{"protocol": "TCP", "port": RAY_DASHBOARD_PORT}]}]})


def gateway_pods(team_name: str) -> dict[str, str]:
    """The labels of a team's rollout gateway pods (gateway.py: its Deployment, Service and policy select them)."""
    return {COMPONENT_LABEL: GATEWAY_COMPONENT, TEAM_LABEL: team_name}


def gateway_to_serve(catalog: Catalog, team_name: str, team: Team) -> dict[str, Any]:
    return _policy("mlplatform-gateway-to-serve", team_name, team, {
        "podSelector": {"matchLabels": dict(RAY_NODE)}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [pods_of(catalog.kubernetes.hub_namespace, gateway_pods(team_name))],
                     "ports": [{"protocol": "TCP", "port": SERVE_PORT}]}]})


def egress_without_cloud_metadata(team_name: str, team: Team) -> dict[str, Any]:
    blocks = [{"ipBlock": {"cidr": cidr, "except": list(excluded)}} for cidr, excluded in CLOUD_METADATA.items()]
    return _policy("mlplatform-egress", team_name, team, {
        "podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"namespaceSelector": {}}]}, {"to": blocks}]})


def network_policies(catalog: Catalog, team_name: str) -> list[dict[str, Any]]:
    team = catalog.teams[team_name]
    return [same_namespace_ingress(team_name, team), hub_to_notebooks(catalog, team_name, team),
            kuberay_to_ray_heads(team_name, team), gateway_to_serve(catalog, team_name, team),
            egress_without_cloud_metadata(team_name, team)]
