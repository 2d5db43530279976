"""The fake API server's state: objects, resourceVersions, the watch event log, admission.

Lives on the server's event loop thread only; FakeKube hands calls from the test thread over to it.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import random
import string
import uuid
from dataclasses import dataclass

from . import admission, quota, resources, validation
from .errors import ApiError
from .patching import apply as apply_patch
from .resources import Resource
from .selectors import fields as field_predicate
from .selectors import labels as label_predicate

SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp",
                 "deletionGracePeriodSeconds", "generation", "managedFields", "selfLink")
# Fields of a pod spec the API server lets an update change.
POD_MUTABLE = ("activeDeadlineSeconds", "tolerations", "schedulingGates")
EVENT_LOG_LIMIT = 20_000  # older watch starts get 410 Gone, as after etcd compaction


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Event:
    rv: int
    resource: Resource
    type: str  # ADDED, MODIFIED, DELETED
    object: dict


class Store:
    def __init__(self, validate: bool = True):
        self.objects: dict[tuple[Resource, str | None, str], dict] = {}
        self.events: list[Event] = []
        self.rv = 1
        self.validate = validate
        self.kubelet = None  # a FakeKubelet, set by FakeKube
        self.logs: dict[tuple[str, str], str] = {}
        self._wake = asyncio.Event()
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create(resources.by_name("namespaces"), None, {"apiVersion": "v1", "kind": "Namespace",
                                                                "metadata": {"name": name}})

    # --- reading -------------------------------------------------------------------------------------
    def get(self, resource: Resource, namespace: str | None, name: str) -> dict:
        obj = self.objects.get((resource, namespace if resource.namespaced else None, name))
        if obj is None:
            raise ApiError.not_found(resource, name)
        return copy.deepcopy(obj)

    def list(self, resource: Resource, namespace: str | None = None, label_selector: str | None = None,
             field_selector: str | None = None) -> tuple[list[dict], str]:
        match = self.matcher(resource, namespace, label_selector, field_selector)
        keys = sorted((k for k in self.objects if k[0] == resource), key=lambda k: (k[1] or "", k[2]))
        items = [copy.deepcopy(self.objects[k]) for k in keys if match(self.objects[k])]
        return items, str(self.rv)

    def matcher(self, resource: Resource, namespace, label_selector, field_selector):
        by_label, by_field = label_predicate(label_selector), field_predicate(field_selector)
        return lambda obj: ((namespace is None or obj["metadata"].get("namespace") == namespace)
                            and by_label(obj) and by_field(obj))

    def namespace_objects(self, resource: Resource, namespace: str) -> list[dict]:
        return [o for (r, ns, _), o in self.objects.items() if r == resource and ns == namespace]

    # --- watching ------------------------------------------------------------------------------------
    def events_after(self, rv: int) -> list[Event]:
        if self.events and rv < self.events[0].rv - 1:
            raise ApiError(410, "Expired", f"too old resource version: {rv} ({self.events[0].rv - 1})")
        return [e for e in self.events if e.rv > rv]

    def wake(self) -> asyncio.Event:
        """Take this before reading events_after(); `await changed(it, t)` then misses no commit."""
        return self._wake

    @staticmethod
    async def changed(wake: asyncio.Event, timeout: float) -> None:
        try:
            await asyncio.wait_for(wake.wait(), timeout)
        except TimeoutError:
            pass

    def _commit(self, resource: Resource, obj: dict, kind: str) -> dict:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        key = (resource, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if kind == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        self.events.append(Event(self.rv, resource, kind, copy.deepcopy(obj)))
        del self.events[:-EVENT_LOG_LIMIT]
        self._wake.set()
        self._wake = asyncio.Event()
        return copy.deepcopy(obj)

    # --- writing -------------------------------------------------------------------------------------
    def create(self, resource: Resource, namespace: str | None, body: dict, dry_run: bool = False) -> dict:
        obj = copy.deepcopy(body)
        self._check_type(resource, obj)
        meta = obj.setdefault("metadata", {})
        if resource.namespaced:
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise ApiError.bad_request("the namespace of the provided object does not match the namespace "
                                           "sent on the request")
            namespace = namespace or meta.get("namespace")
            if not namespace:
                raise ApiError.bad_request("an empty namespace may not be set during creation")
            if (resources.by_name("namespaces"), None, namespace) not in self.objects:
                raise ApiError.not_found(resources.by_name("namespaces"), namespace)
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if meta.get("resourceVersion"):
            raise ApiError.bad_request("resourceVersion should not be set on objects to be created")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        key = (resource, meta.get("namespace"), meta.get("name", ""))
        if key in self.objects:
            raise ApiError.already_exists(resource, meta["name"])
        for field in SERVER_FIELDS:
            meta.pop(field, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        self._default(resource, obj)
        if self.validate:
            validation.validate(resource, obj)
        admission.check(self, resource, "CREATE", obj, None)
        if resource.plural == "pods":
            self._admit_pod(obj)
        if resource.plural == "resourcequotas":
            obj["status"] = quota.status(obj, self.namespace_objects(resources.by_name("pods"), meta["namespace"]))
        if dry_run:
            return obj
        created = self._commit(resource, obj, "ADDED")
        self._after_change(resource, created, "ADDED")
        return created

    def update(self, resource: Resource, namespace: str | None, name: str, body: dict,
               subresource: str | None = None, dry_run: bool = False, validate: bool = True) -> dict:
        """PUT (and the result of a PATCH): the main resource ignores status, /status everything else."""
        current = self.get(resource, namespace, name)
        new = copy.deepcopy(body)
        self._check_type(resource, new)
        meta = new.setdefault("metadata", {})
        if meta.get("name", name) != name or (resource.namespaced and meta.get("namespace", namespace) != namespace):
            raise ApiError.bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the "
                                       f"URL ({name})")
        wanted_rv = meta.get("resourceVersion")
        if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
            raise ApiError.conflict(resource, name)
        if subresource == "status":
            new = {**copy.deepcopy(current), "status": new.get("status")}
            if new["status"] is None:
                new.pop("status")
        else:
            if "status" in resource.subresources:
                new.pop("status", None)
                if "status" in current:
                    new["status"] = current["status"]
            for field in SERVER_FIELDS:
                if field in current["metadata"]:
                    meta[field] = current["metadata"][field]
                else:
                    meta.pop(field, None)
            meta["name"] = name
            if resource.namespaced:
                meta["namespace"] = namespace
            spec = lambda o: {k: v for k, v in o.items() if k not in ("metadata", "status")}
            if spec(new) != spec(current):
                meta["generation"] = current["metadata"].get("generation", 1) + 1
            if resource.plural == "pods":
                self._check_pod_update(current, new)
        if resource.plural == "secrets":
            _merge_string_data(new)
        if new == current:
            return current  # a no-op write changes no resourceVersion, as on the real server
        if validate and self.validate:
            validation.validate(resource, new)
        admission.check(self, resource, "UPDATE", new, current, subresource)
        if resource.plural == "resourcequotas":
            new["status"] = quota.status(new, self.namespace_objects(resources.by_name("pods"), namespace))
        if dry_run:
            return new
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            return self._remove(resource, new)
        updated = self._commit(resource, new, "MODIFIED")
        self._after_change(resource, updated, "MODIFIED")
        return updated

    def patch(self, resource: Resource, namespace: str | None, name: str, patch, content_type: str,
              subresource: str | None = None, dry_run: bool = False) -> dict:
        current = self.get(resource, namespace, name)
        return self.update(resource, namespace, name, apply_patch(current, patch, content_type),
                           subresource=subresource, dry_run=dry_run)

    def delete(self, resource: Resource, namespace: str | None, name: str, grace: int | None = None,
               dry_run: bool = False) -> dict:
        current = self.get(resource, namespace, name)
        meta = current["metadata"]
        if dry_run:
            return current
        if meta.get("deletionTimestamp") and (meta.get("finalizers") or resource.plural == "pods"):
            return current  # already terminating
        if meta.get("finalizers"):
            meta["deletionTimestamp"], meta["deletionGracePeriodSeconds"] = now(), 0
            return self._commit(resource, current, "MODIFIED")
        if resource.plural == "pods" and self.kubelet is not None and current["spec"].get("nodeName"):
            grace = current["spec"].get("terminationGracePeriodSeconds", 30) if grace is None else grace
            if grace > 0:
                # A pod on a node terminates gracefully: the kubelet removes it once its containers stop.
                meta["deletionTimestamp"], meta["deletionGracePeriodSeconds"] = now(), grace
                terminating = self._commit(resource, current, "MODIFIED")
                self.kubelet.terminate(terminating)
                return terminating
        if resource.plural == "namespaces":
            for (r, ns, _), obj in list(self.objects.items()):
                if ns == name and r.namespaced:
                    self._remove(r, copy.deepcopy(obj))
        return self._remove(resource, current)

    def _remove(self, resource: Resource, obj: dict) -> dict:
        removed = self._commit(resource, obj, "DELETED")
        self._after_change(resource, removed, "DELETED")
        if resource.plural == "pods":
            self.logs.pop((obj["metadata"]["namespace"], obj["metadata"]["name"]), None)
        return removed

    # --- the API server's own behaviour ------------------------------------------------------------------
    def _check_type(self, resource: Resource, obj: dict) -> None:
        if obj.get("apiVersion") != resource.api_version or obj.get("kind") != resource.kind:
            raise ApiError.bad_request(f"the API version in the data ({obj.get('apiVersion')}) and kind "
                                       f"({obj.get('kind')}) do not match the endpoint ({resource.api_version} "
                                       f"{resource.kind})")

    def _default(self, resource: Resource, obj: dict) -> None:
        if resource.custom:
            obj.pop("status", None)  # a CRD with a status subresource drops status on create
        elif resource.plural == "pods":
            for container in obj.get("spec", {}).get("containers", []) + obj.get("spec", {}).get("initContainers", []):
                res = container.get("resources") or {}
                for name, limit in (res.get("limits") or {}).items():
                    res.setdefault("requests", {}).setdefault(name, limit)  # requests default to limits
            obj["status"] = {"phase": "Pending", "qosClass": _qos_class(obj)}
        elif resource.plural == "namespaces":
            obj["status"] = {"phase": "Active"}
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        elif resource.plural == "services":
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            if spec.get("clusterIP") != "None":
                spec["clusterIP"] = f"10.96.{random.randint(0, 255)}.{random.randint(1, 254)}"
            obj["status"] = {"loadBalancer": {}}
        elif resource.plural == "persistentvolumeclaims":
            obj["status"] = {"phase": "Pending"}
        elif resource.plural == "secrets":
            _merge_string_data(obj)

    def _admit_pod(self, pod: dict) -> None:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        quotas = self.namespace_objects(resources.by_name("resourcequotas"), namespace)
        pods = self.namespace_objects(resources.by_name("pods"), namespace)
        why = quota.refusal(pod, quotas, pods)
        if why:
            raise ApiError.forbidden(resources.by_name("pods"), name, why)

    def _check_pod_update(self, current: dict, new: dict) -> None:
        def fixed(spec: dict) -> dict:
            spec = {k: v for k, v in spec.items() if k not in POD_MUTABLE}
            for key in ("containers", "initContainers"):
                spec[key] = [{k: v for k, v in c.items() if k != "image"} for c in spec.get(key, [])]
            return spec
        if fixed(current.get("spec", {})) != fixed(new.get("spec", {})):
            why = ("Forbidden: pod updates may not change fields other than `spec.containers[*].image`, "
                   "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` "
                   "(only additions to existing tolerations)")
            raise ApiError.invalid(resources.by_name("pods"), current["metadata"]["name"], [("spec", why)])

    def bind(self, pod: dict, node: str, status: dict) -> dict:
        """The scheduler's binding: the one way spec.nodeName changes on a live pod."""
        current = self.get(resources.by_name("pods"), pod["metadata"]["namespace"], pod["metadata"]["name"])
        current["spec"]["nodeName"], current["status"] = node, status
        return self._commit(resources.by_name("pods"), current, "MODIFIED")

    def _after_change(self, resource: Resource, obj: dict, kind: str) -> None:
        namespace = obj["metadata"].get("namespace")
        if resource.plural == "pods":
            self._refresh_quotas(namespace)
            if kind == "ADDED" and self.kubelet is not None:
                self.kubelet.schedule(obj)

    def _refresh_quotas(self, namespace: str) -> None:
        pods = self.namespace_objects(resources.by_name("pods"), namespace)
        for quota_obj in self.namespace_objects(resources.by_name("resourcequotas"), namespace):
            fresh = quota.status(quota_obj, pods)
            if quota_obj.get("status") != fresh:
                self._commit(resources.by_name("resourcequotas"), {**copy.deepcopy(quota_obj), "status": fresh},
                             "MODIFIED")


def _merge_string_data(secret: dict) -> None:
    """The API server stores a Secret's write-only `stringData` base64-encoded into `data`."""
    for key, value in (secret.pop("stringData", None) or {}).items():
        secret.setdefault("data", {})[key] = base64.b64encode(value.encode()).decode()
    secret.setdefault("type", "Opaque")


def _qos_class(pod: dict) -> str:
    containers = pod.get("spec", {}).get("containers", []) + pod.get("spec", {}).get("initContainers", [])
    res = [(c.get("resources") or {}) for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in res):
        return "BestEffort"
    guaranteed = all(
        all(name in (r.get("limits") or {}) and quota.parse((r.get("requests") or {}).get(name, r["limits"][name]))
            == quota.parse(r["limits"][name]) for name in ("cpu", "memory"))
        for r in res)
    return "Guaranteed" if guaranteed else "Burstable"
