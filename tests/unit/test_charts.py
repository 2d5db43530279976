"""The three upstream charts of ../shared/charts, rendered by Helm's SDK with the values `mlplatform render`
writes, as `helm install` (README, "Deploy on Kubernetes") would: every object validates strictly, and
what the project depends on is asserted whole — the hub's Deployment, RBAC, proxy and ingress, the image
pullers (ours, not z2jh's), and the NetworkPolicies on both sides of each connection the platform needs.
Also: rendering is repeatable, and a catalog change changes only what it should."""

from __future__ import annotations

import base64
import copy
import shutil
from pathlib import Path

import pytest
import yaml

from mlplatform_core.catalog import parse_catalog
from hub_config.render.build import render
from hub_config.render.checks import RenderError
from hub_config.render.cli import main
from hub_config.render.network import KUBERAY_NAMESPACE, KUBERAY_OPERATOR, SINGLEUSER_ACCESS
from hub_config.render.teams import HUB_ACCESS_LABEL

from ..support.rendered_cluster import CHARTS, chart_objects, rendered_objects
from .test_network_policies import Pod, connects, notebook

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "helm-values" / "platform.yaml"
DATA = yaml.safe_load(EXAMPLE.read_text())
HUB_NS = DATA["kubernetes"]["hub_namespace"]
SECRET = "mlplatform-hub"


def several_teams_and_gpu_types() -> dict:
    """The example plus a third team and two more GPU types, one of them another vendor's resource."""
    data = copy.deepcopy(DATA)
    data["gpu_types"]["h100"] = {"display_name": "H100", "resource": "nvidia.com/gpu",
                                 "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                                 "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}
    data["gpu_types"]["mi300"] = {"display_name": "MI300X", "resource": "amd.com/gpu",
                                  "node_selector": {"amd.com/gpu.product-name": "AMD-Instinct-MI300X"}}
    data["teams"]["team-speech"] = {"display_name": "Speech", "group": "team-speech", "namespace": "team-speech",
                                    "gpu_quota": {"total": 8, "per_type": {"h100": 4, "mi300": 8}},
                                    "quota": {"cpu": 96, "memory": "512Gi"}}
    for profile in data["profiles"].values():
        profile["teams"].append("team-speech")
    data["profiles"]["gpu-h100"] = {
        "display_name": "GPU — H100", "description": "NVIDIA H100 80GB.", "cpu": {"guarantee": 8, "limit": 16},
        "image": "registry.example.org/mlplatform/notebook-gpu:0.1.0", "memory": {"guarantee": "32Gi", "limit": "64Gi"},
        "teams": ["team-speech", "team-vision"], "gpu": {"types": ["h100", "mi300"], "counts": [1, 2, 4, 8]}}
    return data


CATALOGS = ("example", "several teams and GPU types")


def catalog(name: str):
    data = DATA if name == "example" else several_teams_and_gpu_types()
    return parse_catalog(data, "platform.yaml", environ={})


def by_key(objects):
    return {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects}


@pytest.fixture(scope="module", params=CATALOGS)
def rendered(request):
    cat = catalog(request.param)
    # render() itself renders the charts and validates every object they make (strict, Kubernetes 1.33).
    assert render(cat, charts=CHARTS)
    return cat, chart_objects(cat)


def test_every_chart_object_is_valid_and_every_image_pinned(rendered):
    _, charts = rendered
    for chart, objects in charts.items():
        for obj in objects:
            spec = obj.get("spec", {}).get("template", {}).get("spec", {})
            for container in spec.get("containers", []) + spec.get("initContainers", []):
                name, _, tag = container["image"].rpartition(":")
                assert name and tag and tag not in ("latest", "nightly") and "chartpress" not in tag, \
                    f"{chart}: {obj['kind']} {obj['metadata']['name']} runs {container['image']}"


