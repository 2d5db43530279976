"""The API server's RBAC authorizer, over the Roles, ClusterRoles and bindings stored in the fake.

Follows kubernetes plugin/pkg/auth/authorizer/rbac: the ClusterRoleBindings grant their ClusterRole
everywhere; a RoleBinding grants its Role, or the rules of a ClusterRole, in the binding's namespace
only. A rule allows a request when its verbs, apiGroups and resources (`pods/log`, `*/log`, `*`)
match, and its resourceNames are empty or name the object: never a create, nor a list or watch unless its
fieldSelector requires `metadata.name=<name>` (api.py names the request by it, as RequestInfo does). Subjects:
User (name), Group (one of the caller's groups), ServiceAccount (`system:serviceaccount:<ns>:<name>`,
its namespace defaulting to the RoleBinding's). `system:masters` bypasses RBAC, as in the real server.
A denial is the apiserver's own 403 (responsewriters.forbiddenMessage).

Not here: aggregated ClusterRoles (aggregationRule), nonResourceURLs (discovery is open to every
caller), the escalation check on writing Roles and bindings (`escalate` / `bind`), and impersonation.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import resources
from .errors import ApiError

ROLES = resources.by_name("roles")
CLUSTER_ROLES = resources.by_name("clusterroles")
ROLE_BINDINGS = resources.by_name("rolebindings")
CLUSTER_ROLE_BINDINGS = resources.by_name("clusterrolebindings")


@dataclass(frozen=True)
class Subject:
    """Who a request comes from, as the authenticator hands it to the authorizer (and admission webhooks see it
    as userInfo). extra: ((key, (values...)), ...), kept a tuple so a Subject stays hashable."""
    user: str
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()
    uid: str = ""

    @classmethod
    def user_named(cls, name: str, groups=()) -> Subject:
        return cls(name, (*groups, "system:authenticated"))

    @classmethod
    def service_account(cls, namespace: str, name: str, extra: dict[str, list[str]] | None = None,
                        uid: str = "") -> Subject:
        return cls(f"system:serviceaccount:{namespace}:{name}",
                   ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"),
                   tuple(sorted((k, tuple(v)) for k, v in (extra or {}).items())), uid)


ANONYMOUS = Subject("system:anonymous", ("system:unauthenticated",))
ADMIN = Subject("system:admin", ("system:masters", "system:authenticated"))


@dataclass(frozen=True)
class Attributes:
    """A resource request as the authorizer sees it (apiserver's RequestInfo)."""
    subject: Subject
    verb: str
    group: str
    resource: str
    subresource: str | None
    namespace: str | None
    name: str | None


def authorize(store, request: Attributes) -> tuple[bool, str]:
    """(allowed, reason); the reason names bindings whose role is missing, as RBAC's does."""
    if "system:masters" in request.subject.groups:
        return True, ""
    missing: list[str] = []
    for binding in store.list(CLUSTER_ROLE_BINDINGS)[0]:
        if _binds(binding, request.subject, "") and _grants(store, binding, None, request, missing):
            return True, ""
    if request.namespace:
        for binding in store.list(ROLE_BINDINGS, request.namespace)[0]:
            if _binds(binding, request.subject, request.namespace) \
                    and _grants(store, binding, request.namespace, request, missing):
                return True, ""
    return False, f"RBAC: [{', '.join(missing)}]" if len(missing) > 1 else (f"RBAC: {missing[0]}" if missing else "")


def forbidden(request: Attributes, reason: str = "") -> ApiError:
    """The 403 the apiserver answers: `pods "x" is forbidden: User "u" cannot get resource "pods" in API group
    "" in the namespace "ns"`."""
    resource = f"{request.resource}/{request.subresource}" if request.subresource else request.resource
    where = f'in the namespace "{request.namespace}"' if request.namespace else "at the cluster scope"
    why = (f'User "{request.subject.user}" cannot {request.verb} resource "{resource}" in API group '
           f'"{request.group}" {where}')
    if reason:
        why = f"{why}: {reason}"
    qualified = f"{request.resource}.{request.group}" if request.group else request.resource
    subject = f'{qualified} "{request.name}"' if request.name else qualified
    return ApiError(403, "Forbidden", f"{subject} is forbidden: {why}",
                    {"name": request.name or "", "group": request.group, "kind": request.resource})


def forbidden_path(subject: Subject, verb: str, path: str) -> ApiError:
    return ApiError(403, "Forbidden", f'forbidden: User "{subject.user}" cannot {verb} path "{path}"', {})


def _binds(binding: dict, subject: Subject, namespace: str) -> bool:
    for who in binding.get("subjects") or []:
        kind, name = who.get("kind"), who.get("name")
        if kind == "User" and name == subject.user:
            return True
        if kind == "Group" and name in subject.groups:
            return True
        if kind == "ServiceAccount":
            account_namespace = who.get("namespace") or namespace
            if account_namespace and subject.user == f"system:serviceaccount:{account_namespace}:{name}":
                return True
    return False


def _grants(store, binding: dict, namespace: str | None, request: Attributes, missing: list[str]) -> bool:
    ref = binding["roleRef"]
    kind = ROLES if ref["kind"] == "Role" else CLUSTER_ROLES
    try:
        role = store.get(kind, namespace if kind is ROLES else None, ref["name"])
    except ApiError as error:
        missing.append(error.message)
        return False
    return any(_allows(rule, request) for rule in role.get("rules") or [])


def _allows(rule: dict, request: Attributes) -> bool:
    resource = f"{request.resource}/{request.subresource}" if request.subresource else request.resource
    return (_has(rule.get("verbs"), request.verb) and _has(rule.get("apiGroups"), request.group)
            and _resource_matches(rule.get("resources") or [], resource, request.subresource)
            and (not rule.get("resourceNames") or request.name in rule["resourceNames"]))


def _has(values, wanted: str) -> bool:
    return bool(values) and ("*" in values or wanted in values)


def _resource_matches(rule_resources: list[str], resource: str, subresource: str | None) -> bool:
    return any(r in ("*", resource) or (subresource is not None and r == f"*/{subresource}") for r in rule_resources)
