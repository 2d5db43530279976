"""The fake API server authorizes as the real one's RBAC authorizer: the rules the RBAC matrix relies on."""

from __future__ import annotations

import json

import kubernetes
import pytest

NS, OTHER = "team-a", "team-b"
RBAC = "rbac.authorization.k8s.io/v1"


def role(name: str, rules: list[dict], namespace: str | None = NS) -> dict:
    kind = "Role" if namespace else "ClusterRole"
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": RBAC, "kind": kind, "metadata": meta, "rules": rules}


def binding(name: str, subjects: list[dict], role_kind: str = "Role", namespace: str | None = NS) -> dict:
    kind = "RoleBinding" if namespace else "ClusterRoleBinding"
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": RBAC, "kind": kind, "metadata": meta, "subjects": subjects,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name}}


def rule(resources: list[str], verbs: list[str], groups=("",), names=None) -> dict:
    return {"apiGroups": list(groups), "resources": resources, "verbs": verbs,
            **({"resourceNames": names} if names else {})}


def pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}


@pytest.fixture
def cluster(fake_kube, kubeconfig):
    for namespace in (NS, OTHER):
        fake_kube.namespace(namespace)
        fake_kube.seed({**pod("p"), "metadata": {"name": "p", "namespace": namespace}})
    return fake_kube


def core(fake_kube, token: str) -> kubernetes.client.CoreV1Api:
    config = kubernetes.client.Configuration(host=fake_kube.url, api_key={"authorization": f"Bearer {token}"})
    return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(config))


def status(call, *args, **kwargs) -> tuple[int, str]:
    try:
        call(*args, **kwargs)
    except kubernetes.client.ApiException as error:
        return error.status, json.loads(error.body)["message"]
    return 200, ""


def test_a_service_account_gets_what_its_role_binding_grants_in_that_namespace_only(cluster):
    cluster.seed(role("reader", [rule(["pods"], ["get"])]))
    cluster.seed(binding("reader", [{"kind": "ServiceAccount", "name": "app", "namespace": NS}]))
    app = core(cluster, cluster.token_for(service_account=f"{NS}/app"))
    assert status(app.read_namespaced_pod, "p", NS) == (200, "")
    assert status(app.list_namespaced_pod, NS) == (403, f'pods is forbidden: User "system:serviceaccount:{NS}:app" '
                                                        f'cannot list resource "pods" in API group "" in the namespace '
                                                        f'"{NS}"')
    assert status(app.read_namespaced_pod, "p", OTHER) == (
        403, f'pods "p" is forbidden: User "system:serviceaccount:{NS}:app" cannot get resource "pods" in API group "" '
             f'in the namespace "{OTHER}"')
    assert status(app.list_pod_for_all_namespaces)[1] == (
        f'pods is forbidden: User "system:serviceaccount:{NS}:app" cannot list resource "pods" in API group "" at the '
        "cluster scope")
    # The same name in another namespace is another account.
    assert status(core(cluster, cluster.token_for(service_account=f"{OTHER}/app")).read_namespaced_pod, "p", NS)[0] \
        == 403


def test_subresources_are_resources_of_their_own(cluster):
    cluster.seed(role("logs", [rule(["pods/log"], ["get"])]))
    cluster.seed(binding("logs", [{"kind": "User", "name": "ann"}]))
    cluster.patch_status("pods", "p", {"phase": "Running"}, namespace=NS)
    ann = core(cluster, cluster.token_for(user="ann"))
    assert status(ann.read_namespaced_pod_log, "p", NS)[0] == 200
    assert status(ann.read_namespaced_pod, "p", NS)[0] == 403  # pods/log grants no pod
    cluster.seed(role("status", [rule(["*/status"], ["get"])]))
    cluster.seed(binding("status", [{"kind": "User", "name": "bo"}]))
    bo = core(cluster, cluster.token_for(user="bo"))
    assert status(bo.read_namespaced_pod_status, "p", NS)[0] == 200
    code, message = status(bo.read_namespaced_pod_log, "p", NS)
    assert code == 403 and 'cannot get resource "pods/log" in API group ""' in message


def test_resource_names_allow_only_requests_naming_them(cluster):
    cluster.seed(role("one", [rule(["pods"], ["get", "list", "delete", "create"], names=["p"])]))
    cluster.seed(binding("one", [{"kind": "Group", "name": "team"}]))
    member = core(cluster, cluster.token_for(user="cy", groups=("team",)))
    assert status(member.read_namespaced_pod, "p", NS)[0] == 200
    assert status(member.list_namespaced_pod, NS)[0] == 403  # a list names no object
    assert status(member.create_namespaced_pod, NS, pod("q"))[0] == 403  # nor does a create
    assert status(core(cluster, cluster.token_for(user="cy")).read_namespaced_pod, "p", NS)[0] == 403  # not in group


