"""The HTTP face of the fake: Kubernetes REST paths → Store calls, Status bodies, watch streams."""

from __future__ import annotations

import asyncio
import json
import random
import string
import time
from dataclasses import dataclass, field

from aiohttp import web

from . import admission, rbac, resources, selectors, webhooks
from .errors import ApiError
from .rbac import Subject
from .resources import Resource
from .store import Store

# Objects the DELETE answers with; for the rest the API server answers a Status.
RETURNS_DELETED_OBJECT = ("pods", "services", "namespaces")
REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
           410: "Expired", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}


@dataclass
class Request:
    """One request the fake answered, for assertions (`fake.count("list", "pods")`)."""
    method: str
    path: str
    query: dict
    verb: str | None = None  # get list watch create update patch delete deletecollection
    resource: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    status: int = 0
    time: float = field(default_factory=time.monotonic)


@dataclass
class Fault:
    """An error the fake answers instead of doing the work: `fake.fail("create", "rayservices", 500)`."""
    verb: str
    resource: str
    code: int = 500
    message: str = "injected failure"
    times: int = 1
    name: str | None = None
    subresource: str | None = None
    after: bool = False  # do the work, then answer the error (the write happened; the client cannot tell)
    delay: float = 0.0  # seconds to wait before answering (with `after`: a write done, its answer late)


@dataclass
class Target:
    resource: Resource
    namespace: str | None
    name: str | None
    subresource: str | None