def test_the_hub_deployment_runs_our_image_with_the_catalog_and_secrets(rendered):
    cat, charts = rendered
    hub = by_key(charts["jupyterhub"])[("Deployment", HUB_NS, "hub")]
    pod = hub["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == cat.kubernetes.images.hub
    assert container["args"] == ["jupyterhub", "--config", "/usr/local/etc/jupyterhub/jupyterhub_config.py",
                                 "--upgrade-db"]
    assert pod["serviceAccountName"] == "hub"
    assert pod["securityContext"] == {"fsGroup": 1000, "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}

    def secret(name, key):
        return {"valueFrom": {"secretKeyRef": {"name": name, "key": key}}}
    assert container["env"] == [
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "HELM_RELEASE_NAME", "value": "jupyterhub"},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "CONFIGPROXY_AUTH_TOKEN", **secret("hub", "hub.config.ConfigurableHTTPProxy.auth_token")},
        {"name": "MLPLATFORM_CATALOG", "value": "/etc/mlplatform/platform.yaml"},
        {"name": "OAUTH_CLIENT_SECRET", **secret(SECRET, "oauth-client-secret")},
    ]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert {m["mountPath"]: (m["name"], m.get("subPath"), m.get("readOnly", False)) for m in container["volumeMounts"]} == {
        "/usr/local/etc/jupyterhub/jupyterhub_config.py": ("config", "jupyterhub_config.py", False),
        "/usr/local/etc/jupyterhub/z2jh.py": ("config", "z2jh.py", False),
        "/usr/local/etc/jupyterhub/config/": ("config", None, False),
        "/usr/local/etc/jupyterhub/secret/": ("secret", None, False),
        "/etc/mlplatform/platform.yaml": ("files", "mlplatform-catalog", False),
        "/etc/mlplatform/mlflow": ("mlflow-signing-key", None, True),
        "/srv/jupyterhub": ("pvc", None, False),
    }
    assert volumes["files"] == {"name": "files", "secret": {"secretName": "hub", "items": [
        {"key": "mlplatform-catalog", "path": "mlplatform-catalog"}]}}
    # The signing key: only its key of our Secret, readable by the hub's group (fsGroup), nobody else.
    assert volumes["mlflow-signing-key"] == {"name": "mlflow-signing-key", "secret": {
        "secretName": SECRET, "defaultMode": 0o440, "items": [{"key": "mlflow-signing-key", "path": "signing.pem"}]}}
    # The catalog in the chart's Secret is the rendered, validated one.
    chart_secret = by_key(charts["jupyterhub"])[("Secret", HUB_NS, "hub")]
    values = yaml.safe_load(base64.b64decode(chart_secret["data"]["values.yaml"]))
    catalog_text = values["hub"]["extraFiles"]["mlplatform-catalog"]["stringData"]
    assert parse_catalog(yaml.safe_load(catalog_text), "platform.yaml", environ={}).teams.keys() == cat.teams.keys()


def test_the_hubs_rbac_is_the_charts_in_its_namespace_and_ours_in_each_team_namespace(rendered):
    cat, charts = rendered
    objects = by_key(charts["jupyterhub"])
    assert objects[("ServiceAccount", HUB_NS, "hub")]["metadata"]["name"] == "hub"
    assert objects[("Role", HUB_NS, "hub")]["rules"] == [
        {"apiGroups": [""], "resources": ["pods", "persistentvolumeclaims", "secrets", "services"],
         "verbs": ["get", "watch", "list", "create", "delete"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "watch", "list"]}]
    hub_account = {"kind": "ServiceAccount", "name": "hub", "namespace": HUB_NS}
    assert objects[("RoleBinding", HUB_NS, "hub")]["subjects"] == [hub_account]
    # What render adds for the same account: a Role in each team namespace, list/watch cluster-wide.
    ours = by_key(rendered_objects(cat))
    for team in cat.teams.values():
        assert ours[("RoleBinding", team.namespace, "mlplatform-hub")]["subjects"] == [hub_account]
    assert ours[("ClusterRoleBinding", None, "mlplatform-hub-quota-reader")]["subjects"] == [hub_account]
    # z2jh's only cluster-wide objects are its user scheduler's.
    assert {k for k in objects if k[0].startswith("Cluster")} == {
        ("ClusterRole", None, "jupyterhub-user-scheduler"), ("ClusterRoleBinding", None, "jupyterhub-user-scheduler")}


