"""`mlplatform render` of the example cluster catalog (helm-values/platform.yaml): whole documents."""

from pathlib import Path

import pytest
import yaml

from mlplatform_core.catalog import load_catalog, parse_catalog
from hub_config.render.build import documents
from hub_config.render.cli import main
from hub_config.render.jupyterhub import CULLING_CONFIG, EXTRA_CONFIG, jupyterhub_values, platform_service_config
from hub_config.render.operators import kuberay_operator_values, spark_operator_values
from hub_config.render.prepull import prepull_daemonsets
from hub_config.render.teams import quota_hard, team_objects

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "helm-values" / "platform.yaml"
CATALOG = load_catalog(EXAMPLE, environ={})
MANAGED = {"app.kubernetes.io/managed-by": "mlplatform", "app.kubernetes.io/part-of": "mlplatform"}
VISION = {**MANAGED, "mlplatform.io/team": "team-vision"}
SECRET = {"name": "mlplatform-hub"}


def test_jupyterhub_values():
    values = jupyterhub_values(CATALOG)
    catalog_file = values["hub"]["extraFiles"]["mlplatform-catalog"].pop("stringData")
    assert values == {
        "hub": {
            "image": {"name": "registry.example.org/mlplatform/hub", "tag": "0.1.0"},
            "config": {
                "JupyterHub": {"authenticator_class": "keycloak", "spawner_class": "mlplatform-kubernetes",
                               "hub_connect_url": "http://hub.jupyterhub.svc:8081"},
                "KeycloakOAuthenticator": {"oauth_callback_url": "https://jupyter.example.org/hub/oauth_callback",
                                           "auth_refresh_age": 60},
                "MlflowAccess": {"signing_key_file": "/etc/mlplatform/mlflow/signing.pem"},
            },
            "extraEnv": {
                "MLPLATFORM_CATALOG": "/etc/mlplatform/platform.yaml",
                "OAUTH_CLIENT_SECRET": {"valueFrom": {"secretKeyRef": {**SECRET, "key": "oauth-client-secret"}}},
            },
            "extraFiles": {"mlplatform-catalog": {"mountPath": "/etc/mlplatform/platform.yaml"}},
            "extraConfig": {"mlplatform": EXTRA_CONFIG, "mlplatform-culling": CULLING_CONFIG,
                            "mlplatform-service": platform_service_config(CATALOG)},
            # The chart's idle culler may read which profile a server runs (hub_config/culling.py).
            "loadRoles": {"mlplatform-idle-culler-state": {"name": "mlplatform-idle-culler-state",
                                                           "scopes": ["admin:server_state"],
                                                           "services": ["jupyterhub-idle-culler"]}},
            # The MLflow signing key (tests/unit/test_render_mlflow.py).
            "extraVolumes": values["hub"]["extraVolumes"], "extraVolumeMounts": values["hub"]["extraVolumeMounts"],
            # The platform service in the hub pod, on the hub Service, and its admission webhook (HTTPS) ...
            "service": {"extraPorts": [{"name": "mlplatform", "port": 10101, "targetPort": 10101, "protocol": "TCP"},
                                       {"name": "admission", "port": 10102, "targetPort": 10102, "protocol": "TCP"}]},
            "networkPolicy": {
                "interNamespaceAccessLabels": "accept",
                # ... for the proxy (browsers) and the notebooks of the team namespaces, no one else.
                "ingress": [{"ports": [{"protocol": "TCP", "port": 10101}], "from": [
                    {"podSelector": {"matchLabels": {"component": "proxy"}}},
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "team-vision"}},
                     "podSelector": {"matchLabels": {"component": "singleuser-server"}}},
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "team-nlp"}},
                     "podSelector": {"matchLabels": {"component": "singleuser-server"}}}]},
                    # ... and for the API server (no pod: no selector names it) on the webhook's port only.
                    {"ports": [{"protocol": "TCP", "port": 10102}]}],
            },
        },
        # The proxy routes /services/mlplatform/ to the hub pod's port (tests/unit/test_charts.py: both ends).
        "proxy": {"service": {"type": "ClusterIP"}, "chp": {"networkPolicy": {"egress": [
            {"to": [{"podSelector": {"matchLabels": {"component": "hub"}}}],
             "ports": [{"protocol": "TCP", "port": 10101}]}]}}},
        "ingress": {"enabled": True, "hosts": ["jupyter.example.org"],
                    "tls": [{"hosts": ["jupyter.example.org"], "secretName": "mlplatform-hub-tls"}]},
        # Stop servers idle for the shortest timeout (GPU profiles' 1800 s); the CPU profile's longer one
        # comes from the hook CULLING_CONFIG adds. Users are never removed.
        "cull": {"enabled": True, "users": False, "adminUsers": True, "removeNamedServers": False, "maxAge": 0,
                 "timeout": 1800, "every": 300},
        "singleuser": {
            "image": {"name": "registry.example.org/mlplatform/notebook", "tag": "0.1.0"},
            "serviceAccountName": "mlplatform-notebook",
            # The chart's privileged metadata-blocking init container would break Pod Security.
            "cloudMetadata": {"blockWithIptables": False},
            "cpu": {"limit": 2.0, "guarantee": 0.5},
            "memory": {"limit": 4 * 2**30, "guarantee": 2**30},  # bytes: KubeSpawner does not take "Gi"
        },
        "prePuller": {"hook": {"enabled": False}, "continuous": {"enabled": False}},
    }
    assert EXTRA_CONFIG == ("from hub_config.hub import configure_hub\nfrom mlplatform_core.catalog import load_catalog\n\n"
                            "configure_hub(c, load_catalog('/etc/mlplatform/platform.yaml'))\n")
    assert platform_service_config(CATALOG) == """\
import os

from hub_config.platform_service import configure_platform_service
from mlplatform_core.catalog import load_catalog

configure_platform_service(
    c, load_catalog('/etc/mlplatform/platform.yaml'),
    url='http://hub:10101',
    url_for_servers='http://hub.jupyterhub.svc:10101',
    bind_url='http://0.0.0.0:10101',
    # A managed service gets none of the hub's variables but these (and JupyterHub's own).
    environment={
        'MLPLATFORM_CATALOG': '/etc/mlplatform/platform.yaml',
        'MLPLATFORM_MLFLOW_SIGNING_KEY': '/etc/mlplatform/mlflow/signing.pem',
        'MLPLATFORM_WEBHOOK_BIND': '0.0.0.0:10102',
        'MLPLATFORM_WEBHOOK_HOSTS': 'hub.jupyterhub.svc,hub.jupyterhub.svc.cluster.local',
        'MLPLATFORM_WEBHOOK_CONFIGURATION': 'mlplatform-workloads',
        **({'KUBERNETES_SERVICE_HOST': os.environ['KUBERNETES_SERVICE_HOST']} if 'KUBERNETES_SERVICE_HOST' in os.environ else {}),
        **({'KUBERNETES_SERVICE_PORT': os.environ['KUBERNETES_SERVICE_PORT']} if 'KUBERNETES_SERVICE_PORT' in os.environ else {}),
        **({'KUBECONFIG': os.environ['KUBECONFIG']} if 'KUBECONFIG' in os.environ else {}),
    },
)
"""
    # The hub reads the catalog as validated at render time.
    assert parse_catalog(yaml.safe_load(catalog_file), environ={}).model_dump() == CATALOG.model_dump()