def parse_path(path: str) -> Target | tuple[str, str, str] | None:
    """A resource target, or (group, version, "") for discovery of a group version, or None."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return (group, version, "")
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3 and resources.lookup(group, version, rest[2]) is not None:
        namespace, rest = rest[1], rest[2:]
    resource = resources.lookup(group, version, rest[0])
    if resource is None or len(rest) > 3 or (namespace and not resource.namespaced):
        return None
    if namespace is None and resource.namespaced and len(rest) > 1:
        return None  # /api/v1/pods/x does not exist
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if sub is not None and sub not in resource.subresources:
        return None
    return Target(resource, namespace, name, sub)


def _verb(method: str, target: Target, query) -> str:
    if method == "GET":
        if target.name:
            return "get"
        return "watch" if query.get("watch", "").lower() in ("true", "1") else "list"
    return {"POST": "create", "PUT": "update", "PATCH": "patch",
            "DELETE": "delete" if target.name else "deletecollection"}.get(method, method.lower())


def _error(error: ApiError) -> web.Response:
    return web.json_response(error.status(), status=error.code)


def _answer(obj: dict, warnings: list[str], status: int = 200) -> web.Response:
    response = web.json_response(obj, status=status)
    for text in warnings:  # what admission webhooks warned, as the API server relays it
        response.headers.add("Warning", f"299 - {json.dumps(text)}")  # quoted as Go's strconv.Quote
    return response


def _named(body: dict) -> dict:
    """A generateName is turned into the name before admission, so webhooks see the name that is stored."""
    meta = body.get("metadata")
    if not isinstance(meta, dict) or meta.get("name") or not meta.get("generateName"):
        return body
    suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
    return {**body, "metadata": {**meta, "name": meta["generateName"] + suffix}}


class Api:
    def __init__(self, store: Store, token: str | None):
        self.store, self.token = store, token
        # Bearer token → who: the admin token is in system:masters (RBAC bypassed), as kubeadm's admin.conf.
        self.tokens: dict[str, Subject] = {token: rbac.ADMIN} if token else {}
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self.webhooks = webhooks.Webhooks(store)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        record = Request(request.method, request.path, query)
        self.requests.append(record)
        try:
            response = await self._dispatch(request, query, record)
        except ApiError as error:
            response = _error(error)
        record.status = response.status
        return response

    def _authenticate(self, request: web.Request) -> Subject:
        """No Authorization header: system:anonymous (the API server's --anonymous-auth default);
        an unknown bearer token: 401."""
        header = request.headers.get("Authorization")
        if header is None:
            return rbac.ANONYMOUS
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or token not in self.tokens:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        return self.tokens[token]

    async def _dispatch(self, request: web.Request, query: dict, record: Request) -> web.StreamResponse:
        if request.path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok")
        if request.path == "/version":
            return web.json_response({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "platform": "linux/amd64"})
        subject = self._authenticate(request)
        target = parse_path(request.path)
        if request.method == "GET" and (request.path.rstrip("/") in ("/api", "/apis") or isinstance(target, tuple)):
            if subject is rbac.ANONYMOUS:  # system:discovery is bound to system:authenticated only
                raise rbac.forbidden_path(subject, "get", request.path)
            return web.json_response(_discovery(request.path, target))
        if not isinstance(target, Target):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        record.verb = _verb(request.method, target, query)
        record.resource, record.namespace = target.resource.plural, target.namespace
        record.name, record.subresource = target.name, target.subresource
        self._authorize(subject, target, record.verb, query)
        fault = self._inject(record)
        body = None
        if request.method in ("POST", "PUT", "PATCH") or (request.method == "DELETE" and request.can_read_body):
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                raise ApiError.bad_request("the request body is not valid JSON") from None
        admission.requester.set(subject)  # this request's task only: what ValidatingAdmissionPolicies see
        response = await self._serve(request, target, record.verb, query, body)
        if fault is not None:
            await asyncio.sleep(fault.delay)
            raise ApiError(fault.code, REASONS.get(fault.code, "InternalError"), fault.message)
        return response

    def _authorize(self, subject: Subject, target: Target, verb: str, query: dict) -> None:
        # A namespace's own URL carries its namespace (RequestInfo does the same), so a RoleBinding there counts.
        namespace = target.name if target.resource.plural == "namespaces" and target.name else target.namespace
        name = target.name
        if verb in ("list", "watch"):  # RequestInfo names a list or watch by `fieldSelector=metadata.name=<name>`
            name = selectors.required_name(query.get("fieldSelector"))
        attributes = rbac.Attributes(subject, verb, target.resource.group, target.resource.plural,
                                     target.subresource, namespace, name)
        allowed, reason = rbac.authorize(self.store, attributes)
        if not allowed:
            raise rbac.forbidden(attributes, reason)

    def _inject(self, record: Request) -> Fault | None:
        """Raise the first matching fault; one with `after` is returned, to be raised after the work."""
        for fault in self.faults:
            if fault.times and fault.verb == record.verb and fault.resource == record.resource \
                    and fault.name in (None, record.name) and fault.subresource == record.subresource:
                fault.times -= 1
                if fault.after:
                    return fault
                raise ApiError(fault.code, REASONS.get(fault.code, "InternalError"), fault.message)
        return None

    async def _serve(self, request, target: Target, verb: str, query: dict, body) -> web.StreamResponse:
        store, res, ns, name, sub = self.store, target.resource, target.namespace, target.name, target.subresource
        dry_run = query.get("dryRun") == "All"
        if verb == "get" and sub == "log":
            return web.Response(text=self._log(ns, name, query), content_type="text/plain")
        if verb == "get":
            return web.json_response(store.get(res, ns, name))
        if verb == "list":
            items, rv = store.list(res, ns, query.get("labelSelector"), query.get("fieldSelector"))
            return web.json_response({"kind": f"{res.kind}List", "apiVersion": res.api_version,
                                      "metadata": {"resourceVersion": rv}, "items": items})
        if verb == "watch":
            return await self._watch(request, res, ns, query)
        content_type = request.headers.get("Content-Type", "")
        if res is webhooks.CONFIGURATIONS and verb in ("create", "update", "patch"):
            return self._configuration(target, verb, dry_run, body, content_type)
        if verb == "create":
            if not isinstance(body, dict):
                raise ApiError.bad_request("the body of a create must be an object")
            body = _named(body)
            created, warnings = await self._admitted(target, "CREATE", query,
                                                     lambda dry: store.create(res, ns, body, dry_run=dry))
            return _answer(created, warnings, 201)
        if verb == "update":
            updated, warnings = await self._admitted(target, "UPDATE", query, lambda dry: store.update(
                res, ns, name, body or {}, subresource=sub, dry_run=dry))
            return _answer(updated, warnings)
        if verb == "patch":
            patched, warnings = await self._admitted(target, "UPDATE", query, lambda dry: store.patch(
                res, ns, name, body, content_type, subresource=sub, dry_run=dry))
            return _answer(patched, warnings)
        if verb == "delete":
            options = body if isinstance(body, dict) else {}
            grace = query.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
            self._preconditions(res, ns, name, options.get("preconditions") or {})
            gone, warnings = await self._admitted(target, "DELETE", query, lambda dry: store.delete(
                res, ns, name, grace=None if grace is None else int(grace), dry_run=dry), options)
            if res.plural in RETURNS_DELETED_OBJECT or res.custom:
                return _answer(gone, warnings)
            return _answer({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                            "details": {"name": name, "group": res.group, "kind": res.plural,
                                        "uid": gone["metadata"]["uid"]}}, warnings)
        if verb == "deletecollection":
            items, _ = store.list(res, ns, query.get("labelSelector"), query.get("fieldSelector"))
            for item in items:
                item_ns, item_name = item["metadata"].get("namespace"), item["metadata"]["name"]
                await self._admitted(Target(res, item_ns, item_name, None), "DELETE", query,
                                     lambda dry, n=item_ns, i=item_name: store.delete(res, n, i, dry_run=dry))
            return web.json_response({"kind": f"{res.kind}List", "apiVersion": res.api_version,
                                      "metadata": {}, "items": items})
        raise ApiError(405, "MethodNotAllowed", f"{request.method} is not supported on {request.path}")

    async def _admitted(self, target: Target, operation: str, query: dict, write, options: dict | None = None):
        """`write(dry_run)` done as the API server does a write: the store validates it and applies the
        ValidatingAdmissionPolicies, then the validating webhooks that match see the object as it would be
        stored (a dry run of the write), then it is written. Returns (the write's result, the webhooks' warnings)."""
        dry_run = query.get("dryRun") == "All"
        subject = admission.requester.get()
        hooks = self.webhooks.matching(target.resource, target.subresource, operation) if subject else []
        if not hooks:
            return write(dry_run), []
        res = target.resource
        old = None if operation == "CREATE" else self.store.get(res, target.namespace, target.name)
        new = None if operation == "DELETE" else write(True)
        meta = (new or old)["metadata"]
        namespace = meta.get("namespace")
        if res.plural == "namespaces" and operation != "CREATE":
            namespace = meta["name"]  # a namespace's own requests carry it, as RequestInfo does
        options = {k: v for k, v in (options or {}).items() if k not in ("apiVersion", "kind")}
        options.update({k: query[k] for k in ("fieldManager", "fieldValidation", "propagationPolicy") if k in query})
        if "gracePeriodSeconds" in query:
            options["gracePeriodSeconds"] = int(query["gracePeriodSeconds"])
        if dry_run:
            options["dryRun"] = ["All"]
        attributes = webhooks.Attributes(res, target.subresource, operation, meta.get("name", ""), namespace, new,
                                         old, subject, dry_run, options)
        warnings = await self.webhooks.admit(hooks, attributes)
        return write(dry_run), warnings

    def _configuration(self, target: Target, verb: str, dry_run: bool, body, content_type: str) -> web.Response:
        """A ValidatingWebhookConfiguration is defaulted and checked (webhooks.configuration) before it is stored;
        no webhook sees it (none may lock its own configuration)."""
        store, res, name = self.store, target.resource, target.name
        if verb == "create":
            if not isinstance(body, dict):
                raise ApiError.bad_request("the body of a create must be an object")
            checked = webhooks.configuration(store.create(res, None, body, dry_run=True))
            return web.json_response(store.create(res, None, checked, dry_run=dry_run), status=201)
        if verb == "update":
            candidate = store.update(res, None, name, body or {}, dry_run=True)
        else:
            candidate = store.patch(res, None, name, body, content_type, dry_run=True)
        return web.json_response(store.update(res, None, name, webhooks.configuration(candidate), dry_run=dry_run))

    def _preconditions(self, res, ns, name, preconditions: dict) -> None:
        current = self.store.get(res, ns, name)["metadata"]
        for key in ("uid", "resourceVersion"):
            if preconditions.get(key) and preconditions[key] != current.get(key):
                raise ApiError(409, "Conflict", f"Precondition failed: {key} in precondition: {preconditions[key]}, "
                                                f"{key} in object meta: {current.get(key)}")

    def _log(self, ns: str, name: str, query: dict) -> str:
        pod = self.store.get(resources.by_name("pods"), ns, name)
        containers = [c["name"] for c in pod["spec"]["containers"]]
        container = query.get("container")
        if container is None and len(containers) > 1:
            raise ApiError.bad_request(f"a container name must be specified for pod {name}, choose one of: "
                                       f"[{' '.join(containers)}]")
        if container is not None and container not in containers:
            raise ApiError.bad_request(f"container {container} is not valid for pod {name}")
        if pod.get("status", {}).get("phase") == "Pending":
            raise ApiError.bad_request(f'container "{container or containers[0]}" in pod "{name}" is waiting to '
                                       "start: ContainerCreating")
        text = self.store.logs.get((ns, name), "")
        if query.get("tailLines"):
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(query["tailLines"]):]) if int(query["tailLines"]) > 0 else ""
        return text

    async def _watch(self, request, res: Resource, ns, query: dict) -> web.StreamResponse:
        store = self.store
        match = store.matcher(res, ns, query.get("labelSelector"), query.get("fieldSelector"))
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        deadline = asyncio.get_running_loop().time() + float(query.get("timeoutSeconds") or 1800)
        start = query.get("resourceVersion") or "0"
        wake = store.wake()
        if start == "0" or query.get("sendInitialEvents") == "true":
            items, last = store.list(res, ns, query.get("labelSelector"), query.get("fieldSelector"))
            last = int(last)
            for item in items:
                await _send(response, "ADDED", item)
            if query.get("sendInitialEvents") == "true":
                await _send(response, "BOOKMARK", {"kind": res.kind, "apiVersion": res.api_version, "metadata": {
                    "resourceVersion": str(last), "annotations": {"k8s.io/initial-events-end": "true"}}})
        else:
            last = int(start)
        try:
            await self._stream(response, store, res, match, last, wake, deadline)
        except ConnectionResetError:
            return response  # the client went away
        await response.write_eof()
        return response

    @staticmethod
    async def _stream(response, store: Store, res: Resource, match, last: int, wake, deadline: float) -> None:
        while True:
            try:
                events = store.events_after(last)
            except ApiError as error:
                await _send(response, "ERROR", error.status())
                break
            for event in events:
                last = event.rv
                if event.resource == res and match(event.object):
                    await _send(response, event.type, event.object)
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            await store.changed(wake, remaining)
            wake = store.wake()


async def _send(response: web.StreamResponse, kind: str, obj: dict) -> None:
    await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")


def _discovery(path: str, target) -> dict:
    if path.rstrip("/") == "/api":
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
    if path.rstrip("/") == "/apis":
        groups = sorted({(r.group, r.version) for r in resources.RESOURCES if r.group})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
             "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}} for g, v in groups]}
    group, version, _ = target
    listed = [r for r in resources.RESOURCES if (r.group, r.version) == (group, version)]
    if not listed:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
    entries = []
    for r in listed:
        entries.append({"name": r.plural, "singularName": r.kind.lower(), "namespaced": r.namespaced,
                        "kind": r.kind, "verbs": verbs})
        entries += [{"name": f"{r.plural}/{s}", "singularName": "", "namespaced": r.namespaced, "kind": r.kind,
                     "verbs": ["get"] if s == "log" else ["get", "patch", "update"]} for s in r.subresources]
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}".lstrip("/"),
            "resources": entries}