def test_the_proxy_and_ingress(rendered):
    cat, charts = rendered
    objects = by_key(charts["jupyterhub"])
    assert objects[("Service", HUB_NS, "proxy-public")]["spec"]["type"] == "ClusterIP"
    ingress = objects[("Ingress", HUB_NS, "jupyterhub")]
    assert ingress["spec"] == {
        "rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
            "service": {"name": "proxy-public", "port": {"name": "http"}}}}]}, "host": "jupyter.example.org"}],
        "tls": [{"hosts": ["jupyter.example.org"], "secretName": "mlplatform-hub-tls"}]}
    [chp] = objects[("Deployment", HUB_NS, "proxy")]["spec"]["template"]["spec"]["containers"]
    assert chp["args"] == ["--ip=", "--api-ip=", "--api-port=8001", "--default-target=http://hub:$(HUB_SERVICE_PORT)",
                           "--error-target=http://hub:$(HUB_SERVICE_PORT)/hub/error", "--port=8000"]
    # The hub's connect URL (hub.config) names the chart's hub Service and port, with its namespace; the
    # platform service's URLs (the proxy's route, servers' MLPLATFORM_SERVICE_URL) its port 10101.
    hub_service = objects[("Service", HUB_NS, "hub")]
    assert hub_service["spec"]["ports"] == [
        {"name": "hub", "port": 8081, "targetPort": "http"},
        {"name": "mlplatform", "port": 10101, "protocol": "TCP", "targetPort": 10101},
        {"name": "admission", "port": 10102, "protocol": "TCP", "targetPort": 10102}]  # its admission webhook


def test_images_are_pulled_by_our_daemonsets_and_not_by_z2jhs(rendered):
    cat, charts = rendered
    assert [o for o in charts["jupyterhub"] if o["kind"] == "DaemonSet"] == []
    assert not any("image-puller" in o["metadata"]["name"] or "image-awaiter" in o["metadata"]["name"]
                   for o in charts["jupyterhub"])
    pulled = {c["image"] for o in rendered_objects(cat) if o["kind"] == "DaemonSet"
              for c in o["spec"]["template"]["spec"]["initContainers"]}
    assert {p.image for p in cat.profiles.values()} <= pulled


def test_network_policies_fit_on_both_sides(rendered):
    """Each connection the platform needs is allowed by the chart's policy where it starts and ours where it ends."""
    cat, charts = rendered
    z2jh, ours = by_key(charts["jupyterhub"]), by_key(rendered_objects(cat))

    def pod_labels(objects, key):
        return objects[key]["spec"]["template"]["metadata"]["labels"]

    for team in cat.teams.values():
        # Team namespaces may reach the hub API: z2jh's hub policy admits namespaces with this label.
        assert ours[("Namespace", None, team.namespace)]["metadata"]["labels"].items() >= HUB_ACCESS_LABEL.items()
        # The hub and the proxy reach notebooks: our policy admits their pods by the label z2jh gives them.
        [rule] = ours[("NetworkPolicy", team.namespace, "mlplatform-hub-to-notebooks")]["spec"]["ingress"]
        assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": HUB_NS}},
                                 "podSelector": {"matchLabels": SINGLEUSER_ACCESS}}]
    for deployment in ("hub", "proxy"):
        assert pod_labels(z2jh, ("Deployment", HUB_NS, deployment)).items() >= SINGLEUSER_ACCESS.items()
    hub_ingress = z2jh[("NetworkPolicy", HUB_NS, "hub")]["spec"]["ingress"]
    assert {"namespaceSelector": {"matchLabels": HUB_ACCESS_LABEL}} in [f for rule in hub_ingress
                                                                        for f in rule.get("from", [])]
    # ... and the hub and proxy may leave their namespace for the notebooks' (pod) addresses.
    for policy in ("hub", "proxy"):
        egress = z2jh[("NetworkPolicy", HUB_NS, policy)]["spec"]["egress"]
        assert {"to": [{"ipBlock": {"cidr": c}} for c in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]} in egress
    # The KubeRay operator reaches Ray heads: our policy admits its pods by the chart's label and namespace.
    kuberay = by_key(charts["kuberay-operator"])
    assert pod_labels(kuberay, ("Deployment", KUBERAY_NAMESPACE, "kuberay-operator")).items() >= KUBERAY_OPERATOR.items()