def test_extra_config_configures_the_hub_from_the_mounted_catalog(tmp_path):
    from traitlets.config import Config

    mounted = tmp_path / "platform.yaml"
    mounted.write_text(jupyterhub_values(CATALOG)["hub"]["extraFiles"]["mlplatform-catalog"]["stringData"])
    c = Config()
    # The chart runs hub.extraConfig the same way: exec with `c` in scope.
    exec(EXTRA_CONFIG.replace("/etc/mlplatform/platform.yaml", str(mounted)), {"c": c})
    assert c.JupyterHub.authenticator_class == "keycloak"
    assert c.KeycloakOAuthenticator.realm_url == "https://sso.example.org/realms/platform"
    assert c.KeycloakOAuthenticator.allowed_groups == {"team-vision", "team-nlp"}


def test_the_platform_service_config_starts_it_in_the_hub_pod_for_the_proxy_and_the_team_namespaces(tmp_path):
    from traitlets.config import Config

    mounted = tmp_path / "platform.yaml"
    mounted.write_text(jupyterhub_values(CATALOG)["hub"]["extraFiles"]["mlplatform-catalog"]["stringData"])
    c = Config()
    exec(platform_service_config(CATALOG).replace("/etc/mlplatform/platform.yaml", str(mounted)), {"c": c})
    [service] = c.JupyterHub.services
    assert service["url"] == "http://hub:10101" and service["command"] == ["mlplatform-service"]
    assert service["environment"].items() >= {"MLPLATFORM_CATALOG": str(mounted),
                                              "MLPLATFORM_MLFLOW_SIGNING_KEY": "/etc/mlplatform/mlflow/signing.pem",
                                              "MLPLATFORM_SERVICE_BIND_URL": "http://0.0.0.0:10101"}.items()
    assert "MLPLATFORM_SERVICE_DATABASE_URL" not in service["environment"]  # the catalog's, as the hub's
    assert c.PlatformService.url == "http://hub.jupyterhub.svc:10101/services/mlplatform"
    # Without the variables, a catalog of no secret reference, and where z2jh's hub pod can write.
    assert CATALOG.platform_service.database_url == "sqlite:////srv/jupyterhub/mlplatform.sqlite"


