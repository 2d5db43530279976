"""The team namespaces' NetworkPolicies: whole objects, strictly valid, and what they allow, evaluated
the way Kubernetes does (the policies selecting a pod add up; a pod no policy selects is open)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

import kubernetes_validate
import pytest

from mlplatform_core.catalog import load_catalog
from hub_config.render.build import documents, render
from hub_config.render.network import network_policies

ROOT = Path(__file__).resolve().parents[2]
CATALOG = load_catalog(ROOT / "helm-values" / "platform.yaml", environ={})
OBJECTS = [obj for path, (_, objs) in documents(CATALOG).items() if path.startswith("teams/") for obj in objs]
POLICIES = [o for o in OBJECTS if o["kind"] == "NetworkPolicy"]
# The teams' rollout gateways, in the hub namespace, with a policy each (hub_config/render/gateway.py).
GATEWAY_POLICIES = [o for o in documents(CATALOG)["gateway/gateways.yaml"][1] if o["kind"] == "NetworkPolicy"]
VISION = {"app.kubernetes.io/managed-by": "mlplatform", "app.kubernetes.io/part-of": "mlplatform",
          "mlplatform.io/team": "team-vision"}


def test_the_policies_of_a_team_namespace_whole():
    meta = lambda name: {"name": name, "namespace": "team-vision", "labels": VISION}
    assert network_policies(CATALOG, "team-vision") == [
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta("mlplatform-same-namespace"),
         "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [{"podSelector": {}}]}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta("mlplatform-hub-to-notebooks"),
         "spec": {"podSelector": {"matchLabels": {"component": "singleuser-server"}}, "policyTypes": ["Ingress"],
                  "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {
                                             "kubernetes.io/metadata.name": "jupyterhub"}},
                                         "podSelector": {"matchLabels": {
                                             "hub.jupyter.org/network-access-singleuser": "true"}}}],
                               "ports": [{"protocol": "TCP", "port": "notebook-port"}]}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": meta("mlplatform-kuberay-to-ray-heads"),
         "spec": {"podSelector": {"matchLabels": {"ray.io/node-type": "head"}}, "policyTypes": ["Ingress"],
                  "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kuberay"}},
                                         "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}}}],
                               "ports": [{"protocol": "TCP", "port": 8265}]}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta("mlplatform-gateway-to-serve"),
         "spec": {"podSelector": {"matchLabels": {"ray.io/is-ray-node": "yes"}}, "policyTypes": ["Ingress"],
                  "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {
                                             "kubernetes.io/metadata.name": "jupyterhub"}},
                                         "podSelector": {"matchLabels": {
                                             "app.kubernetes.io/component": "rollout-gateway",
                                             "mlplatform.io/team": "team-vision"}}}],
                               "ports": [{"protocol": "TCP", "port": 8000}]}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta("mlplatform-egress"),
         "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                  "egress": [{"to": [{"namespaceSelector": {}}]},
                             {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}},
                                     {"ipBlock": {"cidr": "::/0", "except": ["fd00:ec2::254/128"]}}]}]}},
    ]
    # Every team gets the same five, in its own namespace.
    assert sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in POLICIES) == sorted(
        (ns, name) for ns in ("team-vision", "team-nlp") for name in (
            "mlplatform-same-namespace", "mlplatform-hub-to-notebooks", "mlplatform-kuberay-to-ray-heads",
            "mlplatform-gateway-to-serve", "mlplatform-egress"))


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: f"{p['metadata']['namespace']}/{p['metadata']['name']}")
def test_every_policy_is_valid_in_strict_mode(policy):
    kubernetes_validate.validate(policy, "1.33", strict=True)


def test_render_validates_them_and_writes_them_into_the_team_files():
    files = render(CATALOG)  # raises RenderError on any object Kubernetes 1.33 refuses (strict)
    assert files["teams/team-nlp.yaml"].count("kind: NetworkPolicy") == 5
    assert files["gateway/gateways.yaml"].count("kind: NetworkPolicy") == 2  # one per team's gateway


# --- what the policies allow ------------------------------------------------------------------------

@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict = field(default_factory=dict)
    ports: dict = field(default_factory=dict)  # name → number


NAMESPACE_LABELS = {o["metadata"]["name"]: {**o["metadata"]["labels"], "kubernetes.io/metadata.name": o["metadata"]["name"]}
                    for o in OBJECTS if o["kind"] == "Namespace"}
for extra in ("jupyterhub", "kuberay", "kube-system", "default"):
    NAMESPACE_LABELS[extra] = {"kubernetes.io/metadata.name": extra}

Z2JH_ROUTER = {"hub.jupyter.org/network-access-singleuser": "true"}  # z2jh's hub and proxy pods
HUB = Pod("jupyterhub", {"component": "hub", **Z2JH_ROUTER})
PROXY = Pod("jupyterhub", {"component": "proxy", **Z2JH_ROUTER})
SCHEDULER = Pod("jupyterhub", {"component": "user-scheduler"})
OPERATOR = Pod("kuberay", {"app.kubernetes.io/name": "kuberay-operator"})
HEAD_PORTS = {"gcs": 6379, "dashboard": 8265, "serve": 8000}


def notebook(namespace):
    return Pod(namespace, {"component": "singleuser-server", "hub.jupyter.org/network-access-hub": "true"},
               {"notebook-port": 8888})


def gateway(team):
    return Pod("jupyterhub", {"app.kubernetes.io/component": "rollout-gateway", "mlplatform.io/team": team},
               {"http": 8000})


def ray_head(namespace):
    return Pod(namespace, {"ray.io/node-type": "head", "app.kubernetes.io/component": "model-serving"}, HEAD_PORTS)


def spark_driver(namespace):
    return Pod(namespace, {"spark-role": "driver"}, {"spark-ui": 4040})


def _selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # the platform's policies use nothing else
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _peer_matches(peer: dict, policy_namespace: str, other: Pod | str) -> bool:
    if isinstance(other, str):  # an IP address outside the cluster's pods
        block = peer.get("ipBlock")
        if not block:
            return False
        address = ipaddress.ip_address(other)
        inside = lambda cidr: address.version == ipaddress.ip_network(cidr).version and \
            address in ipaddress.ip_network(cidr)
        return inside(block["cidr"]) and not any(inside(c) for c in block.get("except", []))
    if "ipBlock" in peer:
        return False  # pods matched by selectors only (as Cilium does; Calico would match pod IPs too)
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], NAMESPACE_LABELS[other.namespace]):
            return False
    elif other.namespace != policy_namespace:
        return False
    return _selects(peer.get("podSelector", {}), other.labels)


def _port_matches(rule: dict, port: int, target: Pod) -> bool:
    if "ports" not in rule:
        return True
    return any(p["port"] == port or target.ports.get(p["port"]) == port for p in rule["ports"])


def connects(source: Pod, target: Pod | str, port: int, policies: list[dict] = POLICIES) -> bool:
    """Whether `source` may open a TCP connection to `target` (a pod, or an IP address) on `port` under
    `policies` (default: the team namespaces'; tests/unit/test_charts.py adds the chart's)."""
    def allowed(direction: str, pod: Pod, peer: Pod | str, peer_key: str, port_pod) -> bool:
        selecting = [p for p in policies if p["metadata"]["namespace"] == pod.namespace
                     and direction in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], pod.labels)]
        if not selecting:
            return True  # not isolated in this direction
        return any(all(x in ("from", "to", "ports") for x in rule)
                   and (peer_key not in rule or any(_peer_matches(pr, pod.namespace, peer) for pr in rule[peer_key]))
                   and _port_matches(rule, port, port_pod)
                   for p in selecting for rule in p["spec"].get(direction.lower(), []))

    egress_ok = allowed("Egress", source, target, "to", target if isinstance(target, Pod) else Pod("-"))
    ingress_ok = isinstance(target, str) or allowed("Ingress", target, source, "from", target)
    return egress_ok and ingress_ok


@pytest.mark.parametrize("port", [8265, 6379, 8000])
def test_a_teams_ray_cluster_is_reachable_from_its_own_namespace_only(port):
    head = ray_head("team-vision")
    assert connects(notebook("team-vision"), head, port)
    assert connects(Pod("team-vision", {"ray.io/node-type": "worker"}), head, port)
    for outsider in [notebook("team-nlp"), spark_driver("team-nlp"), ray_head("team-nlp"), HUB, PROXY,
                     Pod("default"), Pod("kube-system", {"k8s-app": "kube-dns"})]:
        assert not connects(outsider, head, port), outsider


def test_the_kuberay_operator_reaches_the_dashboard_of_heads_only():
    assert connects(OPERATOR, ray_head("team-vision"), 8265) and connects(OPERATOR, ray_head("team-nlp"), 8265)
    assert not connects(OPERATOR, ray_head("team-vision"), 6379)  # not GCS
    assert not connects(OPERATOR, notebook("team-vision"), 8888)
    assert not connects(OPERATOR, Pod("team-vision", {"ray.io/node-type": "worker"}), 8265)
    # The operator's label is not enough: a pod of another namespace carrying it stays out.
    assert not connects(Pod("team-nlp", OPERATOR.labels), ray_head("team-vision"), 8265)


def test_notebooks_take_the_hub_and_the_proxy_on_their_port_and_nothing_else_from_outside():
    server = notebook("team-vision")
    assert connects(HUB, server, 8888) and connects(PROXY, server, 8888)
    assert not connects(HUB, server, 22)
    assert not connects(SCHEDULER, server, 8888)  # other pods of the hub namespace
    assert not connects(Pod("team-nlp", Z2JH_ROUTER), server, 8888)  # the label alone, elsewhere
    assert not connects(notebook("team-nlp"), server, 8888)
    assert connects(notebook("team-vision"), server, 8888)  # teammates: jupyter-server asks for a token
    # The hub and proxy get nowhere else in a team namespace.
    assert not connects(HUB, ray_head("team-vision"), 8000) and not connects(PROXY, spark_driver("team-vision"), 4040)


def test_spark_and_serving_pods_are_closed_to_other_teams():
    assert connects(spark_driver("team-nlp"), Pod("team-nlp", {"spark-role": "executor"}), 7078)
    assert not connects(spark_driver("team-nlp"), spark_driver("team-vision"), 4040)
    assert not connects(notebook("team-nlp"), ray_head("team-vision"), 8000)  # nor the model endpoint


@pytest.mark.parametrize("source", [notebook("team-vision"), ray_head("team-nlp"), spark_driver("team-nlp"),
                                    Pod("team-vision", {"anything": "a user made"})], ids=repr)
def test_no_pod_of_a_team_reaches_the_cloud_metadata_server_and_everything_else_stays_reachable(source):
    assert not connects(source, "169.254.169.254", 80)
    assert not connects(source, "fd00:ec2::254", 80)
    assert connects(source, "169.254.169.253", 53)  # the rest of link-local (AWS DNS) is not blocked
    assert connects(source, "52.95.110.1", 443)  # S3, MLflow, package mirrors
    assert connects(source, "10.0.0.12", 443)  # the API server, nodes
    assert connects(source, Pod("kube-system", {"k8s-app": "kube-dns"}, {"dns": 53}), 53)
    assert connects(source, HUB, 8081)  # the hub's own policy decides who gets in (tests/unit/test_charts.py) ...
    assert connects(source, HUB, 10101)  # ... to the platform service too


def test_a_teams_gateway_takes_its_teams_pods_only_and_reaches_its_teams_serve_port_only():
    policies = POLICIES + GATEWAY_POLICIES
    vision = gateway("team-vision")
    assert connects(notebook("team-vision"), vision, 8000, policies)
    assert connects(Pod("team-vision", {"anything": "a user made"}), vision, 8000, policies)  # the team's callers
    for outsider in [notebook("team-nlp"), ray_head("team-nlp"), Pod("default"), SCHEDULER, gateway("team-nlp")]:
        assert not connects(outsider, vision, 8000, policies), outsider  # no team calls another's models through it
    assert not connects(notebook("team-vision"), vision, 9999, policies)
    # It reaches Serve on the team's Ray pods, on Serve's port only, and no other team's.
    worker = Pod("team-vision", {"ray.io/is-ray-node": "yes", "ray.io/node-type": "worker"}, HEAD_PORTS)
    head = Pod("team-vision", {**ray_head("team-vision").labels, "ray.io/is-ray-node": "yes"}, HEAD_PORTS)
    assert connects(vision, head, 8000, policies) and connects(vision, worker, 8000, policies)
    assert not connects(vision, head, 8265, policies) and not connects(vision, head, 6379, policies)
    assert not connects(gateway("team-nlp"), head, 8000, policies)
    assert not connects(vision, notebook("team-vision"), 8888, policies)
    # The label alone, on a pod elsewhere, opens nothing.
    assert not connects(Pod("team-nlp", vision.labels), head, 8000, policies)
    assert not connects(Pod("jupyterhub", {"component": "hub"}), head, 8000, policies)