def test_the_platform_service_in_the_hub_pod_is_reachable_from_the_proxy_and_team_notebooks_only():
    """The chart's policies and ours together, evaluated as Kubernetes does (selectors only for pods, as
    Cilium matches them: the chart's private-IP egress rules do not count)."""
    cat = catalog("example")
    charts = chart_objects(cat)
    policies = [o for o in [*charts["jupyterhub"], *rendered_objects(cat)] if o["kind"] == "NetworkPolicy"]
    deployments = by_key(charts["jupyterhub"])

    def pod_of(name, ports=None):
        labels = deployments[("Deployment", HUB_NS, name)]["spec"]["template"]["metadata"]["labels"]
        return Pod(HUB_NS, labels, ports or {})

    hub, proxy, scheduler = pod_of("hub", {"http": 8081}), pod_of("proxy"), pod_of("user-scheduler")
    service = 10101
    assert connects(proxy, hub, service, policies)  # the proxy's route /services/mlplatform/
    for team in cat.teams.values():  # servers' MLPLATFORM_SERVICE_URL
        assert connects(notebook(team.namespace), hub, service, policies)
    # Nobody else: other pods of the hub's or a team's namespace, a notebook-like pod of another namespace.
    assert not connects(scheduler, hub, service, policies)
    assert not connects(Pod("team-vision", {"ray.io/node-type": "head"}), hub, service, policies)
    assert not connects(notebook("default"), hub, service, policies)
    assert connects(notebook("default"), hub, 8081, policies)  # the chart's hub API rule: labelled pods anywhere
    # The proxy's egress to the port is ours: without it only the private-IP rule would (not for Cilium).
    without_ours = [p for p in policies if p["metadata"]["name"] != "proxy"] + [
        {**p, "spec": {**p["spec"], "egress": [r for r in p["spec"]["egress"] if r.get("ports") != [
            {"protocol": "TCP", "port": service}]]}} for p in policies if p["metadata"]["name"] == "proxy"]
    assert not connects(proxy, hub, service, without_ours)


def test_the_operators_watch_exactly_the_team_namespaces(rendered):
    cat, charts = rendered
    namespaces = [team.namespace for team in cat.teams.values()]
    kuberay = by_key(charts["kuberay-operator"])
    [operator] = kuberay[("Deployment", KUBERAY_NAMESPACE, "kuberay-operator")]["spec"]["template"]["spec"]["containers"]
    assert operator["image"] == "quay.io/kuberay/operator:v1.7.0"
    assert operator["args"][:2] == ["--watch-namespace", ",".join(namespaces)]
    assert {k for k in kuberay if k[0] in ("Role", "RoleBinding") and k[2] == "kuberay-operator"} == {
        (kind, ns, "kuberay-operator") for kind in ("Role", "RoleBinding") for ns in namespaces}
    assert not any(k[0].startswith("Cluster") for k in kuberay)
    spark = by_key(charts["spark-operator"])
    for name in ("spark-operator-controller", "spark-operator-webhook"):
        [container] = spark[("Deployment", "spark-operator", name)]["spec"]["template"]["spec"]["containers"]
        assert f"--namespaces={','.join(namespaces)}" in container["args"]
    # The drivers' service account, with the chart's Role, in each team namespace: the one render names.
    account = cat.kubernetes.spark_service_account
    assert {k for k in spark if k[2] == account} == {
        (kind, ns, account) for kind in ("ServiceAccount", "Role", "RoleBinding") for ns in namespaces}


