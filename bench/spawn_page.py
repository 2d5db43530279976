"""Spawn-page rendering on Kubernetes at scale: the watch-backed quota cache against listing per page.

A fake API server (tests/support/fake_kube) holds 200 team namespaces, each with a GPU
ResourceQuota, and 2,000 running notebook pods labelled with their GPU type. A user in two teams
opens the spawn page again and again:

  cache (CatalogKubeSpawner)   the page reads the ResourceQuota + GPU pod reflectors (one list + one
                               watch each for the whole hub, started by the first page)
  plain hook                   the best simple alternative: a hand-written options_form hook that lists
                               ResourceQuotas and GPU pods of all namespaces on each render, both at once,
                               as raw JSON (no typed objects), with one API client reused across renders
                               and closed at the end. It is measured first, before the cache exists, so
                               no watch of the cache runs meanwhile.

Printed: min / p50 / p99 render latency over the renders, and Kubernetes API calls per render (watches
excluded: they are long-lived streams, not per render). Objects are seeded without schema validation,
to save time. The fake API server runs in this process (as the hub's own API client does), so the
listing's cost includes the server's side of it; a real API server's would be on another machine.

    .venv/bin/python bench/spawn_page.py --teams 200 --servers 2000 --renders 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kubernetes_asyncio import client, config  # noqa: E402

from mlplatform_core.catalog import load_catalog  # noqa: E402
from hub_config.spawners.kube_quota import quota_snapshot, stop_cluster_quotas  # noqa: E402
from mlplatform_core.names import GPU_TYPE_LABEL  # noqa: E402
from hub_config.spawners.kubernetes import CatalogKubeSpawner  # noqa: E402
from tests.support.fake_kube import FakeKube, point_kubespawner_at  # noqa: E402

USER_TEAMS = ("team-007", "team-042")


@dataclass
class Group:
    name: str


@dataclass
class User:
    name: str = "alice"
    groups: list[Group] = field(default_factory=lambda: [Group(t) for t in USER_TEAMS])
    id: int = 1
    url: str = "/user/alice/"


def big_catalog(path: Path, teams: int) -> Path:
    data = yaml.safe_load((REPO / "hub_config" / "platform.yaml").read_text())
    data["teams"] = {f"team-{i:03}": {"group": f"team-{i:03}", "namespace": f"team-{i:03}",
                                      "gpu_quota": {"total": 8, "per_type": {"a100": 8, "t4": 4}}}
                     for i in range(teams)}
    for profile in data["profiles"].values():
        profile["teams"] = list(data["teams"])
    path.write_text(yaml.safe_dump(data))
    return path


def seed(fake: FakeKube, teams: int, servers: int) -> None:
    for i in range(teams):
        ns = f"team-{i:03}"
        fake.namespace(ns)
        fake.seed({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "gpus", "namespace": ns},
                   "spec": {"hard": {"requests.nvidia.com/gpu": "8"}}})
    for j in range(servers):
        ns, gpu_type = f"team-{j % teams:03}", ("a100", "t4")[j % 2]
        fake.seed({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": f"jupyter-user{j}", "namespace": ns, "labels": {GPU_TYPE_LABEL: gpu_type}},
                   "spec": {"containers": [{"name": "notebook", "image": "mlplatform/notebook-gpu:0.1.0",
                                            "resources": {"limits": {"nvidia.com/gpu": "0"}}}]}})


async def render_cached(spawner: CatalogKubeSpawner) -> str:
    return await spawner.get_options_form()


class PlainHook:
    """A hand-written options_form hook at its best: raw JSON lists, one client, both lists at once."""

    def __init__(self, kubeconfig: Path):
        self.kubeconfig = kubeconfig
        self.api_client: client.ApiClient | None = None

    async def __call__(self, spawner: CatalogKubeSpawner) -> str:
        if self.api_client is None:
            configuration = client.Configuration()
            await config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=configuration)
            self.api_client = client.ApiClient(configuration)
        api = client.CoreV1Api(self.api_client)
        # _preload_content=False: the response as it came, parsed as JSON; no typed objects
        quotas, pods = await asyncio.gather(
            api.list_resource_quota_for_all_namespaces(_preload_content=False),
            api.list_pod_for_all_namespaces(label_selector=GPU_TYPE_LABEL, _preload_content=False))
        quotas, pods = json.loads(await quotas.read())["items"], json.loads(await pods.read())["items"]
        snapshot = quota_snapshot(spawner.catalog, quotas, pods, {})
        spawner.quota_snapshot = lambda: snapshot  # this render's view
        try:
            return spawner._render_options_form()
        finally:
            del spawner.quota_snapshot

    async def close(self) -> None:
        if self.api_client is not None:
            await self.api_client.close()
            self.api_client = None


async def measure(fake: FakeKube, render, spawner, renders: int) -> tuple[list[float], float]:
    await render(spawner)  # warm-up (the cache's first load; the hook's client)
    fake.clear_requests()
    times = []
    for _ in range(renders):
        start = time.perf_counter()
        form = await render(spawner)
        times.append((time.perf_counter() - start) * 1000)
    assert "team-042" in form
    calls = sum(1 for r in fake.requests if r.verb != "watch")
    return times, calls / renders


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teams", type=int, default=200)
    parser.add_argument("--servers", type=int, default=2000)
    parser.add_argument("--renders", type=int, default=200)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, FakeKube(validate=False) as fake:
        catalog_file = big_catalog(Path(tmp) / "platform.yaml", args.teams)
        load_catalog(catalog_file)  # fail early on a bad catalog
        undo = point_kubespawner_at(fake.write_kubeconfig(Path(tmp) / "kubeconfig"))
        seed(fake, args.teams, args.servers)
        # The hub's usage reconcile (hub_config/spawners/kube_usage.py) writes here, not to a cluster's path.
        os.environ["MLPLATFORM_SERVICE_DATABASE_URL"] = f"sqlite:///{Path(tmp) / 'platform.sqlite'}"
        spawner = CatalogKubeSpawner(_mock=True, user=User(), catalog_file=str(catalog_file))
        hook = PlainHook(Path(tmp) / "kubeconfig")
        try:
            # The hook first: the cache's watches start with its first page and would run meanwhile.
            listed = await measure(fake, hook, spawner, args.renders)
            await hook.close()
            cached = await measure(fake, render_cached, spawner, args.renders)
            rows = [("cache (CatalogKubeSpawner)", *cached), ("plain hook (raw JSON lists)", *listed)]
        finally:
            await hook.close()
            await stop_cluster_quotas()
            undo()

    print(f"\nSpawn page, {args.teams} teams, {args.servers} running servers, {args.renders} renders, "
          f"user in {len(USER_TEAMS)} teams")
    print(f"{'approach':<30}{'min ms':>10}{'p50 ms':>10}{'p99 ms':>10}{'API calls/render':>18}")
    for name, times, calls in rows:
        print(f"{name:<30}{min(times):>10.2f}{p(times, 50):>10.2f}{p(times, 99):>10.2f}{calls:>18.1f}")
    (_, cached, _), (_, listed, _) = rows
    print(f"\nplain hook / cache: p50 {p(listed, 50) / p(cached, 50):.1f}×, "
          f"p99 {p(listed, 99) / p(cached, 99):.1f}×")


if __name__ == "__main__":
    asyncio.run(main())
