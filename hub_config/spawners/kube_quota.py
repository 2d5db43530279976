"""GPU quota of the teams as the cluster sees it, read from a watch-backed cache.

Two reflectors (KubeSpawner's own `ResourceReflector`, one list + watch each, for all namespaces)
keep the ResourceQuota objects and the pods that hold GPUs in memory. Rendering the spawn page and
re-checking a spawn read only this cache: no Kubernetes API call per request, however many users.

- total per team: the team namespace's ResourceQuota, `hard` and `used` of `requests.<resource>`
  for the GPU resources of the catalog (the API server enforces it, and it counts every pod of the
  namespace: notebooks, Ray workers, Spark executors);
- per GPU type: the catalog's per-type quota, counted over the team's pods labelled with
  `mlplatform.io/gpu-type` (nothing in Kubernetes enforces per-type quotas; the hub does).

A spawn between its quota check and its pod showing up in the cache is held as a reservation, so two
users racing for the last GPU cannot both pass the check. The API server's quota admission stays the
last word: its "exceeded quota" refusal becomes a spawn error (see kubernetes.py).

Started with it: the usage ledger's reconcile with the cached GPU pods (kube_usage.py), so served
models and Spark jobs, which the notebook creates, are in the ledger too. The hub starts the cache as
soon as it runs (`start_with_the_hub`, from `configure_hub`), not at the first spawn page: after a hub
restart the workloads that end are closed in the ledger (and release the budget they hold) whether or
not anyone opens the hub; a spawn page still starts it when that first start failed.

The cache belongs to the hub process, not to a spawner: `cluster_quota(spawner)` returns the one
cache per Kubernetes API settings (`k8s_api_host`, `k8s_api_ssl_ca_cert`, `k8s_api_verify_ssl`, what
KubeSpawner configures its client from), made on first use. The cache and its reflectors are
parented to no spawner: they take the hub's config (`c.ResourceReflector.*` still applies) and the
hub's log, so a spawner that is stopped and dropped takes nothing with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from kubespawner.reflector import ResourceReflector
from mlplatform_core.catalog import Catalog
from mlplatform_core.names import GPU_TYPE_LABEL
from mlplatform_core.quantities import gpu_requests, parse_count
from traitlets.config import LoggingConfigurable

from ..governance import Governance
from ..profiles import QuotaSnapshot, Selection

FINISHED_PHASES = ("Succeeded", "Failed")  # pods in these phases hold no quota


class ResourceQuotaReflector(ResourceReflector):
    kind = "resourcequotas"
    list_method_name = "list_resource_quota_for_all_namespaces"
    omit_namespace = True


class GpuPodReflector(ResourceReflector):
    kind = "pods"
    list_method_name = "list_pod_for_all_namespaces"
    omit_namespace = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.label_selector = GPU_TYPE_LABEL  # every pod carrying the label, whatever its value


def quota_snapshot(catalog: Catalog, quotas: Iterable[Mapping], pods: Iterable[Mapping],
                   reservations: Mapping[str, Selection]) -> QuotaSnapshot:
    """Pure: the cached ResourceQuotas and GPU pods (+ reservations by "namespace/pod") → QuotaSnapshot."""
    team_of = {team.namespace: name for name, team in catalog.teams.items()}
    resources = {gpu.resource for gpu in catalog.gpu_types.values()}
    keys = {f"requests.{r}" for r in resources}

    cluster_totals: dict[str, tuple[int, int]] = {}
    for quota in quotas:
        team = team_of.get(quota["metadata"]["namespace"])
        status = quota.get("status") or {}
        hard, used = status.get("hard") or quota.get("spec", {}).get("hard") or {}, status.get("used") or {}
        if team is None or not keys & set(hard):
            continue
        h = sum(parse_count(hard[k]) for k in keys if k in hard)
        u = sum(parse_count(used.get(k, 0)) for k in keys if k in hard)
        old = cluster_totals.get(team)  # several quotas in one namespace: the tightest wins
        cluster_totals[team] = (h, u) if old is None or h - u < old[0] - old[1] else old

    used: dict[str, dict[str, int]] = {}
    seen = set()
    for pod in pods:
        meta = pod["metadata"]
        team = team_of.get(meta["namespace"])
        gpu_type = (meta.get("labels") or {}).get(GPU_TYPE_LABEL)
        if team is None or gpu_type not in catalog.gpu_types:
            continue
        if (pod.get("status") or {}).get("phase") in FINISHED_PHASES or meta.get("deletionTimestamp"):
            continue
        seen.add(f"{meta['namespace']}/{meta['name']}")
        per_team = used.setdefault(team, {})
        per_team[gpu_type] = per_team.get(gpu_type, 0) + gpu_requests(pod, resources)
    pending: dict[str, int] = {}
    for key, selection in reservations.items():
        if key in seen or not selection.gpu_count:
            continue
        per_team = used.setdefault(selection.team, {})
        per_team[selection.gpu_type] = per_team.get(selection.gpu_type, 0) + selection.gpu_count
        pending[selection.team] = pending.get(selection.team, 0) + selection.gpu_count
    # The quota's `used` does not know about reservations whose pods do not exist yet.
    cluster_totals = {t: (h, u + pending.get(t, 0)) for t, (h, u) in cluster_totals.items()}
    return QuotaSnapshot(used=used, cluster_totals=cluster_totals)


class ClusterQuota(LoggingConfigurable):
    """The cache of one API server: started once, read by every spawner of the hub.

    Made with the hub's config only (no parent): the reflectors, parented to it, read their
    settings from that config and log to the hub's log."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.reservations: dict[str, Selection] = {}
        self._quotas: ResourceQuotaReflector | None = None
        self._pods: GpuPodReflector | None = None
        self._started: asyncio.Task | None = None
        self.usage = None  # kube_usage.KubeUsage, from the first start on

    async def ready(self) -> None:
        """Start both reflectors on first use; later calls return at once (after the first load)."""
        if self._started is None:
            self._started = asyncio.ensure_future(self._start())
        try:
            await asyncio.shield(self._started)
        except Exception:
            self._started = None  # let the next spawn try again (e.g. RBAC fixed meanwhile)
            raise

    async def _start(self) -> None:
        quotas = ResourceQuotaReflector(parent=self)
        pods = GpuPodReflector(parent=self)
        await asyncio.gather(quotas.start(), pods.start())
        self._quotas, self._pods = quotas, pods
        from .kube_usage import KubeUsage  # imported here: it reads this module

        self.usage = KubeUsage(parent=self, pods=self.live_pods, governance=Governance.of(self.config))
        self.usage.start()

    def snapshot(self, catalog: Catalog) -> QuotaSnapshot:
        quotas = self._quotas.resources.values() if self._quotas else ()
        pods = self._pods.resources.values() if self._pods else ()
        return quota_snapshot(catalog, quotas, pods, self.reservations)

    def live_pods(self) -> list[Mapping] | None:
        """A copy of the cached GPU pods; None while the pod watch is not running (not started, given up)."""
        watch = self._pods.watch_task if self._pods else None
        if watch is None or watch.done():
            return None
        return list(self._pods.resources.values())

    def reserve(self, key: str, selection: Selection) -> None:
        self.reservations[key] = selection

    def release(self, key: str) -> None:
        self.reservations.pop(key, None)

    async def stop(self) -> None:
        if self.usage is not None:
            await self.usage.stop()
        for reflector in (self._quotas, self._pods):
            if reflector is not None:
                await reflector.stop()
        self._quotas = self._pods = self._started = self.usage = None


