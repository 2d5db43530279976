"""A fake kubelet (and scheduler): pods go Pending → scheduled → Running, and terminate on delete.

Per test: `FakeKube(kubelet=True)` or `fake.kubelet(...)`. Times are short so tests stay fast;
a pod's terminationGracePeriodSeconds is honoured up to `max_grace` seconds.
"""

from __future__ import annotations

import asyncio
import copy

from . import resources
from .store import Store, now

PODS = resources.by_name("pods")


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
