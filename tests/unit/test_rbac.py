"""The shape of the rendered RBAC: no wildcards, no resourceNames or nonResourceURLs, RoleBindings only to
the namespace's own Roles (never a ClusterRole such as edit or admin), and the only cluster-wide grant is the
hub's quota cache. What each account may do is asserted by the API server's own rules, in the fake API
server: tests/kubernetes/test_rbac_matrix.py."""

from ..support.rendered_cluster import rendered_objects

OBJECTS = rendered_objects()
MANAGED = {"app.kubernetes.io/managed-by": "mlplatform", "app.kubernetes.io/part-of": "mlplatform"}


def test_no_wildcards_and_the_only_cluster_wide_grants_are_the_hubs_quota_cache_and_its_webhook_ca():
    assert {o["kind"] for o in OBJECTS} == {"Namespace", "ResourceQuota", "ConfigMap", "ServiceAccount", "Role",
                                            "RoleBinding", "ClusterRole", "ClusterRoleBinding", "DaemonSet",
                                            "NetworkPolicy", "ValidatingAdmissionPolicy",
                                            "ValidatingAdmissionPolicyBinding", "ValidatingWebhookConfiguration",
                                            "Deployment", "Service"}  # the rollout gateways (no Role binds theirs)
    for obj in OBJECTS:
        for rule in obj.get("rules", []):
            assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], obj["metadata"]
            # no nonResourceURLs; resourceNames only where the grant is one object's
            assert set(rule) - {"resourceNames"} == {"apiGroups", "resources", "verbs"}
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
        # The platform service in the hub pod puts its CA into the one webhook configuration it answers.
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "mlplatform-hub-webhook-ca", "labels": MANAGED},
         "rules": [{"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"],
                    "resourceNames": ["mlplatform-workloads"], "verbs": ["get", "patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "mlplatform-hub-webhook-ca", "labels": MANAGED},
         "subjects": [{"kind": "ServiceAccount", "name": "hub", "namespace": "jupyterhub"}],
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "mlplatform-hub-webhook-ca"}},
    ]
