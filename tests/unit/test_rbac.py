"""Least privilege: the notebooks' service account manages RayServices and SparkApplications in its
own team namespace, reads pod logs there (the Spark driver's log) but never pods (their specs hold
each server's API token) and lists its events (why Ray pods do not start), nothing else; the hub
gets what KubeSpawner uses in each team namespace, and cluster-wide only list + watch of pods and
ResourceQuotas (its quota cache); no wildcards."""

from pathlib import Path

import pytest

from mlplatform_core.catalog import load_catalog
from hub_config.render.build import documents

ROOT = Path(__file__).resolve().parents[2]
CATALOG = load_catalog(ROOT / "helm-values" / "platform.yaml", environ={})
OBJECTS = [obj for path, (_, objs) in documents(CATALOG).items() if not path.startswith("helm-values/") for obj in objs]
NOTEBOOK = ("mlplatform-notebook", "team-vision")
HUB = ("hub", "jupyterhub")
MANAGED = {"app.kubernetes.io/managed-by": "mlplatform", "app.kubernetes.io/part-of": "mlplatform"}
VERBS = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "escalate", "bind",
         "impersonate"]


def allowed(account: tuple[str, str], verb: str, group: str, resource: str, namespace: str) -> bool:
    """What the API server's RBAC authorizer answers for the rendered (Cluster)Roles and bindings."""
    name, account_namespace = account
    subject = {"kind": "ServiceAccount", "name": name, "namespace": account_namespace}
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in OBJECTS
             if o["kind"] in ("Role", "ClusterRole")}
    for binding in OBJECTS:
        if binding["kind"] == "RoleBinding" and binding["metadata"]["namespace"] == namespace:
            role_namespace = namespace
        elif binding["kind"] == "ClusterRoleBinding":
            role_namespace = None
        else:
            continue
        if subject not in binding["subjects"]:
            continue
        ref = binding["roleRef"]
        role = roles[(ref["kind"], role_namespace if ref["kind"] == "Role" else None, ref["name"])]
        for rule in role["rules"]:
            if group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]:
                return True
    return False


def test_no_wildcards_and_the_only_cluster_wide_grant_is_the_hubs_quota_cache():
    assert {o["kind"] for o in OBJECTS} == {"Namespace", "ResourceQuota", "ConfigMap", "ServiceAccount", "Role",
                                            "RoleBinding", "ClusterRole", "ClusterRoleBinding", "DaemonSet",
                                            "NetworkPolicy"}
    for obj in OBJECTS:
        for rule in obj.get("rules", []):
            assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], obj["metadata"]
            assert set(rule) == {"apiGroups", "resources", "verbs"}  # no resourceNames, no nonResourceURLs
        if obj["kind"] == "RoleBinding":
            assert obj["roleRef"]["kind"] == "Role"  # never a ClusterRole such as edit or admin
    cluster_wide = [o for o in OBJECTS if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    assert cluster_wide == [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "mlplatform-hub-quota-reader", "labels": MANAGED},
         "rules": [{"apiGroups": [""], "resources": ["pods", "resourcequotas"], "verbs": ["list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "mlplatform-hub-quota-reader", "labels": MANAGED},
         "subjects": [{"kind": "ServiceAccount", "name": "hub", "namespace": "jupyterhub"}],
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "mlplatform-hub-quota-reader"}},
    ]


@pytest.mark.parametrize("group,resource", [("ray.io", "rayservices"), ("sparkoperator.k8s.io", "sparkapplications")])
def test_notebooks_manage_serving_and_spark_in_their_own_namespace_only(group, resource):
    for verb in ["get", "list", "watch", "create", "update", "patch", "delete"]:
        assert allowed(NOTEBOOK, verb, group, resource, "team-vision")
        assert not allowed(NOTEBOOK, verb, group, resource, "team-nlp")
        assert not allowed(NOTEBOOK, verb, group, resource, "jupyterhub")
    for verb in ["deletecollection", "escalate", "bind", "impersonate"]:
        assert not allowed(NOTEBOOK, verb, group, resource, "team-vision")


OTHER_RESOURCES = [("", "pods"), ("", "pods/log"), ("", "pods/exec"), ("", "events"), ("", "secrets"),
                   ("", "configmaps"), ("", "services"), ("", "serviceaccounts"), ("", "resourcequotas"),
                   ("", "persistentvolumeclaims"), ("ray.io", "rayclusters"), ("ray.io", "rayjobs"),
                   ("rbac.authorization.k8s.io", "roles"), ("rbac.authorization.k8s.io", "rolebindings"),
                   ("apps", "deployments")]


def test_notebooks_read_pod_logs_and_events_and_nothing_else():
    granted = {(verb, group, resource) for verb in VERBS for group, resource in OTHER_RESOURCES
               if allowed(NOTEBOOK, verb, group, resource, "team-vision")}
    assert granted == {("get", "", "pods/log"), ("list", "", "events")}


def test_no_teammate_reads_another_servers_token_from_its_pod():
    """KubeSpawner puts JUPYTERHUB_API_TOKEN in the pod's environment: reading pods (get, list,
    watch) would hand a notebook every teammate's token. Logs are a subresource of their own."""
    for verb in ["get", "list", "watch"]:
        assert not allowed(NOTEBOOK, verb, "", "pods", "team-vision")
    assert allowed(NOTEBOOK, "get", "", "pods/log", "team-vision")  # mlplatform.spark.logs()


def test_the_hub_spawns_in_every_team_namespace_with_what_kubespawner_uses():
    for namespace in ["team-vision", "team-nlp"]:
        for resource in ["pods", "persistentvolumeclaims", "secrets", "services"]:
            for verb in ["get", "watch", "list", "create", "delete"]:
                assert allowed(HUB, verb, "", resource, namespace)
            assert not allowed(HUB, "patch", "", resource, namespace)
        for resource in ["events", "resourcequotas"]:
            assert all(allowed(HUB, verb, "", resource, namespace) for verb in ["watch", "list"])
            assert not allowed(HUB, "create", "", resource, namespace)
        assert not allowed(HUB, "create", "ray.io", "rayservices", namespace)
        assert not allowed(HUB, "create", "rbac.authorization.k8s.io", "rolebindings", namespace)
    # Elsewhere the hub may only list and watch pods and quotas (its own namespace has the chart's Role).
    for namespace in ["kube-system", "jupyterhub"]:
        assert allowed(HUB, "list", "", "pods", namespace) and allowed(HUB, "watch", "", "resourcequotas", namespace)
        for verb in ["get", "create", "delete"]:
            assert not allowed(HUB, verb, "", "pods", namespace)
        assert not allowed(HUB, "list", "", "secrets", namespace)


def test_a_team_service_account_gets_nothing_in_another_team():
    nlp_notebook = ("mlplatform-notebook", "team-nlp")
    assert allowed(nlp_notebook, "create", "ray.io", "rayservices", "team-nlp")
    assert not allowed(nlp_notebook, "get", "", "pods/log", "team-vision")
