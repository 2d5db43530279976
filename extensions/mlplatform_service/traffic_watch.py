"""A team's traffic map, followed on the Kubernetes API and applied to its gateway (gateway_pod.py's one caller).

    watch = TrafficWatch(gateway, "team-vision", "jupyterhub", connect=kube.connect)
    watch.start()   # the first sync now, then a thread follows the map
    watch.stop()    # SIGTERM

As an informer does, for the one ConfigMap names.gateway_traffic(team) in the hub's namespace (written by the platform
service, traffic_maps.py): list it by `fieldSelector=metadata.name=<map>` (what the gateways' Role allows: RBAC
authorizes such a list or watch by the name), apply it, watch from that list's resourceVersion, and list again when
the watch's resourceVersion expired (410) or anything failed, after a backoff. Applying sets each endpoint whose
entry changed and clears those the map no longer has; a bad entry is logged and left out, so its endpoint passes
through to its champion. A deleted map clears every endpoint. While the API server cannot be reached, HAProxy keeps
the map it has (and a restarted container the map file of its emptyDir): the endpoints keep their routing.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping

from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.rest import ApiException
from mlplatform.serving.gateway import Gateway, Traffic
from mlplatform_core.names import gateway_traffic

from .traffic_maps import parsed

log = logging.getLogger(__name__)
WATCH_SECONDS = 300  # the API server ends a watch after this; the next one starts from the last resourceVersion
FIRST_SYNC_SECONDS = 10  # start()'s wait for the API server: the gateway already serves, passing through
REQUEST_SECONDS = 30
BACKOFF_SECONDS = (1, 2, 5, 10, 30)  # between attempts after a failure, the last repeated


class TrafficWatch:
    """Keeps `gateway` routing by `team`'s traffic map (see the module's docstring)."""

    def __init__(self, gateway: Gateway, team: str, namespace: str, *, connect: Callable[[], k8s.ApiClient]):
        self.gateway, self.team, self.namespace, self.connect = gateway, team, namespace, connect
        self.name = gateway_traffic(team)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: k8s_watch.Watch | None = None
        self._core: k8s.CoreV1Api | None = None

    def start(self) -> None:
        """The first sync (logged; an API server out of reach is logged too), then the thread that follows the map."""
        resource_version = self._attempt(self._list, FIRST_SYNC_SECONDS)
        self._thread = threading.Thread(target=self._run, args=(resource_version,), name="traffic-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()  # unblocks the stream's read
        if self._thread is not None:
            self._thread.join(timeout)

    def apply(self, data: Mapping[str, str] | None) -> int:
        """The gateway routes by the map's `data` (None: the map is gone) from now on: only what changed is set.
        Returns how many endpoints are in rollout."""
        wanted, problems = parsed(data, self.team)
        for problem in problems:
            log.warning("traffic map %s: %s; left out: the endpoint passes through to its champion", self.name,
                        problem)
        current = self.gateway.traffic()
        for endpoint, traffic in wanted.items():  # names and entries checked (parsed)
            if current.get(endpoint) != traffic.entry():
                self.gateway.set(endpoint, traffic)
                log.info("%s: %s", endpoint, describe(traffic))
        for endpoint in sorted(set(current) - set(wanted)):
            self.gateway.clear(endpoint)
            log.info("%s: out of rollout, passes through to its champion", endpoint)
        return len(wanted)

    def _run(self, resource_version: str | None) -> None:
        failures = 0 if resource_version else 1
        while not self._stop.wait(0 if failures == 0 else BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS)) - 1]):
            if resource_version is None:
                resource_version = self._attempt(self._list, REQUEST_SECONDS)
            else:
                resource_version = self._attempt(self._follow, resource_version)
            failures = 0 if resource_version else failures + 1

    def _attempt(self, step: Callable, *args) -> str | None:
        """`step(*args)`'s resourceVersion to go on from; None (list again, after a backoff) when it failed."""
        try:
            return step(*args)
        except Exception as e:  # noqa: BLE001 (whatever failed, the thread goes on: a dead one would never apply again)
            if self._stop.is_set():
                return None
            if isinstance(e, ApiException) and e.status == 410:
                log.info("traffic map %s: the watch's resourceVersion expired; listing it again", self.name)
                return None
            self._core = None  # a new client next time: a new token or kubeconfig is read
            log.warning("traffic map %s in namespace %s not followed (%s); the gateway keeps the map it has and tries "
                        "again", self.name, self.namespace, _reason(e))
            return None

    def _api(self) -> k8s.CoreV1Api:
        if self._core is None:
            self._core = k8s.CoreV1Api(self.connect())
        return self._core

    def _list(self, timeout: float) -> str | None:
        try:
            found = self._api().list_namespaced_config_map(self.namespace, field_selector=f"metadata.name={self.name}",
                                                           _request_timeout=timeout)
        except ApiException as e:
            if e.status != 404:
                raise
            self.apply(None)  # no such namespace (any more): no map
            log.warning("traffic map %s: namespace %s not found; every endpoint passes through", self.name,
                        self.namespace)
            return None
        maps = [item for item in found.items if item.metadata.name == self.name]
        routed = self.apply(maps[0].data if maps else None)
        log.info("traffic map %s in namespace %s read: %s endpoint(s) in rollout%s (resourceVersion %s)", self.name,
                 self.namespace, routed, "" if maps else ", there is no such ConfigMap",
                 found.metadata.resource_version)
        return found.metadata.resource_version

    def _follow(self, resource_version: str) -> str | None:
        """One watch from `resource_version`, to its end; the last resourceVersion it saw."""
        self._watch = k8s_watch.Watch()
        events = self._watch.stream(self._api().list_namespaced_config_map, self.namespace,
                                    field_selector=f"metadata.name={self.name}", resource_version=resource_version,
                                    timeout_seconds=WATCH_SECONDS, _request_timeout=WATCH_SECONDS + REQUEST_SECONDS)
        for event in events:
            if self._stop.is_set():
                break
            body = event["raw_object"]
            if event["type"] == "DELETED":
                log.info("traffic map %s deleted: every endpoint passes through to its champion", self.name)
            if event["type"] != "BOOKMARK":
                self.apply(None if event["type"] == "DELETED" else body.get("data"))
            resource_version = body["metadata"]["resourceVersion"]
        return resource_version if not self._stop.is_set() else None


def describe(traffic: Traffic) -> str:
    """One endpoint's routing as a log line says it (no secret in a traffic map)."""
    r = traffic.rollout
    if r.mode == "canary":
        text = f"canary {r.share * 100:g}% → candidate version {traffic.candidate_version}"
    elif r.mode == "shadow":
        text = f"shadow, {r.mirror_rate * 100:g}% mirrored → candidate version {traffic.candidate_version}"
    else:
        text = "mode off, all to the champion"
    return f"{text} (champion version {traffic.champion_version}, evidence of {traffic.sample_rate * 100:g}%)"


def _reason(error: Exception) -> str:
    """What failed, from the API server's Status (never the request's headers) or the connection's error."""
    if isinstance(error, ApiException):
        try:
            message = json.loads(error.body or "")["message"]
        except (TypeError, ValueError, KeyError):
            message = error.reason or ""
        return f"{error.status} {message}".strip()
    return f"{type(error).__name__}: {error}"
