"""The resource types the fake serves: where each lives in the URL space and how it behaves."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core API
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    subresources: tuple[str, ...] = ()
    custom: bool = False  # a CRD: validated against ../shared/schemas, not kubernetes-validate

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """`pods`, `rayservices.ray.io`: how the API server names the resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


RESOURCES = (
    Resource("", "v1", "namespaces", "Namespace", namespaced=False, subresources=("status",)),
    Resource("", "v1", "pods", "Pod", subresources=("status", "log")),
    Resource("", "v1", "events", "Event"),
    Resource("", "v1", "services", "Service", subresources=("status",)),
    Resource("", "v1", "secrets", "Secret"),
    Resource("", "v1", "configmaps", "ConfigMap"),
    Resource("", "v1", "serviceaccounts", "ServiceAccount"),
    Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", subresources=("status",)),
    Resource("", "v1", "resourcequotas", "ResourceQuota", subresources=("status",)),
    Resource("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False),
    Resource("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
    Resource("events.k8s.io", "v1", "events", "Event"),
    Resource("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies", "ValidatingAdmissionPolicy",
             namespaced=False, subresources=("status",)),
    Resource("admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings",
             "ValidatingAdmissionPolicyBinding", namespaced=False),
    Resource("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations",
             "ValidatingWebhookConfiguration", namespaced=False),  # checked and called by webhooks.py
    Resource("ray.io", "v1", "rayservices", "RayService", subresources=("status",), custom=True),
    Resource("sparkoperator.k8s.io", "v1beta2", "sparkapplications", "SparkApplication",
             subresources=("status",), custom=True),
)

BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
BY_KIND = {(r.api_version, r.kind): r for r in RESOURCES}


def lookup(group: str, version: str, plural: str) -> Resource | None:
    return BY_PATH.get((group, version, plural))


def for_object(obj: dict) -> Resource:
    try:
        return BY_KIND[(obj["apiVersion"], obj["kind"])]
    except KeyError:
        known = ", ".join(sorted(f"{a} {k}" for a, k in BY_KIND))
        raise ValueError(f"the fake serves no {obj.get('apiVersion')} {obj.get('kind')}; it serves: {known}") from None


def by_name(name: str) -> Resource:
    """`pods`, `Pod`, `rayservices`, `RayService`: the tests' short way to name a resource."""
    matches = [r for r in RESOURCES if name in (r.plural, r.kind) and r.group != "events.k8s.io"]
    if not matches:
        raise ValueError(f"unknown resource {name!r}; known: {', '.join(r.plural for r in RESOURCES)}")
    return matches[0]
