"""Each team's traffic map on a cluster: which of its endpoints are in rollout, and how the gateway routes them.

    maps = TrafficMaps(api_client, hub_namespace="jupyterhub")
    maps.set("team-vision", "iris", Traffic(team="team-vision", champion_version="3", candidate_version="4",
                                            rollout=rollout(mode="canary", share=0.05)))
    maps.read("team-vision")                  # {"iris": Traffic(...)}
    maps.set("team-vision", "iris", None)     # the rollout is over: the gateway passes everything to the champion

The map is the ConfigMap `mlplatform-gateway-<team>-traffic` (names.gateway_traffic) in the hub's namespace, one key
per endpoint in rollout, its value Traffic.to_dict() as JSON. Only the platform service writes it (the hub's service
account: hub_config/render/gateway.py), and no team's account can, so it is the platform's own record of a rollout:
the versions the evidence is labelled with and the settings the controller judges come from here, not from the
team's RayService (whose rollout an admission policy keeps the platform's too: hub_config/render/admission.py).
Every replica of the team's gateway watches it and applies it at once (gateway_pod.py, traffic_watch.py): a
rollback moves traffic without waiting for a sync, also in GitOps mode.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from kubernetes import client as k8s
from mlplatform import kube
from mlplatform.serving.errors import BackendUnavailable, InvalidServingRequest
from mlplatform.serving.gateway import Traffic, check_endpoint
from mlplatform_core.names import COMPONENT_LABEL, GATEWAY_COMPONENT, MANAGED_BY, MANAGED_BY_LABEL, gateway_traffic

log = logging.getLogger(__name__)
ATTEMPTS = 5  # read-modify-writes while another replica of the service writes the same map


def parsed(data: Mapping[str, Any] | None, team: str) -> tuple[dict[str, Traffic], list[str]]:
    """The endpoints' traffic in a map's data, and what was left out and why (not an endpoint's name, not JSON, not a
    Traffic, another team's): a bad entry never routes, so its endpoint's champion answers everything."""
    found: dict[str, Traffic] = {}
    problems: list[str] = []
    for endpoint, text in sorted((data or {}).items()):
        try:
            check_endpoint(endpoint)
            traffic = Traffic.from_dict(json.loads(text))
        except (TypeError, ValueError, InvalidServingRequest) as e:
            problems.append(f"{endpoint}: {str(e).splitlines()[-1].strip(' -')}")
            continue
        if traffic.team != team:
            problems.append(f"{endpoint}: the traffic of team {traffic.team!r}, not {team!r}'s")
            continue
        found[endpoint] = traffic
    return found, problems


class TrafficMaps:
    """The teams' traffic maps, read and written with the platform service's client (the hub's service account)."""

    def __init__(self, api_client: k8s.ApiClient, hub_namespace: str):
        self.api, self.namespace = k8s.CoreV1Api(api_client), hub_namespace

    def read(self, team: str) -> dict[str, Traffic]:
        found, problems = parsed((self._get(team) or {}).get("data"), team)
        for problem in problems:
            log.warning("the traffic map of team %s: %s (left out)", team, problem)
        return found

    def set(self, team: str, endpoint: str, traffic: Traffic | None) -> None:
        """`endpoint`'s traffic (None: out of the map); a change someone made meanwhile is read again, not
        overwritten (the ConfigMap's resourceVersion)."""
        value = None if traffic is None else json.dumps(traffic.to_dict(), sort_keys=True)
        name = gateway_traffic(team)
        for _ in range(ATTEMPTS):
            current = self._get(team)
            data = dict((current or {}).get("data") or {})
            if data.get(endpoint) == value:
                return
            if value is None:
                data.pop(endpoint)
            else:
                data[endpoint] = value
            try:
                if current is None:
                    labels = {MANAGED_BY_LABEL: MANAGED_BY, COMPONENT_LABEL: GATEWAY_COMPONENT}
                    body = {"apiVersion": "v1", "kind": "ConfigMap", "data": data,
                            "metadata": {"name": name, "namespace": self.namespace, "labels": labels}}
                    kube.call(f"creating ConfigMap {name}", self.api.create_namespaced_config_map, self.namespace, body)
                else:  # with the resourceVersion it was read at: 409 if it changed since
                    kube.call(f"updating ConfigMap {name}", self.api.replace_namespaced_config_map, name,
                              self.namespace, {**current, "data": data})
                return
            except kube.KubeError as e:
                if e.status != 409:  # written (or made) meanwhile: read it again
                    raise BackendUnavailable(f"the traffic map of team {team} was not written: {e}") from None
        raise BackendUnavailable(f"the traffic map of team {team} kept changing while it was written "
                                 f"({ATTEMPTS} tries); try again")

    def _get(self, team: str) -> dict | None:
        name = gateway_traffic(team)
        try:
            found = kube.call(f"reading ConfigMap {name}", self.api.read_namespaced_config_map, name, self.namespace)
        except kube.KubeError as e:
            if e.status == 404:
                return None
            raise BackendUnavailable(f"the traffic map of team {team} could not be read: {e}") from None
        return self.api.api_client.sanitize_for_serialization(found)