# What z2jh generates at install (randAlphaNum) and, on `helm upgrade`, reads back from the release's own Secret
# with `lookup`, which has no cluster to ask here: the hub Secret's keys and the checksums of them.
GENERATED = {("Secret", HUB_NS, "hub"): ("data", ["hub.config.ConfigurableHTTPProxy.auth_token",
                                                  "hub.config.JupyterHub.cookie_secret", "hub.config.CryptKeeper.keys"]),
             ("Deployment", HUB_NS, "hub"): ("annotations", ["checksum/secret"]),
             ("Deployment", HUB_NS, "proxy"): ("annotations", ["checksum/auth-token"])}


def without_generated(objects):
    objects = copy.deepcopy(by_key(objects))
    for key, (where, names) in GENERATED.items():
        fields = objects[key]["data"] if where == "data" else objects[key]["spec"]["template"]["metadata"]["annotations"]
        for name in names:
            assert fields.pop(name)
    return objects


def test_rendering_twice_gives_identical_files_and_objects_but_the_charts_generated_secrets():
    cat = catalog("example")
    assert render(cat, charts=CHARTS) == render(cat, charts=CHARTS)
    first, second = chart_objects(cat), chart_objects(cat)
    for chart in ("kuberay-operator", "spark-operator"):
        assert first[chart] == second[chart]
    assert without_generated(first["jupyterhub"]) == without_generated(second["jupyterhub"])
    assert first["jupyterhub"] != second["jupyterhub"]  # the generated ones differ, as on two installs


def changed(before, after) -> dict[str, set]:
    """Per chart and for render's own objects: the keys of objects added, removed or changed (what z2jh
    generates aside: an upgrade keeps it)."""
    result = {}
    for part in before:
        old, new = ((without_generated(before[part]), without_generated(after[part])) if part == "jupyterhub"
                    else (by_key(before[part]), by_key(after[part])))
        result[part] = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
    return result


def everything(cat):
    return {"render": rendered_objects(cat), **chart_objects(cat)}


def test_a_new_team_changes_only_its_namespace_the_operators_watch_lists_and_the_hubs_catalog():
    data = copy.deepcopy(DATA)
    data["teams"]["team-speech"] = {"display_name": "Speech", "group": "team-speech", "namespace": "team-speech",
                                    "quota": {"cpu": 8, "memory": "32Gi"}}
    data["profiles"]["cpu"]["teams"].append("team-speech")
    before, after = everything(catalog("example")), everything(parse_catalog(data, "platform.yaml", environ={}))
    diff = changed(before, after)
    new_namespace = {k for k in by_key(after["render"]) if k[1] == "team-speech" or k == ("Namespace", None, "team-speech")}
    # Every team's ConfigMap holds the catalog, so each changes; nothing else of the other teams does. MLflow's
    # auth settings map the new namespace's service accounts to the team.
    # The new team gets its rollout gateway in the hub's namespace; the gateways' ConfigMap holds the catalog too,
    # and the Roles of the traffic maps name the new team's.
    assert diff["render"] == new_namespace | {("ConfigMap", ns, "mlplatform") for ns in ("team-vision", "team-nlp")} | {
        ("ConfigMap", HUB_NS, "mlflow-auth"), ("ConfigMap", HUB_NS, "mlplatform-gateway"),
        ("Role", HUB_NS, "mlplatform-gateway-traffic-reader"), ("Role", HUB_NS, "mlplatform-hub-traffic-writer")} | {
        (kind, HUB_NS, "mlplatform-gateway-team-speech") for kind in ("Deployment", "Service", "NetworkPolicy")}
    # The hub: its Secret holds the values (with the catalog). The Deployment's checksum of that Secret, which
    # restarts the hub on upgrade, mixes in the generated keys and is left out of the comparison. The hub's
    # policy admits the new namespace's notebooks to the platform service.
    assert diff["jupyterhub"] == {("Secret", HUB_NS, "hub"), ("NetworkPolicy", HUB_NS, "hub")}
    assert diff["kuberay-operator"] == {("Deployment", "kuberay", "kuberay-operator"),
                                        ("Role", "team-speech", "kuberay-operator"),
                                        ("RoleBinding", "team-speech", "kuberay-operator")}
    assert diff["spark-operator"] == {
        # The webhooks' namespace selectors list the job namespaces.
        ("MutatingWebhookConfiguration", None, "spark-operator-webhook"),
        ("ValidatingWebhookConfiguration", None, "spark-operator-webhook"),
        ("Deployment", "spark-operator", "spark-operator-controller"),
        ("Deployment", "spark-operator", "spark-operator-webhook"),
        *((kind, "team-speech", name) for name in ("spark-operator-controller", "spark-operator-webhook")
          for kind in ("Role", "RoleBinding")),
        *((kind, "team-speech", "mlplatform-spark") for kind in ("ServiceAccount", "Role", "RoleBinding"))}


