"""GPU accounting of the local backend: which servers and served models hold which devices of the pool.

One `GpuPool` lives in the hub process and is shared by every local spawner and the GPU reservation
endpoint (hub_config/gpu_handler.py). JupyterHub runs all of them on one event loop, and `reserve` /
`reserve_gpus` neither await nor yield, so the quota check and the reservation happen as one step: of
two users racing for the last GPU, one gets it and the other a `SelectionError`, never a server or a
served model beyond quota.

The pool reads the catalog anew on every snapshot and reservation (a zero-argument callable, e.g.
`lambda: cached_catalog(path)`), so local devices added to or removed from the catalog count without
a hub restart. Devices a running server holds stay held until it is gone, even if the catalog no
longer lists them.

What survives a hub restart: a server's devices are in its spawner's state (the hub's database) and
come back through `restore`. Reservations made with `durable=True` — served models (`serving:<team>/<app>`, and
`serving:<team>/<app>/candidate` for a rollout's candidate), which run on the Ray head, outlive every
notebook server and the hub itself — are written to
`state_file` (the hub's data directory, atomically, 0600) on every change and read back when the pool
is made. They are not rebuilt from the Ray head's application records: those are written by notebook
code, the hub's own file is not. A reservation stays until its application is deleted (an application
recorded while the head is stopped comes back with the next deploy, so its GPUs stay counted).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from mlplatform_core.catalog import Catalog
from mlplatform_core.files import read_json, write_json

from .profiles import QuotaSnapshot, Selection, check_quota


@dataclass(frozen=True)
class Allocation:
    team: str
    gpu_type: str
    devices: tuple[str, ...]


class GpuPool:
    def __init__(self, catalog: Callable[[], Catalog], state_file: Path | None = None):
        self._catalog = catalog  # the current catalog, read on every call: it may have been edited
        self._state_file = state_file
        self._allocations: dict[str, Allocation] = {}
        self._durable: set[str] = set()
        self._load()

    def snapshot(self) -> QuotaSnapshot:
        catalog = self._catalog()
        return self._snapshot(catalog, self._allocations)

    @staticmethod
    def _snapshot(catalog: Catalog, allocations: Mapping[str, Allocation]) -> QuotaSnapshot:
        used: dict[str, dict[str, int]] = {}
        taken = _taken(allocations)
        for alloc in allocations.values():
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
        return self.reserve_gpus(key, selection.team, selection.gpu_type, selection.gpu_count)

    def reserve_gpus(self, key: str, team: str, gpu_type: str, count: int, *, durable: bool = False) -> Allocation:
        """Hold `count` devices of `gpu_type` for `team` under `key`, or raise SelectionError (409) with the numbers.

        What `key` holds already is not counted against the new amount, and only replaced when the new
        amount fits (a served model replaced by a bigger one keeps its devices when the bigger one is
        refused); devices it held of the same type are kept first. `durable`: written to the state file.
        """
        catalog = self._catalog()  # one version for the check and the pick
        others = {k: a for k, a in self._allocations.items() if k != key}
        check_quota(catalog, self._snapshot(catalog, others), team, gpu_type, count)
        taken = _taken(others)
        listed = catalog.gpu_types[gpu_type].local_devices
        held = self._allocations.get(key)
        kept = [d for d in held.devices if d in listed] if held and held.gpu_type == gpu_type else []
        free = [d for d in [*kept, *listed] if d not in taken]
        alloc = Allocation(team, gpu_type, tuple(dict.fromkeys(free))[:count])
        self._allocations[key] = alloc
        if durable or key in self._durable:
            self._durable.add(key)
            self._save()
        return alloc

    def transfer(self, source: str, target: str) -> Allocation:
        """`source`'s devices become `target`'s, whose own are released (a rollout's candidate promoted: its
        replicas keep their devices). Durable when either was."""
        alloc = self._allocations.pop(source)
        durable = source in self._durable or target in self._durable
        self._durable.discard(source)
        self._allocations[target] = alloc
        if durable:
            self._durable.add(target)
            self._save()
        return alloc

    def restore(self, key: str, alloc: Allocation) -> None:
        """Re-register devices of a server that survived a hub restart (from the spawner's state)."""
        self._allocations[key] = alloc

    def release(self, key: str) -> None:
        self._allocations.pop(key, None)
        if key in self._durable:
            self._durable.discard(key)
            self._save()

    def holder_of(self, key: str) -> Allocation | None:
        return self._allocations.get(key)

    # --- durable reservations ------------------------------------------------------------------
    def _load(self) -> None:
        if self._state_file is None:
            return
        for key, fields in ((read_json(self._state_file) or {}).get("reservations") or {}).items():
            self._allocations[key] = Allocation(fields["team"], fields["gpu_type"], tuple(fields["devices"]))
            self._durable.add(key)

    def _save(self) -> None:
        if self._state_file is None:
            return
        reservations = {key: asdict(self._allocations[key]) for key in sorted(self._durable)}
        write_json(self._state_file, {"reservations": reservations})


def _taken(allocations: Mapping[str, Allocation]) -> set[str]:
    return {d for alloc in allocations.values() for d in alloc.devices}
