"""Kubernetes quantities ("4Gi", "500m", 2), parsed by the Kubernetes client's own parser."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal


def _parse(value) -> Decimal:
    # Imported here: the client package is slow to import, and most callers never parse a quantity.
    from kubernetes.utils.quantity import parse_quantity

    return parse_quantity(value)


def parse_memory(value: str | int) -> int:
    """A memory quantity ("4Gi", "512M", 1073741824) in bytes."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a memory quantity")
    try:
        amount = _parse(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a memory quantity; use a number with K, M, G, T, Ki, Mi, Gi or Ti") \
            from None
    return int(amount)


def parse_cpu(value: str | float) -> float:
    """A CPU quantity (2, 0.5, "500m") in cores, more than 0."""
    try:
        cores = float(_parse(value))
    except (ValueError, TypeError):
        raise ValueError(f"{value!r} is not a CPU quantity; use cores (0.5, 2) or millicores ('500m')") from None
    if cores <= 0:
        raise ValueError(f"{value!r} must be more than 0 cores")
    return cores


def parse_count(value: str | int) -> int:
    """A count of an extended resource ("2", 2; "2000m" is 2): whole units, as the API server counts them."""
    return int(_parse(value))


def cpu_quantity(cores: float) -> str:
    """Cores as Kubernetes writes them: "2", "500m"."""
    cores = float(cores)
    return str(int(cores)) if cores.is_integer() else f"{round(cores * 1000)}m"


def gpu_requests(pod: Mapping, resources: Iterable[str]) -> int:
    """GPUs a pod (or pod template) requests (a limit alone implies the same request for extended resources)."""
    wanted = set(resources)
    total = 0
    spec = pod.get("spec") or {}
    for container in spec.get("containers") or []:
        res = container.get("resources") or {}
        amounts = {**(res.get("limits") or {}), **(res.get("requests") or {})}
        total += sum(parse_count(v) for k, v in amounts.items() if k in wanted)
    return total
