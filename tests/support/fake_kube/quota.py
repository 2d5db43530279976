"""ResourceQuota admission and accounting for pods, with the API server's messages.

Tracked keys: pods, count/pods, cpu, memory, requests.<any>, limits.cpu, limits.memory (so
`requests.nvidia.com/gpu` too). Not modelled: quota scopes and scopeSelector, object-count keys of
other kinds (they are neither enforced nor reported in status.used).
"""

from __future__ import annotations

import re
from fractions import Fraction

_SUFFIX = {"n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": Fraction(1),
           "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
           "P": Fraction(10**15), "E": Fraction(10**18), "Ki": Fraction(2**10), "Mi": Fraction(2**20),
           "Gi": Fraction(2**30), "Ti": Fraction(2**40), "Pi": Fraction(2**50), "Ei": Fraction(2**60)}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(?:[eE]([+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?)$")
TERMINAL_PHASES = ("Succeeded", "Failed")


def parse(quantity) -> Fraction:
    match = _QUANTITY.match(str(quantity).strip())
    if not match:
        raise ValueError(f"quantities must match the regular expression {_QUANTITY.pattern!r}: {quantity!r}")
    number, exponent, suffix = match.groups()
    value = Fraction(number)
    return value * Fraction(10) ** int(exponent) if exponent else value * _SUFFIX[suffix or ""]


def render(key: str, value: Fraction) -> str:
    """Canonical-ish: memory in the largest whole binary unit, otherwise whole numbers or millis."""
    if value.denominator == 1 and value and any(w in key for w in ("memory", "storage")):
        for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
            if value % _SUFFIX[suffix] == 0:
                return f"{int(value / _SUFFIX[suffix])}{suffix}"
    if value.denominator == 1:
        return str(int(value))
    if (value * 1000).denominator == 1:
        return f"{int(value * 1000)}m"
    return str(float(value))


def _container_amounts(container: dict) -> dict[str, Fraction]:
    resources = container.get("resources") or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    amounts = {}
    for name in set(requests) | set(limits):
        # The API server defaults a missing request to the limit.
        amounts[f"requests.{name}"] = parse(requests.get(name, limits.get(name)))
        if name in limits:
            amounts[f"limits.{name}"] = parse(limits[name])
    return amounts


def pod_usage(pod: dict) -> dict[str, Fraction]:
    """What one pod charges: sum over containers, at least the largest init container, plus overhead."""
    spec = pod.get("spec") or {}
    total: dict[str, Fraction] = {}
    for container in spec.get("containers") or []:
        for key, value in _container_amounts(container).items():
            total[key] = total.get(key, Fraction(0)) + value
    for container in spec.get("initContainers") or []:
        for key, value in _container_amounts(container).items():
            total[key] = max(total.get(key, Fraction(0)), value)
    for name, value in (spec.get("overhead") or {}).items():
        for key in (f"requests.{name}", f"limits.{name}"):
            total[key] = total.get(key, Fraction(0)) + parse(value)
    total["pods"] = total["count/pods"] = Fraction(1)
    return total


def _normal(key: str) -> str:
    return {"cpu": "requests.cpu", "memory": "requests.memory"}.get(key, key)


def counts(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") not in TERMINAL_PHASES


def tracked(key: str) -> bool:
    return _normal(key) in ("pods", "count/pods", "limits.cpu", "limits.memory") or key.startswith("requests.") \
        or key in ("cpu", "memory")


def used(quota: dict, pods: list[dict]) -> dict[str, Fraction]:
    keys = [k for k in (quota.get("spec") or {}).get("hard") or {} if tracked(k)]
    usage = {k: Fraction(0) for k in keys}
    for pod in pods:
        if counts(pod):
            charge = pod_usage(pod)
            for key in keys:
                usage[key] += charge.get(_normal(key), Fraction(0))
    return usage


def status(quota: dict, pods: list[dict]) -> dict:
    hard = dict((quota.get("spec") or {}).get("hard") or {})
    return {"hard": hard, "used": {k: render(k, v) for k, v in used(quota, pods).items()}}


def refusal(pod: dict, quotas: list[dict], pods: list[dict]) -> str | None:
    """Why the quota admission plugin refuses `pod`, or None. `pods` are the namespace's other pods."""
    charge = pod_usage(pod)
    for quota in sorted(quotas, key=lambda q: q["metadata"]["name"]):
        name, hard = quota["metadata"]["name"], (quota.get("spec") or {}).get("hard") or {}
        missing = []
        for key in sorted(hard):
            normal = _normal(key)
            if normal in ("requests.cpu", "requests.memory", "limits.cpu", "limits.memory"):
                kind, _, resource = normal.partition(".")
                lacking = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []
                           if resource not in ((c.get("resources") or {}).get(kind) or {})
                           and not (kind == "requests" and resource in ((c.get("resources") or {}).get("limits") or {}))]
                if lacking:
                    missing.append(f"{key} for: {','.join(lacking)}")
        if missing:
            return f"failed quota: {name}: must specify {'; '.join(missing)}"
        usage = used(quota, pods)
        over = [k for k in sorted(usage)
                if charge.get(_normal(k), 0) > 0 and usage[k] + charge.get(_normal(k), 0) > parse(hard[k])]
        if over:
            requested = {k: charge[_normal(k)] for k in over}
            limited = {k: parse(hard[k]) for k in over}
            return (f"exceeded quota: {name}, requested: {_listing(over, requested)}, used: {_listing(over, usage)}, "
                    f"limited: {_listing(over, limited)}")
    return None


def _listing(keys: list[str], values: dict[str, Fraction]) -> str:
    return ",".join(f"{k}={render(k, values[k])}" for k in keys)
