"""GPU accounting of the local backend: which servers hold which devices of the configured pool.

One `GpuPool` lives in the hub process and is shared by every local spawner. JupyterHub runs all
spawners on one event loop, and `reserve` neither awaits nor yields, so the quota check and the
reservation happen as one step: of two users racing for the last GPU, one gets it and the other a
`SelectionError`, never a server beyond quota.

The pool reads the catalog anew on every snapshot and reservation (a zero-argument callable, e.g.
`lambda: cached_catalog(path)`), so local devices added to or removed from the catalog count without
a hub restart. Devices a running server holds stay held until it is gone, even if the catalog no
longer lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mlplatform_core.catalog import Catalog

from .profiles import QuotaSnapshot, Selection, check_quota


@dataclass(frozen=True)
class Allocation:
    team: str
    gpu_type: str
    devices: tuple[str, ...]


class GpuPool:
    def __init__(self, catalog: Callable[[], Catalog]):
        self._catalog = catalog  # the current catalog, read on every call: it may have been edited
        self._allocations: dict[str, Allocation] = {}

    def snapshot(self) -> QuotaSnapshot:
        return self._snapshot(self._catalog())

    def _snapshot(self, catalog: Catalog) -> QuotaSnapshot:
        used: dict[str, dict[str, int]] = {}
        taken = self._taken()
        for alloc in self._allocations.values():
            per_team = used.setdefault(alloc.team, {})
            per_team[alloc.gpu_type] = per_team.get(alloc.gpu_type, 0) + len(alloc.devices)
        pool_free = {name: sum(1 for d in gpu.local_devices if d not in taken)
                     for name, gpu in catalog.gpu_types.items()}
        return QuotaSnapshot(used=used, pool_free=pool_free)

    def reserve(self, key: str, selection: Selection) -> Allocation | None:
        """Take devices for `selection` under `key` (one per server), re-checking the quota first.

        A key that already holds devices gives them back first (a server started again).
        """
        self.release(key)
        if not selection.gpu_count:
            return None
        catalog = self._catalog()  # one version for the check and the pick
        check_quota(catalog, self._snapshot(catalog), selection.team, selection.gpu_type, selection.gpu_count)
        taken = self._taken()
        free = [d for d in catalog.gpu_types[selection.gpu_type].local_devices if d not in taken]
        alloc = Allocation(selection.team, selection.gpu_type, tuple(free[: selection.gpu_count]))
        self._allocations[key] = alloc
        return alloc

    def restore(self, key: str, alloc: Allocation) -> None:
        """Re-register devices of a server that survived a hub restart (from the spawner's state)."""
        self._allocations[key] = alloc

    def release(self, key: str) -> None:
        self._allocations.pop(key, None)

    def holder_of(self, key: str) -> Allocation | None:
        return self._allocations.get(key)

    def _taken(self) -> set[str]:
        return {d for alloc in self._allocations.values() for d in alloc.devices}