POSTGRES_URL = "postgresql+psycopg://mlplatform:${MLPLATFORM_DB_PASSWORD}@postgres:5432/mlplatform"


def test_a_database_password_stays_in_the_secret_and_reaches_the_hub_and_the_service_in_the_pod(tmp_path, monkeypatch):
    from traitlets.config import Config

    data = yaml.safe_load(EXAMPLE.read_text())
    data["platform_service"] = {"database_url": POSTGRES_URL}
    source = tmp_path / "platform.yaml"
    source.write_text(yaml.safe_dump(data))
    # Set on the engineer's machine or not, the password is not rendered.
    monkeypatch.setenv("MLPLATFORM_DB_PASSWORD", "on-the-engineers-machine")
    assert main(["render", "--catalog", str(source), "--out", str(tmp_path / "out")]) == 0
    files = {p.relative_to(tmp_path / "out").as_posix(): p.read_text() for p in (tmp_path / "out").rglob("*.yaml")}
    assert not any("on-the-engineers-machine" in text for text in files.values())
    values = yaml.safe_load(files["helm-values/jupyterhub.yaml"])
    hub = values["hub"]
    # The hub pod gets it from the Secret's key ...
    assert hub["extraEnv"]["MLPLATFORM_DB_PASSWORD"] == {
        "valueFrom": {"secretKeyRef": {**SECRET, "key": "service-database-password"}}}
    # ... the hub expands the reference when it loads its catalog, and hands the variable on to the service.
    mounted = tmp_path / "mounted.yaml"
    mounted.write_text(hub["extraFiles"]["mlplatform-catalog"]["stringData"])
    monkeypatch.setenv("MLPLATFORM_DB_PASSWORD", "from-the-secret")
    assert load_catalog(mounted).platform_service.database_url == \
        "postgresql+psycopg://mlplatform:from-the-secret@postgres:5432/mlplatform"
    c = Config()
    exec(hub["extraConfig"]["mlplatform-service"].replace("/etc/mlplatform/platform.yaml", str(mounted)), {"c": c})
    [service] = c.JupyterHub.services
    assert service["environment"]["MLPLATFORM_DB_PASSWORD"] == "from-the-secret"
    # The team namespaces' copy has no reference: notebooks never connect, and load it without the variable.
    monkeypatch.delenv("MLPLATFORM_DB_PASSWORD")
    [config_map] = [o for o in yaml.safe_load_all(files["teams/team-vision.yaml"]) if o["kind"] == "ConfigMap"
                    and "platform.yaml" in o["data"]]
    notebooks = parse_catalog(yaml.safe_load(config_map["data"]["platform.yaml"]), environ={})
    assert notebooks.platform_service.database_url == "postgresql+psycopg://mlplatform:@postgres:5432/mlplatform"
    # Without the reference, the Secret needs no such key.
    assert "MLPLATFORM_DB_PASSWORD" not in jupyterhub_values(CATALOG)["hub"]["extraEnv"]


