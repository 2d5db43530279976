"""The teams' rollout gateways as `mlplatform render` writes them (hub_config/render/gateway.py): what their RBAC
grants on the traffic maps, to the gateways (read) and the hub (write), and the token only the gateways' pods mount."""

from __future__ import annotations

from pathlib import Path

from mlplatform_core.catalog import load_catalog

from hub_config.render.build import documents

ROOT = Path(__file__).resolve().parents[2]
CATALOG = load_catalog(ROOT / "helm-values" / "platform.yaml", environ={})
OBJECTS = documents(CATALOG)["gateway/gateways.yaml"][1]
MAPS = ["mlplatform-gateway-team-vision-traffic", "mlplatform-gateway-team-nlp-traffic"]  # one per team
LABELS = {"app.kubernetes.io/managed-by": "mlplatform", "app.kubernetes.io/part-of": "mlplatform"}


def find(kind: str, name: str) -> dict:
    (found,) = [o for o in OBJECTS if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def test_the_gateways_may_read_the_traffic_maps_and_nothing_else():
    meta = {"name": "mlplatform-gateway-traffic-reader", "namespace": "jupyterhub", "labels": LABELS}
    assert find("Role", "mlplatform-gateway-traffic-reader") == {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
        # list and watch too: gateway_pod.py follows its map with `fieldSelector=metadata.name=<map>`, which the
        # API server authorizes by that name
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"],
                   "resourceNames": MAPS}]}
    assert find("RoleBinding", "mlplatform-gateway-traffic-reader") == {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
        "subjects": [{"kind": "ServiceAccount", "name": "mlplatform-gateway", "namespace": "jupyterhub"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "mlplatform-gateway-traffic-reader"}}


def test_the_hub_may_create_configmaps_and_change_only_the_traffic_maps():
    meta = {"name": "mlplatform-hub-traffic-writer", "namespace": "jupyterhub", "labels": LABELS}
    assert find("Role", "mlplatform-hub-traffic-writer") == {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},  # RBAC names no create
                  {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "update", "patch"],
                   "resourceNames": MAPS}]}
    assert find("RoleBinding", "mlplatform-hub-traffic-writer")["subjects"] == [
        {"kind": "ServiceAccount", "name": "hub", "namespace": "jupyterhub"}]  # z2jh's hub account


def test_only_the_gateways_pods_mount_the_accounts_token():
    assert find("ServiceAccount", "mlplatform-gateway")["automountServiceAccountToken"] is False
    for team in ("team-vision", "team-nlp"):
        pod = find("Deployment", f"mlplatform-gateway-{team}")["spec"]["template"]["spec"]
        assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == ("mlplatform-gateway", True)
        assert pod["containers"][0]["command"] == ["mlplatform-gateway", "--team", team]


def test_no_role_of_the_gateways_file_reaches_past_the_hubs_namespace_or_the_maps():
    roles = [o for o in OBJECTS if o["kind"] in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")]
    assert sorted((o["kind"], o["metadata"]["namespace"]) for o in roles) == [
        ("Role", "jupyterhub"), ("Role", "jupyterhub"), ("RoleBinding", "jupyterhub"), ("RoleBinding", "jupyterhub")]
    named = [rule for o in roles if o["kind"] == "Role" for rule in o["rules"] if rule.get("resourceNames")]
    assert all(rule["resourceNames"] == MAPS and rule["resources"] == ["configmaps"] for rule in named)
