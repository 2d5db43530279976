"""Validating admission webhooks, called as the API server calls them (k8s.io/apiserver admission/plugin/webhook, v1).

A ValidatingWebhookConfiguration written through the HTTP API is defaulted and checked as the API server does
(`configuration`: failurePolicy Fail, matchPolicy Equivalent, timeoutSeconds 10, empty selectors, rule scope
`*`, service port 443; a 422 naming the field otherwise).

A write through the HTTP API (create, update, patch, delete; a subresource only when a rule names
`<plural>/<sub>`, `<plural>/*`, `*/<sub>` or `*/*`) is sent, after schema validation and the
ValidatingAdmissionPolicies and before anything is stored, to every webhook whose rules (groups, versions,
operations, resources, scope), namespaceSelector, objectSelector (the object's or the old object's labels) and
matchConditions (CEL) select it: an `admission.k8s.io/v1` AdmissionReview POSTed over TLS, each call with its
own request uid. The webhooks are called at once, as the API server does; the answer is the first refusal in a
stable order (configurations by name, webhooks in order). A refusal is the webhook's status (403 Forbidden if
it gives no code) with the API server's message (`<resource> "<name>" is forbidden: admission webhook "<w>"
denied the request: <message>`). A call that fails (no endpoints, connection refused, TLS, timeout, not 200,
not an AdmissionReview, another uid) denies with 500 under failurePolicy Fail and is skipped under Ignore.

TLS as the API server does it: a `service` webhook is reached at the address `FakeKube.route_service` gave
for that Service and port (the fake has no network) and its certificate is verified against `caBundle` as
`<service>.<namespace>.svc`; a `url` webhook against `caBundle`, or the system roots without one, as the URL's
host. Webhook configurations and policies (admissionregistration.k8s.io) are never sent to webhooks, as on
the real server, so a broken webhook cannot lock its own configuration. The fake's own writes (seed, kubelet)
are not admitted (admission.requester is None for them).

Not here: mutating webhooks, AdmissionReview v1beta1 (a configuration must accept v1), CONNECT (the fake
serves no connect subresources), the `authorizer` variable in matchConditions, audit annotations.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import re
import ssl
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import celpy

from . import resources
from .admission import _evaluate, _selects
from .errors import ApiError
from .rbac import Subject
from .resources import Resource

CONFIGURATIONS = resources.lookup("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations")
EXEMPT_GROUP = "admissionregistration.k8s.io"
REVIEW = ("admission.k8s.io/v1", "AdmissionReview")
OPTIONS = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions", "DELETE": "DeleteOptions"}
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class Attributes:
    """One write as admission sees it (the apiserver's admission.Attributes)."""
    resource: Resource
    subresource: str | None
    operation: str  # CREATE UPDATE DELETE
    name: str
    namespace: str | None
    object: dict | None  # None for DELETE
    old_object: dict | None  # None for CREATE
    subject: Subject
    dry_run: bool
    options: dict


class CallFailed(Exception):
    """A webhook that could not be asked, or did not answer an AdmissionReview: its failurePolicy decides."""


class Webhooks:
    def __init__(self, store):
        self.store = store
        # (namespace, service, port) → (host, port) to connect to: the Service's endpoint, given by the test.
        self.routes: dict[tuple[str, str, int], tuple[str, int]] = {}

    def matching(self, resource: Resource, subresource: str | None, operation: str) -> list[dict]:
        """The webhooks whose rules match the request (selectors come later, with the object), in call order."""
        if resource.group == EXEMPT_GROUP:
            return []
        hooks = []
        for config in self.store.list(CONFIGURATIONS)[0]:  # sorted by name
            for hook in config.get("webhooks") or []:
                hook = _defaulted(hook)  # seeded configurations skipped the HTTP API's defaulting
                if any(_rule_matches(r, resource, subresource, operation) for r in hook.get("rules") or []):
                    hooks.append(hook)
        return hooks

    async def admit(self, hooks: list[dict], attributes: Attributes) -> list[str]:
        """Call the hooks that select this write; raise the first refusal. Returns the webhooks' warnings."""
        selected = [h for h in hooks if self._selects(h, attributes)]
        outcomes = await asyncio.gather(*(self._call(h, attributes) for h in selected))
        warnings = []
        for outcome in outcomes:
            if isinstance(outcome, ApiError):
                raise outcome
            warnings += outcome
        return warnings

    # --- which webhooks see the write ---------------------------------------------------------------------
    def _selects(self, hook: dict, a: Attributes) -> bool:
        if hook["objectSelector"]:
            labelled = [o for o in (a.object, a.old_object) if o is not None]
            if not any(_selects(hook["objectSelector"], o["metadata"].get("labels") or {}) for o in labelled):
                return False
        if not hook["namespaceSelector"] or (not a.namespace and a.resource.plural != "namespaces"):
            return True  # a cluster-scoped object other than a namespace is never exempted
        return _selects(hook["namespaceSelector"], self._namespace_labels(a))

    def _namespace_labels(self, a: Attributes) -> dict:
        # A namespace being created or updated is matched on its new labels (the stored ones are not there yet).
        if a.resource.plural == "namespaces" and not a.subresource and a.operation in ("CREATE", "UPDATE"):
            return a.object["metadata"].get("labels") or {}
        namespace = self.store.get(resources.by_name("namespaces"), None, a.namespace)
        return namespace["metadata"].get("labels") or {}

    # --- calling one ---------------------------------------------------------------------------------------
    async def _call(self, hook: dict, a: Attributes) -> ApiError | list[str]:
        if a.dry_run and hook.get("sideEffects") not in ("None", "NoneOnDryRun"):  # only a seeded one can say so
            return ApiError(400, "BadRequest", f'admission webhook "{hook["name"]}" does not support dry run')
        uid = str(uuid.uuid4())
        request = _request(a, uid)
        try:
            if not _conditions_hold(hook, request):
                return []
            answer = _verify(await self._post(hook, {"apiVersion": REVIEW[0], "kind": REVIEW[1], "request": request}),
                             uid)
        except CallFailed as failure:
            if hook["failurePolicy"] == "Ignore":
                return []
            message = f'failed calling webhook "{hook["name"]}": {failure}'
            return ApiError(500, "InternalError", f"Internal error occurred: {message}",
                            {"causes": [{"message": message}]})
        if answer.get("allowed") is True:
            return list(answer.get("warnings") or [])
        return _refusal(hook["name"], answer.get("status"), a)

    async def _post(self, hook: dict, review: dict) -> dict:
        config, timeout = hook["clientConfig"], hook["timeoutSeconds"]
        connect, shown, server_name = self._where(config, f"?timeout={timeout}s")
        try:
            context = _tls(config.get("caBundle"))
        except (ValueError, ssl.SSLError) as error:
            raise CallFailed(f"could not get REST client: unable to load root certificates: {error}") from None
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session, \
                    session.post(connect, json=review, ssl=context,
                                 server_hostname=server_name, headers={"Accept": "application/json"}) as answer:
                status, body = answer.status, await answer.read()
        except TimeoutError:
            raise CallFailed(f'failed to call webhook: Post "{shown}": context deadline exceeded') from None
        except aiohttp.ClientConnectorCertificateError as error:
            why = error.certificate_error.verify_message
            raise CallFailed(f'failed to call webhook: Post "{shown}": tls: failed to verify certificate: {why}') \
                from None
        except aiohttp.ClientSSLError as error:
            raise CallFailed(f'failed to call webhook: Post "{shown}": tls: {error}') from None
        except aiohttp.ClientConnectorError as error:
            why = (error.strerror or str(error)).lower()
            raise CallFailed(f'failed to call webhook: Post "{shown}": dial tcp {error.host}:{error.port}: '
                             f"connect: {why}") from None
        except aiohttp.ClientError as error:
            raise CallFailed(f'failed to call webhook: Post "{shown}": {error}') from None
        if status != 200:
            text = body.decode(errors="replace")[:200]
            why = (f'an error on the server ("{text}") has prevented the request from succeeding' if status >= 500
                   else f"the server responded with the status code {status} but did not return more information")
            raise CallFailed(f"failed to call webhook: {why}")
        try:
            parsed = json.loads(body)
        except ValueError as error:
            raise CallFailed(f"failed to call webhook: couldn't get version/kind; json parse error: {error}") from None
        if not isinstance(parsed, dict):
            raise CallFailed("failed to call webhook: couldn't get version/kind; json parse error: not an object")
        return parsed

    def _where(self, config: dict, query: str) -> tuple[str, str, str | None]:
        """(URL to connect to, URL the API server would name, TLS server name or None for the URL's host)."""
        if config.get("url"):
            return config["url"] + query, config["url"] + query, None
        service = config["service"]
        namespace, name, port = service["namespace"], service["name"], service.get("port") or 443
        path = (service.get("path") or "/") + query
        host = f"{name}.{namespace}.svc"
        shown = f"https://{host}:{port}{path}"
        address = self.routes.get((namespace, name, port))
        if address is None:
            if any(key[:2] == (namespace, name) for key in self.routes):
                raise CallFailed(f'failed to call webhook: Post "{shown}": no service port {port} found for '
                                 f'service "{name}"')
            raise CallFailed(f'failed to call webhook: Post "{shown}": no endpoints available for service "{name}"')
        ip, ip_port = address
        return f"https://{f'[{ip}]' if ':' in ip else ip}:{ip_port}{path}", shown, host


def _tls(ca_bundle: str | None) -> ssl.SSLContext:
    """The caBundle replaces the system roots, as in the API server's webhook client."""
    if not ca_bundle:
        return ssl.create_default_context()
    return ssl.create_default_context(cadata=base64.b64decode(ca_bundle, validate=True).decode())


def _request(a: Attributes, uid: str) -> dict:
    user = {"username": a.subject.user, "groups": list(a.subject.groups)}
    if a.subject.uid:
        user["uid"] = a.subject.uid
    if a.subject.extra:
        user["extra"] = {key: list(values) for key, values in a.subject.extra}
    kind = {"group": a.resource.group, "version": a.resource.version, "kind": a.resource.kind}
    resource = {"group": a.resource.group, "version": a.resource.version, "resource": a.resource.plural}
    request = {"uid": uid, "kind": kind, "resource": resource, "requestKind": kind, "requestResource": resource,
               "name": a.name, "namespace": a.namespace or "", "operation": a.operation, "userInfo": user,
               "object": a.object, "oldObject": a.old_object, "dryRun": a.dry_run,
               "options": {"apiVersion": "meta.k8s.io/v1", "kind": OPTIONS[a.operation], **a.options}}
    if a.subresource:
        request["subResource"] = request["requestSubResource"] = a.subresource
    if not a.namespace:
        del request["namespace"]  # omitempty
    return request


def _conditions_hold(hook: dict, request: dict) -> bool:
    """matchConditions: all true → call; any false → skip; an error (none false) → a call failure."""
    conditions = hook.get("matchConditions") or []
    if not conditions:
        return True
    activation = {"object": celpy.json_to_cel(request["object"]), "oldObject": celpy.json_to_cel(request["oldObject"]),
                  "request": celpy.json_to_cel(request)}
    errors = []
    for condition in conditions:
        result = _evaluate(condition["expression"], activation)
        if isinstance(result, celpy.CELEvalError) or not isinstance(result, celpy.celtypes.BoolType):
            errors.append(f"{condition['name']}: {result}")
        elif not bool(result):
            return False
    if errors:
        raise CallFailed(f"failed to evaluate match conditions: {'; '.join(errors)}")
    return True


def _verify(review: dict, uid: str) -> dict:
    """The AdmissionReview's response, checked as webhookrequest.VerifyAdmissionResponse does."""
    response = review.get("response")
    if not isinstance(response, dict):
        raise CallFailed("received invalid webhook response: webhook response was absent")
    if response.get("uid") != uid:
        raise CallFailed(f'received invalid webhook response: expected response.uid="{uid}", '
                         f'got "{response.get("uid") or ""}"')
    if (review.get("apiVersion"), review.get("kind")) != REVIEW:
        raise CallFailed(f"received invalid webhook response: expected webhook response of {REVIEW[0]}, "
                         f"Kind={REVIEW[1]}, got {review.get('apiVersion')}, Kind={review.get('kind')}")
    return response


def _refusal(webhook: str, status: dict | None, a: Attributes) -> ApiError:
    """webhookerrors.ToStatusErr: the webhook's code (403 if none) and reason, the API server's message."""
    status = status if isinstance(status, dict) else {}
    code = status.get("code") or 403
    denied = f'admission webhook "{webhook}" denied the request'
    why = status.get("message") or status.get("reason")
    denied = f"{denied}: {why}" if why else f"{denied} without explanation"
    name = a.name or "Unknown"
    if code == 500:
        prefix, reason, details = "Internal error occurred", "InternalError", {"causes": [{"message": denied}]}
    else:
        prefix, reason = f'{a.resource.group_resource} "{name}" is forbidden', "Forbidden"
        details = {"name": name, "group": a.resource.group, "kind": a.resource.plural}
    return ApiError(code, status.get("reason") or reason, f"{prefix}: {denied}", status.get("details") or details)


# --- rules (predicates/rules/rules.go) ------------------------------------------------------------------------
def _rule_matches(rule: dict, resource: Resource, subresource: str | None, operation: str) -> bool:
    def has(values, value):
        return "*" in (values or []) or value in (values or [])

    def names(entry: str) -> bool:
        res, _, sub = entry.partition("/")
        return res in ("*", resource.plural) and (sub == "*" or sub == (subresource or ""))

    scope = rule.get("scope") or "*"
    # A Namespace is cluster-scoped: `Cluster` rules match it, `Namespaced` ones do not.
    in_scope = scope == "*" or (scope == "Namespaced") == resource.namespaced
    return (has(rule.get("apiGroups"), resource.group) and has(rule.get("apiVersions"), resource.version)
            and has(rule.get("operations"), operation) and any(names(r) for r in rule.get("resources") or [])
            and in_scope)


# --- the configuration: defaults and validation (pkg/apis/admissionregistration) --------------------------------
def _defaulted(hook: dict) -> dict:
    hook = copy.deepcopy(hook)
    for key, value in (("failurePolicy", "Fail"), ("matchPolicy", "Equivalent"), ("namespaceSelector", {}),
                       ("objectSelector", {}), ("timeoutSeconds", 10)):
        if hook.get(key) is None:
            hook[key] = value
    for rule in hook.get("rules") or []:
        if isinstance(rule, dict) and rule.get("scope") is None:
            rule["scope"] = "*"
    service = (hook.get("clientConfig") or {}).get("service")
    if isinstance(service, dict) and service.get("port") is None:
        service["port"] = 443
    return hook


def configuration(obj: dict) -> dict:
    """The ValidatingWebhookConfiguration as the API server stores it: defaulted; a 422 naming the field if invalid."""
    obj = copy.deepcopy(obj)
    hooks = [_defaulted(h) if isinstance(h, dict) else h for h in obj.get("webhooks") or []]
    if "webhooks" in obj:
        obj["webhooks"] = hooks
    causes, seen = [], set()
    for i, hook in enumerate(hooks):
        if isinstance(hook, dict):
            causes += _hook_causes(f"webhooks[{i}]", hook, seen)
    if causes:
        raise ApiError.invalid(CONFIGURATIONS, obj.get("metadata", {}).get("name", ""), causes)
    return obj


def _value(value) -> str:
    """A value as Go's field errors print it: strings quoted, slices as []string{...}."""
    if isinstance(value, list):
        return "[]string{" + ", ".join(json.dumps(v) for v in value) + "}"
    return json.dumps(value) if isinstance(value, str) else str(value)


def _invalid(at: str, value, why: str) -> tuple[str, str]:
    return at, f"Invalid value: {_value(value)}: {why}"


def _unsupported(at: str, value, allowed: tuple[str, ...]) -> list[tuple[str, str]]:
    if value in allowed:
        return []
    return [(at, f"Unsupported value: {_value(value)}: supported values: {', '.join(json.dumps(v) for v in allowed)}")]


def _hook_causes(at: str, hook: dict, seen: set) -> list[tuple[str, str]]:
    causes = []
    name = hook.get("name") or ""
    if not name:
        causes.append((f"{at}.name", "Required value"))
    elif name in seen:
        causes.append((f"{at}.name", f"Duplicate value: {_value(name)}"))
    elif not _SUBDOMAIN.match(name) or len(name) > 253:
        causes.append(_invalid(f"{at}.name", name, "a lowercase RFC 1123 subdomain must consist of lower case "
                               "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
                               "character"))
    elif len(name.split(".")) < 3:
        causes.append(_invalid(f"{at}.name", name, "should be a domain with at least three segments separated by dots"))
    seen.add(name)
    causes += _client_config_causes(f"{at}.clientConfig", hook.get("clientConfig") or {})
    for j, rule in enumerate(hook.get("rules") or []):
        causes += _rule_causes(f"{at}.rules[{j}]", rule)
    causes += _unsupported(f"{at}.failurePolicy", hook["failurePolicy"], ("Fail", "Ignore"))
    causes += _unsupported(f"{at}.matchPolicy", hook["matchPolicy"], ("Equivalent", "Exact"))
    if hook.get("sideEffects") is None:
        causes.append((f"{at}.sideEffects", "Required value: must specify one of None, NoneOnDryRun"))
    else:  # v1 allows only these; Some and Unknown were v1beta1's
        causes += _unsupported(f"{at}.sideEffects", hook["sideEffects"], ("None", "NoneOnDryRun"))
    timeout = hook["timeoutSeconds"]
    if not isinstance(timeout, int) or not 1 <= timeout <= 30:
        causes.append(_invalid(f"{at}.timeoutSeconds", timeout, "the timeout value must be between 1 and 30 seconds"))
    versions = hook.get("admissionReviewVersions") or []
    if not versions:
        causes.append((f"{at}.admissionReviewVersions", "Required value: must specify one of v1, v1beta1"))
    elif "v1" not in versions:  # the real server also speaks v1beta1; the fake sends v1 only
        causes.append(_invalid(f"{at}.admissionReviewVersions", versions, "must include at least one of v1"))
    for key in ("namespaceSelector", "objectSelector"):
        causes += _selector_causes(f"{at}.{key}", hook[key])
    for k, condition in enumerate(hook.get("matchConditions") or []):
        for field in ("name", "expression"):
            if not condition.get(field):
                causes.append((f"{at}.matchConditions[{k}].{field}", "Required value"))
    return causes


def _client_config_causes(at: str, config: dict) -> list[tuple[str, str]]:
    url, service = config.get("url"), config.get("service")
    if (url is None) == (service is None):
        return [(at, "Required value: exactly one of url or service is required")]
    if url is not None:
        return _url_causes(f"{at}.url", url)
    causes = []
    for field in ("namespace", "name"):
        if not service.get(field):
            causes.append((f"{at}.service.{field}", f"Required value: service {field} is required"))
    port = service.get("port")
    if not isinstance(port, int) or not 1 <= port <= 65535:
        causes.append(_invalid(f"{at}.service.port", port, "port is not valid: must be between 1 and 65535, inclusive"))
    path = service.get("path")
    if path not in (None, "", "/") and not path.startswith("/"):
        causes.append(_invalid(f"{at}.service.path", path, "must start with a '/'"))
    return causes


def _url_causes(at: str, url: str) -> list[tuple[str, str]]:
    form = "; desired format: https://host[/path]"
    parts = urlsplit(url)
    causes = []
    if parts.scheme != "https":
        causes.append(_invalid(at, parts.scheme, f"'https' is the only allowed URL scheme{form}"))
    if not parts.netloc:
        causes.append(_invalid(at, parts.netloc, f"host must be specified{form}"))
    if "@" in parts.netloc:
        user = parts.netloc.rpartition("@")[0]
        causes.append(_invalid(at, user, "user information is not permitted in the URL"))
    if parts.fragment:
        causes.append(_invalid(at, parts.fragment, "fragments are not permitted in the URL"))
    if parts.query:
        causes.append(_invalid(at, parts.query, "query parameters are not permitted in the URL"))
    return causes


def _rule_causes(at: str, rule: dict) -> list[tuple[str, str]]:
    causes = []
    operations = rule.get("operations") or []
    if not operations:
        causes.append((f"{at}.operations", "Required value"))
    elif len(operations) > 1 and "*" in operations:
        causes.append(_invalid(f"{at}.operations", operations, "if '*' is present, must not specify other operations"))
    for k, operation in enumerate(operations):
        causes += _unsupported(f"{at}.operations[{k}]", operation, ("*", "CONNECT", "CREATE", "DELETE", "UPDATE"))
    for field, what in (("apiGroups", "API groups"), ("apiVersions", "API versions")):
        values = rule.get(field)
        if not values:
            causes.append((f"{at}.{field}", "Required value"))
        elif len(values) > 1 and "*" in values:
            causes.append(_invalid(f"{at}.{field}", values, f"if '*' is present, must not specify other {what}"))
    for k, version in enumerate(rule.get("apiVersions") or []):
        if not version:
            causes.append((f"{at}.apiVersions[{k}]", "Required value"))
    names = rule.get("resources") or []
    if not names:
        causes.append((f"{at}.resources", "Required value"))
    for k, name in enumerate(names):
        if not name:
            causes.append((f"{at}.resources[{k}]", "Required value"))
    if len(names) > 1 and "*/*" in names:
        causes.append(_invalid(f"{at}.resources", names, "if '*/*' is present, must not specify other resources"))
    if "*" in names and any(n and n != "*" and "/" not in n for n in names):
        causes.append(_invalid(f"{at}.resources", names,
                               "if '*' is present, must not specify other resources without subresources"))
    causes += _unsupported(f"{at}.scope", rule.get("scope") or "*", ("*", "Cluster", "Namespaced"))
    return causes


def _selector_causes(at: str, selector: dict) -> list[tuple[str, str]]:
    causes = []
    for k, expression in enumerate(selector.get("matchExpressions") or []):
        where, operator = f"{at}.matchExpressions[{k}]", expression.get("operator")
        if operator in ("In", "NotIn") and not expression.get("values"):
            causes.append((f"{where}.values", "Required value: must be specified when `operator` is 'In' or 'NotIn'"))
        elif operator in ("Exists", "DoesNotExist") and expression.get("values"):
            forbidden = "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
            causes.append((f"{where}.values", forbidden))
        elif operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            causes.append(_invalid(f"{where}.operator", operator, "not a valid selector operator"))
    return causes