def test_team_namespace_quota_and_notebook_role():
    objects = team_objects(CATALOG, "team-vision")
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("Namespace", "team-vision"), ("ResourceQuota", "mlplatform-team"), ("ConfigMap", "mlplatform"),
        ("ServiceAccount", "mlplatform-notebook"), ("ServiceAccount", "mlplatform-serving"),
        ("Role", "mlplatform-notebook"), ("RoleBinding", "mlplatform-notebook"), ("Role", "mlplatform-hub"),
        ("RoleBinding", "mlplatform-hub"), ("NetworkPolicy", "mlplatform-same-namespace"),
        ("NetworkPolicy", "mlplatform-hub-to-notebooks"), ("NetworkPolicy", "mlplatform-kuberay-to-ray-heads"),
        ("NetworkPolicy", "mlplatform-gateway-to-serve"), ("NetworkPolicy", "mlplatform-egress"),
    ]
    namespace, quota, config_map, account, serving_account, role, binding, hub_role, hub_binding = objects[:9]
    assert namespace == {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "team-vision", "labels": {**VISION, "hub.jupyter.org/network-access-hub": "true",
                                          # Pod Security Admission: baseline refused, restricted reported
                                          "pod-security.kubernetes.io/enforce": "baseline",
                                          "pod-security.kubernetes.io/enforce-version": "v1.33",
                                          "pod-security.kubernetes.io/audit": "restricted",
                                          "pod-security.kubernetes.io/warn": "restricted"}}}
    assert quota == {"apiVersion": "v1", "kind": "ResourceQuota",
                     "metadata": {"name": "mlplatform-team", "namespace": "team-vision", "labels": VISION},
                     "spec": {"hard": {"requests.nvidia.com/gpu": "4", "requests.cpu": "64",
                                       "requests.memory": "256Gi"}}}
    assert config_map["metadata"] == {"name": "mlplatform", "namespace": "team-vision", "labels": VISION}
    assert sorted(config_map["data"]) == ["aws-config", "platform.yaml"]
    assert parse_catalog(yaml.safe_load(config_map["data"]["platform.yaml"]), environ={}).model_dump() == \
        CATALOG.model_dump()
    assert "[default]\ncredential_process = mlplatform-aws-credentials\n" in config_map["data"]["aws-config"]
    assert account == {"apiVersion": "v1", "kind": "ServiceAccount",
                       "metadata": {"name": "mlplatform-notebook", "namespace": "team-vision", "labels": VISION}}
    assert serving_account == {"apiVersion": "v1", "kind": "ServiceAccount", "automountServiceAccountToken": False,
                               "metadata": {"name": "mlplatform-serving", "namespace": "team-vision",
                                            "labels": VISION}}
    manage = ["get", "list", "watch", "create", "update", "patch", "delete"]
    assert role == {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                    "metadata": {"name": "mlplatform-notebook", "namespace": "team-vision", "labels": VISION},
                    "rules": [{"apiGroups": ["ray.io"], "resources": ["rayservices"], "verbs": manage},
                              {"apiGroups": ["sparkoperator.k8s.io"], "resources": ["sparkapplications"],
                               "verbs": manage},
                              {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
                              {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]}]}
    assert binding == {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                       "metadata": {"name": "mlplatform-notebook", "namespace": "team-vision", "labels": VISION},
                       "subjects": [{"kind": "ServiceAccount", "name": "mlplatform-notebook",
                                     "namespace": "team-vision"}],
                       "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                   "name": "mlplatform-notebook"}}
    assert hub_binding["subjects"] == [{"kind": "ServiceAccount", "name": "hub", "namespace": "jupyterhub"}]
    assert hub_role["rules"] == [  # z2jh's own hub Role, in the team namespace
        {"apiGroups": [""], "resources": ["pods", "persistentvolumeclaims", "secrets", "services"],
         "verbs": ["get", "watch", "list", "create", "delete"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "watch", "list"]},
        {"apiGroups": ["ray.io"], "resources": ["rayservices"], "verbs": ["get", "list", "patch"]}]


def test_gpu_quota_per_resource_is_capped_by_the_total_and_the_per_type_quotas():
    data = yaml.safe_load(EXAMPLE.read_text())
    data["gpu_types"]["mig"] = {"display_name": "A100 MIG 1g", "resource": "nvidia.com/mig-1g.10gb",
                                "node_selector": {"nvidia.com/mig.config": "all-1g.10gb"}}
    data["teams"]["team-vision"]["gpu_quota"] = {"total": 3, "per_type": {"a100": 3, "t4": 3, "mig": 2}}
    data["teams"]["team-nlp"]["gpu_quota"] = {"total": 0}
    del data["teams"]["team-nlp"]["quota"]
    catalog = parse_catalog(data, environ={})
    assert quota_hard(catalog, catalog.teams["team-vision"]) == {
        "requests.nvidia.com/gpu": "3", "requests.nvidia.com/mig-1g.10gb": "2",
        "requests.cpu": "64", "requests.memory": "256Gi"}
    # A team without GPUs gets an explicit zero; without a CPU/memory quota, no such key.
    assert quota_hard(catalog, catalog.teams["team-nlp"]) == {
        "requests.nvidia.com/gpu": "0", "requests.nvidia.com/mig-1g.10gb": "0"}


def test_gpu_prepull_daemonset():
    pull = {"command": ["/bin/sh", "-c", "echo Pulling complete"],
            "resources": {"requests": {"cpu": "1m", "memory": "8Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}},
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534,
                                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                "seccompProfile": {"type": "RuntimeDefault"}}}
    select = {"app.kubernetes.io/name": "mlplatform-prepull", "mlplatform.io/node-pool": "gpu-a100"}
    user = {"operator": "Equal", "value": "user", "effect": "NoSchedule"}
    assert prepull_daemonsets(CATALOG)["gpu-a100"] == {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "mlplatform-prepull-gpu-a100", "namespace": "jupyterhub", "labels": {**MANAGED, **select}},
        "spec": {
            "selector": {"matchLabels": select},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}},
            "template": {"metadata": {"labels": {**MANAGED, **select}}, "spec": {
                "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                                {"key": "hub.jupyter.org/dedicated", **user},
                                {"key": "hub.jupyter.org_dedicated", **user}],
                "terminationGracePeriodSeconds": 0,
                "automountServiceAccountToken": False,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "initContainers": [
                    {"name": "image-pull-notebook-gpu", "image": "registry.example.org/mlplatform/notebook-gpu:0.1.0",
                     **pull},
                    {"name": "image-pull-ray-gpu", "image": "registry.example.org/mlplatform/ray-gpu:0.1.0", **pull},
                ],
                "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10.2",
                                "resources": pull["resources"], "securityContext": pull["securityContext"]}],
            }},
        },
    }