def test_a_new_gpu_type_changes_only_the_pre_pull_the_quotas_that_use_it_and_the_hubs_catalog():
    data = copy.deepcopy(DATA)
    data["gpu_types"]["l4"] = {"display_name": "L4", "resource": "nvidia.com/gpu",
                               "node_selector": {"nvidia.com/gpu.product": "NVIDIA-L4"}}
    data["profiles"]["gpu-t4"]["gpu"]["types"].append("l4")
    before, after = everything(catalog("example")), everything(parse_catalog(data, "platform.yaml", environ={}))
    diff = changed(before, after)
    # The CPU pool's DaemonSet keeps off the nodes of every GPU type, the new one's too.
    assert diff["render"] == {("DaemonSet", HUB_NS, "mlplatform-prepull-gpu-l4"),
                              ("DaemonSet", HUB_NS, "mlplatform-prepull-cpu"),
                              ("ConfigMap", HUB_NS, "mlplatform-gateway")} | {
        ("ConfigMap", ns, "mlplatform") for ns in ("team-vision", "team-nlp")}
    assert diff["jupyterhub"] == {("Secret", HUB_NS, "hub")}
    assert diff["kuberay-operator"] == diff["spark-operator"] == set()


def test_render_reports_what_helm_or_the_api_server_would_refuse_and_writes_nothing(tmp_path, capsys):
    chart = tmp_path / "kuberay-operator"
    shutil.copytree(CHARTS["kuberay-operator"], chart)
    (chart / "templates" / "broken.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Values.watchNamespace | first }}\n"
        "data:\n  replicas: 3\n")
    out = tmp_path / "out"
    assert main(["render", "--catalog", str(EXAMPLE), "--out", str(out), "--kuberay-operator-chart", str(chart)]) == 1
    assert capsys.readouterr().err == (
        f"cannot render {EXAMPLE}:\n  - helm-values/kuberay-operator.yaml (chart kuberay-operator): renders "
        "ConfigMap kuberay/team-vision, which Kubernetes 1.33 refuses at data.replicas: 3 is not of type 'string', 'null'\n")
    assert not out.exists()
    (chart / "templates" / "broken.yaml").write_text("{{ .Values.nothing.here }}\n")
    with pytest.raises(RenderError) as e:
        render(catalog("example"), charts={"kuberay-operator": chart})
    [problem] = e.value.problems
    assert problem.startswith("helm-values/kuberay-operator.yaml (chart kuberay-operator): helm cannot render the "
                              "chart: ") and "nil pointer evaluating interface {}.here" in problem
