"""The usage ledger on Kubernetes, kept from the GPU pods the hub's quota cache already watches.

Served models (RayService pods) and Spark jobs (driver and executor pods) are created by the notebook
in its team namespace, not by the hub: no hub code runs when they start, resize or end. Their pods
carry `mlplatform.io/gpu-type`, so the hub's watch-backed cache (kube_quota.py) holds them already;
every `interval` seconds the hub turns the cached pods into the allocations they are and has the
ledger make its open intervals exactly that (`UsageLedger.reconcile`):

- a notebook server's pod (KubeSpawner's `component: singleuser-server`) → `server:<user>/<server>`,
  the key, user and profile the spawner admitted at spawn (its exact names are KubeSpawner's
  `hub.jupyter.org/*` annotations): the spawner's own interval, not a second one;
- the pods of one RayService → `model:<team>/<app>`: the GPUs of all its pods (replicas × GPUs), so
  a redeploy with other replicas or GPUs resizes the interval;
- the driver and executors of one Spark application → `spark:<team>/<app id>`.

The team is the namespace's (the one whose quota the pods use), never a label; pods outside the
catalog's team namespaces, pods of other workloads, finished pods (Succeeded, Failed) and pods being
deleted hold nothing here. A pending pod counts, as the namespace's quota counts it. Only GPU
allocations are observed (CPU pods are not in the cache), so CPU servers' intervals are left alone
(`gpus_only`).

An interval opened less than `grace` seconds ago is not closed for want of a pod: the spawner admits
a server before its pod exists. Ledger errors are logged, never raised: a hub without its database
keeps serving. Budget admission of these workloads is not done here: the API server sends every write of
a RayService or SparkApplication to the platform service's admission webhook
(mlplatform_service/workloads.py), which opens or resizes the allocation under the team's lock; the
reconcile then keeps it what the pods really hold, and closes it when they are gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta

from mlplatform_core.catalog import Catalog
from mlplatform_core.names import (
    APP_ID_LABEL,
    COMPONENT_LABEL,
    GPU_TYPE_LABEL,
    PROFILE_LABEL,
    SERVING_COMPONENT,
    USER_LABEL,
)
from mlplatform_core.quantities import gpu_requests
from traitlets import Float
from traitlets.config import LoggingConfigurable

from .kube_quota import FINISHED_PHASES

NOTEBOOK_COMPONENT = "singleuser-server"  # KubeSpawner's (and z2jh's) component label of user servers
HUB_USER, HUB_SERVER = "hub.jupyter.org/username", "hub.jupyter.org/servername"  # KubeSpawner's annotations
# Who else names the workload, after the platform's own labels: KubeRay on its pods (1.1+), the Spark
# operator and spark-submit on driver and executors.
RAY_SERVICE = ("ray.io/originated-from-crd", "RayService")
RAY_SERVICE_NAME = "ray.io/originated-from-cr-name"
SPARK_APP_LABELS = (APP_ID_LABEL, "sparkoperator.k8s.io/app-name", "spark-app-selector")
SPARK_ROLE_LABEL = "spark-role"
UNLABELLED_USER = "(unlabelled)"  # a workload without the user label still counts for its team


def observed_allocations(catalog: Catalog, pods: Iterable[Mapping]) -> dict[str, dict]:
    """Pure: the cached GPU pods → {ledger key: the allocation's fields, as `UsageLedger.open` takes them}.

    One allocation per server, RayService and Spark application; its GPUs are the sum over its live
    pods. Allocations of 0 GPUs are left out (the cache sees GPU allocations only)."""
    team_of = {team.namespace: name for name, team in catalog.teams.items()}
    found: dict[str, dict] = {}
    per_type: dict[str, dict[str, int]] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        team, gpu_type = team_of.get(meta.get("namespace")), labels.get(GPU_TYPE_LABEL)
        if team is None or gpu_type not in catalog.gpu_types:
            continue
        if (pod.get("status") or {}).get("phase") in FINISHED_PHASES or meta.get("deletionTimestamp"):
            continue
        workload = _workload(team, labels, annotations)
        if workload is None:
            continue
        key, fields = workload
        found.setdefault(key, fields)
        gpus = per_type.setdefault(key, {})
        gpus[gpu_type] = gpus.get(gpu_type, 0) + gpu_requests(pod, [catalog.gpu_types[gpu_type].resource])
    observed = {}
    for key, fields in found.items():
        gpus = per_type[key]
        total = sum(gpus.values())
        if total:
            # One type per interval: pods of two types at once (a RayService moving to another type,
            # old and new cluster side by side) are priced at the type holding most of its GPUs.
            gpu_type = max(sorted(gpus), key=lambda t: gpus[t])
            observed[key] = {**fields, "gpu_type": gpu_type, "gpus": total}
    return observed


def _workload(team: str, labels: Mapping, annotations: Mapping) -> tuple[str, dict] | None:
    """The ledger key and fields (without GPUs) of the workload a pod belongs to; None: not one of ours."""
    user = labels.get(USER_LABEL) or UNLABELLED_USER
    if NOTEBOOK_COMPONENT in (labels.get("component"), labels.get(COMPONENT_LABEL)) and annotations.get(HUB_USER):
        user = annotations[HUB_USER]  # exact; the labels are escaped
        return (f"server:{user}/{annotations.get(HUB_SERVER, '')}",
                {"kind": "server", "team": team, "user": user, "profile": labels.get(PROFILE_LABEL), "model": None})
    if labels.get(COMPONENT_LABEL) == SERVING_COMPONENT and labels.get("app.kubernetes.io/name"):
        app = labels["app.kubernetes.io/name"]
    elif labels.get(RAY_SERVICE[0]) == RAY_SERVICE[1] and labels.get(RAY_SERVICE_NAME):
        app = labels[RAY_SERVICE_NAME]
    else:
        app = None
    if app is not None:
        return f"model:{team}/{app}", {"kind": "model", "team": team, "user": user, "profile": None, "model": app}
    spark = next((labels[name] for name in SPARK_APP_LABELS if labels.get(name)), None)
    if spark is not None and (labels.get(SPARK_ROLE_LABEL) or labels.get(APP_ID_LABEL)):
        return f"spark:{team}/{spark}", {"kind": "spark", "team": team, "user": user, "profile": None, "model": None}
    return None


class KubeUsage(LoggingConfigurable):
    """The hub's periodic reconcile of the usage ledger with the GPU pods of its quota cache.

    Started with the cache (one per hub process and API server; the hub starts it at its own start,
    kube_quota.start_with_the_hub), parented to it: settings come from the hub's config. `pods()` returns the cached pods, or None while the cache cannot be trusted (not
    loaded, watch given up): then nothing is reconciled, rather than everything closed."""

    interval = Float(
        60.0,
        config=True,
        help="""
        Seconds between two reconciles of the usage ledger with the GPU pods the hub watches (served
        models and Spark jobs start and end without the hub: an interval ends at most this late).
        0 turns the reconcile off (the ledger then has notebook servers only).

            c.KubeUsage.interval = 60
        """,
    )
    grace = Float(
        180.0,
        config=True,
        help="""
        Seconds an interval opened by the hub stays open without a pod: a server admitted at spawn
        gets its pod after the pre-spawn hook and its Secret. A workload that ends sooner than this
        after it was first seen is closed this late.

            c.KubeUsage.grace = 180
        """,
    )

    def __init__(self, *, pods: Callable[[], list[Mapping] | None], governance, **kwargs):
        super().__init__(**kwargs)
        self.pods = pods
        self.governance = governance
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None and self.interval > 0:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.reconcile()
            except Exception:  # the next round tries again; the hub goes on
                self.log.exception("Could not reconcile the usage ledger with the cluster's GPU pods")

    async def reconcile(self) -> dict[str, list[str]] | None:
        """One reconcile now (off the event loop: the ledger's database calls block). None: skipped."""
        pods = self.pods()  # a copy, taken on the event loop that updates the cache
        if pods is None:
            self.log.warning("Usage ledger not reconciled: the hub's cache of GPU pods is not watching")
            return None
        catalog = self.governance.catalog
        observed = observed_allocations(catalog, pods)
        ledger = self.governance.stores()[1]
        report = await asyncio.to_thread(ledger.reconcile, observed, grace=timedelta(seconds=self.grace),
                                         gpus_only=True)
        changes = {change: keys for change, keys in report.items() if keys and change != "refused"}
        if changes:
            self.log.info("Usage ledger reconciled with the cluster: %s",
                          "; ".join(f"{change} {', '.join(keys)}" for change, keys in changes.items()))
        return report