def test_operator_values_watch_the_team_namespaces():
    assert kuberay_operator_values(CATALOG) == {
        "image": {"tag": "v1.7.0"},  # the operator of the CRDs RayServices are checked against, not `nightly`
        "singleNamespaceInstall": True, "crNamespacedRbacEnable": True, "watchNamespace": ["team-vision", "team-nlp"]}
    assert spark_operator_values(CATALOG) == {"spark": {
        "jobNamespaces": ["team-vision", "team-nlp"],
        "serviceAccount": {"create": True, "name": "mlplatform-spark"}, "rbac": {"create": True}}}


def test_cli_writes_every_file_and_says_so(tmp_path, capsys):
    assert main(["render", "--catalog", str(EXAMPLE), "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    expected = sorted(documents(CATALOG))
    assert expected == ["cluster/admission-policies.yaml", "cluster/admission-webhook.yaml", "cluster/hub-rbac.yaml",
                        "gateway/gateways.yaml", "helm-values/jupyterhub.yaml",
                        "helm-values/kuberay-operator.yaml", "helm-values/spark-operator.yaml", "mlflow/auth-config.yaml",
                        "prepull/cpu.yaml", "prepull/gpu-a100.yaml", "prepull/gpu-t4.yaml", "teams/team-nlp.yaml",
                        "teams/team-vision.yaml"]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == expected
    assert sorted(out.splitlines()) == sorted(f"wrote {tmp_path / rel}" for rel in expected)
    assert err == ("note: not rendered with their charts: jupyterhub, kuberay-operator, spark-operator; give "
                   "--jupyterhub-chart DIR --kuberay-operator-chart DIR --spark-operator-chart DIR to see chart errors "
                   "before helm install\n")
    team = list(yaml.safe_load_all((tmp_path / "teams" / "team-vision.yaml").read_text()))
    assert team == team_objects(CATALOG, "team-vision")
    assert (tmp_path / "teams" / "team-vision.yaml").read_text().startswith(
        "# A team's namespace (Pod Security: baseline enforced), quota, catalog, RBAC and NetworkPolicies.\n"
        "# Rendered by `mlplatform render` from platform.yaml; do not edit: change the catalog and render again.\n"
        "# kubectl apply -f teams/\n---\napiVersion: v1\nkind: Namespace\n")


def test_cli_only_writes_the_chosen_folders_and_drops_stale_files(tmp_path):
    (tmp_path / "prepull").mkdir()
    (tmp_path / "prepull" / "gpu-h100.yaml").write_text("a pool the catalog no longer has")
    (tmp_path / "helm-values").mkdir()
    (tmp_path / "helm-values" / "platform.yaml").write_text("the catalog: kept")
    assert main(["render", "--catalog", str(EXAMPLE), "--out", str(tmp_path), "--only", "helm-values,prepull"]) == 0
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "helm-values/jupyterhub.yaml", "helm-values/kuberay-operator.yaml", "helm-values/platform.yaml",
        "helm-values/spark-operator.yaml", "prepull/cpu.yaml", "prepull/gpu-a100.yaml", "prepull/gpu-t4.yaml"]
    assert (tmp_path / "helm-values" / "platform.yaml").read_text() == "the catalog: kept"


def test_with_the_clusters_pod_ranges_the_webhook_port_is_closed_to_pods():
    data = yaml.safe_load(EXAMPLE.read_text())
    data["kubernetes"]["pod_cidrs"] = ["10.244.0.0/16", "fd00:10:244::/56"]
    values = jupyterhub_values(parse_catalog(data, str(EXAMPLE), environ={}))
    webhook_rule = values["hub"]["networkPolicy"]["ingress"][-1]
    assert webhook_rule == {"ports": [{"protocol": "TCP", "port": 10102}], "from": [
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.244.0.0/16"]}},
        {"ipBlock": {"cidr": "::/0", "except": ["fd00:10:244::/56"]}}]}

    data["kubernetes"]["pod_cidrs"] = ["10.244.0.1/16"]
    with pytest.raises(ValueError, match=r"kubernetes.pod_cidrs.0.*'10.244.0.1/16' is not a network in CIDR "
                                         r"notation such as 10.244.0.0/16"):
        parse_catalog(data, str(EXAMPLE), environ={})
