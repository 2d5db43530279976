"""The shape of the rendered RBAC: no wildcards, no resourceNames or nonResourceURLs, RoleBindings only to
the namespace's own Roles (never a ClusterRole such as edit or admin), and the only cluster-wide grant is the
hub's quota cache. What each account may do is asserted by the API server's own rules, in the fake API
server: tests/kubernetes/test_rbac_matrix.py."""

from ..support.rendered_cluster import rendered_objects

OBJECTS = rendered_objects()
MANAGED = {"app.kubernetes.io/managed-by": "mlplatform", "app.kubernetes.io/part-of": "mlplatform"}


def test_no_wildcards_and_the_only_cluster_wide_grant_is_the_hubs_quota_cache():
    assert {o["kind"] for o in OBJECTS} == {"Namespace", "ResourceQuota", "ConfigMap", "ServiceAccount", "Role",
                                            "RoleBinding", "ClusterRole", "ClusterRoleBinding", "DaemonSet",
                                            "NetworkPolicy", "ValidatingAdmissionPolicy",
                                            "ValidatingAdmissionPolicyBinding"}
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