_caches: dict[tuple, ClusterQuota] = {}
# What KubeSpawner configures its Kubernetes client from: one cache per distinct value of these.
API_SETTINGS = ("k8s_api_host", "k8s_api_ssl_ca_cert", "k8s_api_verify_ssl")


def cluster_quota(spawner) -> ClusterQuota:
    """The hub's cache for the API server `spawner` talks to; the first call makes it (not started)."""
    return _cluster_quota(tuple(getattr(spawner, name) for name in API_SETTINGS), spawner.config)


def _cluster_quota(key: tuple, config) -> ClusterQuota:
    if key not in _caches:
        _caches[key] = ClusterQuota(config=config)  # the hub's config, not a spawner
    return _caches[key]


async def start_with_the_hub(spawner_class, config) -> ClusterQuota:
    """Start the cache (and the usage reconcile) of the API server that spawners of `spawner_class` will
    talk to under the hub's `config`, before any spawner exists; raises what the first load raises."""
    from kubespawner.clients import load_config

    key = tuple(configured(spawner_class, config, name) for name in API_SETTINGS)
    # What KubeSpawner's constructor does first: the client's global configuration (kubeconfig or in-cluster).
    await asyncio.to_thread(load_config, *key)
    quota = _cluster_quota(key, config)
    await quota.ready()
    return quota


def configured(cls, config, name: str):
    """The value trait `name` of `cls` takes from `config`, as traitlets resolves it for an instance
    (the most derived class's section wins), without making one."""
    value = cls.class_traits()[name].default()
    for section in cls.section_names():
        if section in config and name in config[section]:
            value = config[section][name]
    return value


async def stop_cluster_quotas() -> None:
    """Stop and forget every cache (tests: each test has its own API server and event loop)."""
    while _caches:
        await _caches.popitem()[1].stop()
