"""ValidatingAdmissionPolicies, evaluated as the API server does: CEL over the request, after schema validation.

A policy applies through its bindings: the request's resource and operation match the policy's
`matchConstraints.resourceRules`, its namespace matches the binding's `matchResources.namespaceSelector`
(matchLabels, matchExpressions); then the policy's `variables` are computed in order and each
validation's `expression` must be true. A false one with `Deny` denies with the API server's message
(`<resource> "<name>" is forbidden: ValidatingAdmissionPolicy '<p>' with binding '<b>' denied request:
<message>`; 422 Invalid unless the validation's `reason` says otherwise).

CEL is evaluated by cel-python with the Kubernetes strings library's `join`. Admission sees requests
that come through the fake's HTTP API (the requester is known there: `requester`); the fake's own
writes (its kubelet, tests seeding objects through `FakeKube`) are not admitted, like a controller
writing with system:masters but also skipping policies: keep policy-relevant writes on the HTTP API.
"""

from __future__ import annotations

import contextvars
from functools import cache

import celpy
from celpy import celtypes

from . import resources
from .errors import ApiError
from .resources import Resource

# The user making the current HTTP request (set by api.Api; None for the fake's own writes).
requester: contextvars.ContextVar = contextvars.ContextVar("requester", default=None)

POLICIES = ("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies")
BINDINGS = ("admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings")
REASON_STATUS = {"Invalid": 422, "Forbidden": 403, "Unauthorized": 401, "RequestEntityTooLarge": 413}


def _join(items, separator=celtypes.StringType("")):
    return celtypes.StringType(str(separator).join(str(item) for item in items))


@cache
def _program(expression: str):
    env = celpy.Environment()
    return env.program(env.compile(expression), functions={"join": _join})


def check(store, resource: Resource, operation: str, obj: dict, old: dict | None, subresource: str | None = None):
    """Raise ApiError when a bound policy denies this write."""
    subject = requester.get()
    if subject is None:
        return
    policies = {p["metadata"]["name"]: p for p in store.list(resources.lookup(*POLICIES))[0]}
    for binding in store.list(resources.lookup(*BINDINGS))[0]:
        policy = policies.get(binding["spec"].get("policyName"))
        if policy is None or not _matches(policy, binding, store, resource, operation, obj, subresource):
            continue
        activation = {"object": celpy.json_to_cel(obj), "oldObject": celpy.json_to_cel(old),
                      "request": celpy.json_to_cel({
                          "operation": operation, "userInfo": {"username": subject.user, "groups": list(subject.groups)},
                          "resource": {"group": resource.group, "version": resource.version,
                                       "resource": resource.plural}})}
        variables = {}
        for variable in policy["spec"].get("variables", []):
            activation["variables"] = celtypes.MapType(variables)
            variables[celtypes.StringType(variable["name"])] = _evaluate(variable["expression"], activation)
        activation["variables"] = celtypes.MapType(variables)
        for validation in policy["spec"].get("validations", []):
            result = _evaluate(validation["expression"], activation)
            # An evaluation error counts as false (failurePolicy: Fail, the policies rendered here).
            if not (isinstance(result, celtypes.BoolType) and bool(result)) \
                    and "Deny" in binding["spec"].get("validationActions", []):
                raise _denied(policy, binding, validation, activation, resource, obj)


def _evaluate(expression: str, activation: dict):
    """The value, or the error as a value (a missing field, a type error): the API server's evaluation
    error, which fails the validation under failurePolicy Fail."""
    try:
        return _program(expression).evaluate(activation)
    except Exception as e:  # cel-python raises some evaluation errors instead of returning them
        return celpy.CELEvalError(f"{type(e).__name__}: {e}")


def _matches(policy, binding, store, resource: Resource, operation: str, obj: dict, subresource: str | None) -> bool:
    name = f"{resource.plural}/{subresource}" if subresource else resource.plural
    rules = policy["spec"].get("matchConstraints", {}).get("resourceRules", [])
    if not any(_in(resource.group, r.get("apiGroups")) and _in(resource.version, r.get("apiVersions"))
               and _in(operation, r.get("operations")) and _in(name, r.get("resources")) for r in rules):
        return False
    selector = binding["spec"].get("matchResources", {}).get("namespaceSelector")
    namespace = obj.get("metadata", {}).get("namespace")
    if selector is None or not resource.namespaced:
        return True
    labels = store.get(resources.by_name("namespaces"), None, namespace)["metadata"].get("labels", {})
    return _selects(selector, labels)


def _in(value: str, allowed) -> bool:
    return "*" in (allowed or []) or value in (allowed or [])


def _selects(selector: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    tests = {"In": lambda e: labels.get(e["key"]) in e.get("values", []),
             "NotIn": lambda e: labels.get(e["key"]) not in e.get("values", []),
             "Exists": lambda e: e["key"] in labels, "DoesNotExist": lambda e: e["key"] not in labels}
    return all(tests[e["operator"]](e) for e in selector.get("matchExpressions") or [])


def _denied(policy, binding, validation, activation, resource: Resource, obj: dict) -> ApiError:
    message = validation.get("message") or f"failed expression: {validation['expression']}"
    if validation.get("messageExpression"):
        message = str(_program(validation["messageExpression"]).evaluate(activation))
    reason = validation.get("reason", "Invalid")
    name = obj.get("metadata", {}).get("name", "")
    text = (f'{resource.group_resource} "{name}" is forbidden: ValidatingAdmissionPolicy '
            f"'{policy['metadata']['name']}' with binding '{binding['metadata']['name']}' denied request: {message}")
    return ApiError(REASON_STATUS.get(reason, 422), reason, text,
                    {"name": name, "group": resource.group, "kind": resource.plural})
