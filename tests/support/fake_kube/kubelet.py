"""A fake kubelet (and scheduler): pods go Pending → scheduled → Running, and terminate on delete.

Per test: `FakeKube(kubelet=True)` or `fake.kubelet(...)`. Times are short so tests stay fast;
a pod's terminationGracePeriodSeconds is honoured up to `max_grace` seconds. Containers run nowhere,
but their environment is resolved as the kubelet does before starting them (`container_env`): a
container whose Secret or ConfigMap key is missing waits in CreateContainerConfigError, retried.
"""

from __future__ import annotations

import asyncio
import base64
import copy

from . import resources
from .errors import ApiError
from .store import Store, now

PODS = resources.by_name("pods")
RETRY = 0.2  # seconds between the kubelet's tries to start a container whose configuration is missing


def container_env(store: Store, pod: dict, container: str) -> dict[str, str]:
    """`env` of one container with `valueFrom` resolved (Secret and ConfigMap keys, the pod's name,
    namespace and IP); a missing, non-optional Secret, ConfigMap or key raises ApiError."""
    namespace = pod["metadata"]["namespace"]
    spec = next(c for c in pod["spec"].get("containers", []) + pod["spec"].get("initContainers", [])
                if c["name"] == container)
    env: dict[str, str] = {}
    for var in spec.get("env") or []:
        source = var.get("valueFrom")
        if source is None:
            env[var["name"]] = var.get("value", "")
        elif "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            env[var["name"]] = {"metadata.name": pod["metadata"]["name"], "metadata.namespace": namespace,
                                "status.podIP": pod.get("status", {}).get("podIP", "")}.get(path, "")
        else:
            kind, ref = next((k, source[k]) for k in ("secretKeyRef", "configMapKeyRef") if k in source)
            value = _key(store, kind, namespace, ref)
            if value is not None:
                env[var["name"]] = value
    return env


def _key(store: Store, kind: str, namespace: str, ref: dict) -> str | None:
    secret = kind == "secretKeyRef"
    try:
        obj = store.get(resources.by_name("secrets" if secret else "configmaps"), namespace, ref["name"])
    except ApiError:
        if ref.get("optional"):
            return None
        raise
    data = obj.get("data") or {}
    if ref["key"] not in data:
        if ref.get("optional"):
            return None
        raise ApiError(404, "NotFound", f"couldn't find key {ref['key']} in {'Secret' if secret else 'ConfigMap'} "
                                        f"{namespace}/{ref['name']}")
    return base64.b64decode(data[ref["key"]]).decode() if secret else data[ref["key"]]


class FakeKubelet:
    def __init__(self, store: Store, node: str = "fake-node", pod_ip: str = "127.0.0.1",
                 start_delay: float = 0.05, max_grace: float = 0.1, events: bool = True):
        self.store, self.node, self.pod_ip = store, node, pod_ip
        self.start_delay, self.max_grace, self.events = start_delay, max_grace, events

    def schedule(self, pod: dict) -> None:
        loop = asyncio.get_running_loop()
        loop.call_soon(self._bind, pod["metadata"]["namespace"], pod["metadata"]["name"], pod["metadata"]["uid"])

    def terminate(self, pod: dict) -> None:
        delay = min(pod["metadata"].get("deletionGracePeriodSeconds", 0), self.max_grace)
        asyncio.get_running_loop().call_later(delay, self._remove, pod["metadata"]["namespace"],
                                              pod["metadata"]["name"], pod["metadata"]["uid"])

    def _current(self, namespace: str, name: str, uid: str) -> dict | None:
        pod = self.store.objects.get((PODS, namespace, name))
        if pod is None or pod["metadata"]["uid"] != uid or pod["metadata"].get("deletionTimestamp"):
            return None
        return copy.deepcopy(pod)

    def _bind(self, namespace: str, name: str, uid: str) -> None:
        pod = self._current(namespace, name, uid)
        if pod is None:
            return
        self.store.bind(pod, self.node, {**pod["status"], "conditions": [_condition("PodScheduled")]})
        self._event(pod, "Scheduled", f"Successfully assigned {namespace}/{name} to {self.node}")
        asyncio.get_running_loop().call_later(self.start_delay, self._run, namespace, name, uid)

    def _run(self, namespace: str, name: str, uid: str) -> None:
        pod = self._current(namespace, name, uid)
        if pod is None:
            return
        try:
            for container in pod["spec"]["containers"]:
                container_env(self.store, pod, container["name"])
        except ApiError as error:
            self._wait_for_configuration(pod, error.message)
            asyncio.get_running_loop().call_later(RETRY, self._run, namespace, name, uid)
            return
        started = now()
        status = {
            **pod["status"], "phase": "Running", "hostIP": self.pod_ip, "hostIPs": [{"ip": self.pod_ip}],
            "podIP": self.pod_ip, "podIPs": [{"ip": self.pod_ip}], "startTime": started,
            "conditions": [_condition(t) for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
            "containerStatuses": [{
                "name": c["name"], "image": c.get("image", ""), "imageID": f"fake://{c.get('image', '')}",
                "containerID": f"fake://{uid}/{c['name']}", "ready": True, "started": True, "restartCount": 0,
                "state": {"running": {"startedAt": started}},
            } for c in pod["spec"]["containers"]],
        }
        self.store.update(PODS, namespace, name, {**pod, "status": status}, subresource="status", validate=False)
        for container in pod["spec"]["containers"]:
            self._event(pod, "Started", f"Started container {container['name']}")

    def _wait_for_configuration(self, pod: dict, message: str) -> None:
        waiting = [{"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": False, "started": False,
                    "restartCount": 0, "state": {"waiting": {"reason": "CreateContainerConfigError", "message": message}}}
                   for c in pod["spec"]["containers"]]
        if pod["status"].get("containerStatuses") != waiting:
            self.store.update(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"],
                              {**pod, "status": {**pod["status"], "containerStatuses": waiting}},
                              subresource="status", validate=False)
            self._event(pod, "Failed", f"Error: {message}")

    def _remove(self, namespace: str, name: str, uid: str) -> None:
        pod = self.store.objects.get((PODS, namespace, name))
        if pod is not None and pod["metadata"]["uid"] == uid:
            self.store._remove(PODS, copy.deepcopy(pod))

    def _event(self, pod: dict, reason: str, message: str) -> None:
        if not self.events:
            return
        meta = pod["metadata"]
        self.store.create(resources.by_name("events"), meta["namespace"], {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"kind": "Pod", "namespace": meta["namespace"], "name": meta["name"],
                               "uid": meta["uid"], "apiVersion": "v1"},
            "reason": reason, "message": message, "type": "Normal", "count": 1,
            "firstTimestamp": now(), "lastTimestamp": now(), "source": {"component": "kubelet", "host": self.node},
        })


def _condition(kind: str) -> dict:
    return {"type": kind, "status": "True", "lastTransitionTime": now()}