def test_wildcards_and_a_cluster_role_bound_in_one_namespace(cluster):
    cluster.seed(role("everything", [rule(["*"], ["*"], groups=["*"])], namespace=None))
    cluster.seed(binding("everything", [{"kind": "ServiceAccount", "name": "ops"}], role_kind="ClusterRole"))
    ops = core(cluster, cluster.token_for(service_account=f"{NS}/ops"))  # the subject's namespace: the binding's
    assert status(ops.delete_namespaced_pod, "p", NS)[0] == 200
    assert status(ops.read_namespaced_pod, "p", OTHER)[0] == 403  # a RoleBinding grants only in its namespace
    assert status(ops.list_namespace)[0] == 403  # and nothing cluster-scoped

    cluster.seed(role("lister", [rule(["pods"], ["list", "watch"])], namespace=None))
    cluster.seed(binding("lister", [{"kind": "Group", "name": f"system:serviceaccounts:{NS}"}], "ClusterRole", None))
    assert status(ops.list_pod_for_all_namespaces)[0] == 200
    assert status(core(cluster, cluster.token_for(service_account=f"{OTHER}/ops")).list_pod_for_all_namespaces)[0] \
        == 403


def test_verbs_follow_the_request_and_a_missing_role_is_named(cluster):
    cluster.seed(role("watcher", [rule(["pods"], ["watch"])]))
    cluster.seed(binding("watcher", [{"kind": "User", "name": "dee"}]))
    cluster.seed(binding("gone", [{"kind": "User", "name": "dee"}]))
    dee = core(cluster, cluster.token_for(user="dee"))
    assert status(dee.list_namespaced_pod, NS, watch=True, timeout_seconds=0, _preload_content=False)[0] == 200
    code, message = status(dee.patch_namespaced_pod, "p", NS, {"metadata": {"labels": {"a": "b"}}})
    assert code == 403 and message.endswith(f'cannot patch resource "pods" in API group "" in the namespace "{NS}": '
                                            'RBAC: roles.rbac.authorization.k8s.io "gone" not found')
    assert status(dee.delete_collection_namespaced_pod, NS)[1].startswith(
        'pods is forbidden: User "dee" cannot deletecollection resource "pods"')


def test_roles_and_bindings_are_validated_like_any_object(cluster):
    admin = core(cluster, cluster.token)
    rbac = kubernetes.client.RbacAuthorizationV1Api(admin.api_client)
    bad = role("bad", [{"apiGroups": [""], "resources": ["pods"]}])  # verbs are required
    code, message = status(rbac.create_namespaced_role, NS, bad)
    assert code == 422 and 'Role "bad" is invalid: rules[0].verbs: Required value' in message


def test_a_list_or_watch_selecting_one_name_is_authorized_as_a_request_for_that_name(cluster):
    """requestinfo.go: `fieldSelector=metadata.name=<name>` names a list or watch, so resourceNames admit it (an
    informer of one object); any other selector leaves it unnamed."""
    cluster.seed(role("one-map", [rule(["configmaps"], ["get", "list", "watch", "deletecollection"], names=["map"])]))
    cluster.seed(binding("one-map", [{"kind": "User", "name": "eve"}]))
    cluster.seed({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "map", "namespace": NS}})
    eve = core(cluster, cluster.token_for(user="eve"))
    for selector in ("metadata.name=map", "metadata.name==map", "metadata.namespace=team-a,metadata.name=map"):
        assert status(eve.list_namespaced_config_map, NS, field_selector=selector) == (200, ""), selector
    events = list(kubernetes.watch.Watch().stream(eve.list_namespaced_config_map, NS,
                                                  field_selector="metadata.name=map", timeout_seconds=1))
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "map")]
    assert status(eve.list_namespaced_config_map, NS, field_selector="metadata.name=other") == (
        403, f'configmaps "other" is forbidden: User "eve" cannot list resource "configmaps" in API group "" in the '
             f'namespace "{NS}"')
    for selector in (None, "metadata.name!=map", "metadata.namespace=team-a", "metadata.name=map/x"):
        code, message = status(eve.list_namespaced_config_map, NS, **({"field_selector": selector} if selector else {}))
        assert (code, message.startswith('configmaps is forbidden: User "eve" cannot list')) == (403, True), selector
    code, message = status(eve.list_namespaced_config_map, NS, field_selector="metadata.name=map", watch=True,
                           timeout_seconds=0, _preload_content=False)
    assert code == 200
    assert status(eve.list_namespaced_config_map, NS, field_selector="metadata.name=map,metadata.name=x")[0] == 200
    # Only a list or a watch: a deletecollection with the same selector names nothing.
    assert status(eve.delete_collection_namespaced_config_map, NS, field_selector="metadata.name=map")[0] == 403
