"""How an endpoint shares its traffic with a candidate version: the rollout settings (pure values).

An endpoint in rollout is one Serve application with two deployments (app.py): `Model`, the champion,
which is also the ingress and the router, and `Candidate`. The router's part of the champion's
`user_config` is a `Rollout`:

    mode         "shadow"  every request (or `mirror_rate` of them) is also sent to the candidate;
                           callers get the champion's answer only
                 "canary"  `share` of the requests are answered by the candidate; a caller sending
                           the same `X-Rollout-Key` header always lands on the same side
                 "off"     the candidate is deployed but gets nothing (after a rollback)
    share        the canary's share, 0 to 1
    mirror_rate  the share of requests shadow mirrors, 0 to 1
    reason       why the mode is what it is (a rollback's cause), shown by /health and the widget
    since        when the rollout's evidence starts (set by the platform service)

A change of these is a `user_config` change of the champion: Serve applies it to the running
replicas in place (`reconfigure`), no replica restarts and no request is dropped. Adding or removing
the candidate changes the application's `args`: Serve replaces the replicas with a surge.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import asdict, dataclass
from typing import Any

from .errors import InvalidServingRequest

MODES = ("shadow", "canary", "off")
LIVE_MODES = ("shadow", "canary")  # the candidate gets traffic (the live gates read the inference log)
KEY_HEADER = "X-Rollout-Key"  # pins a caller to a side in canary mode
SIDE_HEADER = "X-Rollout-Side"  # which side answered: champion | candidate
CHAMPION, CANDIDATE = "champion", "candidate"


@dataclass(frozen=True)
class Rollout:
    mode: str = "shadow"
    share: float = 0.0
    mirror_rate: float = 1.0
    reason: str | None = None
    # When the rollout's evidence starts (epoch seconds; the platform service sets it): its live gates
    # read the inference log from here on.
    since: float | None = None

    def answered_by(self, key: str | None) -> str:
        """The side that answers a request: with a `key`, the same side every time for that key
        (its hash against the share, so raising the share only moves keys towards the candidate)."""
        if self.mode != "canary" or self.share <= 0:
            return CHAMPION
        point = _point(key) if key else random.random()
        return CANDIDATE if point < self.share else CHAMPION

    def mirrors(self) -> bool:
        """Whether this request is also sent to the candidate (shadow)."""
        return self.mode == "shadow" and self.mirror_rate > 0 and random.random() < self.mirror_rate

    def to_dict(self) -> dict:
        return asdict(self)


def rollout(*, mode: Any = "shadow", share: Any = None, mirror_rate: Any = 1.0, reason: Any = None,
            since: Any = None) -> Rollout:
    """Validated settings; every problem at once (InvalidServingRequest names the field, the value and
    what is allowed). `share` is required in canary mode and refused in the others."""
    problems: list[tuple[str, str]] = []
    if mode not in MODES:
        problems.append(("mode", f"{mode!r} is not a rollout mode; allowed: {', '.join(MODES)}"))
    if mode == "canary":
        if not _fraction(share) or share <= 0:
            problems.append(("share", f"{share!r} is not a canary share; allowed: a number above 0, at most 1 "
                                      "(e.g. 0.05 for 5 %)"))
    elif share not in (None, 0, 0.0):
        problems.append(("share", f"{share!r} given in mode {mode!r}; allowed: a share only in canary mode"))
    if not _fraction(mirror_rate):
        problems.append(("mirror_rate", f"{mirror_rate!r} is not a share of requests; allowed: 0 to 1"))
    if reason is not None and not (isinstance(reason, str) and len(reason) <= 2000):
        problems.append(("reason", "not a text of at most 2000 characters"))
    if since is not None and not (isinstance(since, (int, float)) and not isinstance(since, bool)
                                  and math.isfinite(since) and since >= 0):
        problems.append(("since", f"{since!r} is not a time; allowed: seconds since the epoch"))
    if problems:
        raise InvalidServingRequest(problems)
    return Rollout(mode=mode, share=float(share or 0.0), mirror_rate=float(mirror_rate), reason=reason,
                   since=None if since is None else float(since))


def log_switch(*, enabled: Any = None, sample_rate: Any = None) -> tuple[bool | None, float | None]:
    """A change of a rollout's inference log, validated: (`enabled`, `sample_rate`), None where it stays as it is.
    `sample_rate`: the share of requests logged, above 0 and at most 1 (a log that records nothing is `enabled`
    false). Every problem at once (InvalidServingRequest: the field, the value, what is allowed)."""
    problems: list[tuple[str, str]] = []
    if enabled is not None and not isinstance(enabled, bool):
        problems.append(("enabled", f"{enabled!r} is not a switch; allowed: true (log on) or false (log off)"))
    if sample_rate is not None and not (_fraction(sample_rate) and sample_rate > 0):
        problems.append(("sample_rate", f"{sample_rate!r} is not a sample rate; allowed: a number above 0, at most 1 "
                                        "(e.g. 0.1 logs 10 % of the requests; to log none, enabled: false)"))
    elif sample_rate is not None and enabled is False:
        problems.append(("sample_rate", f"{sample_rate!r} given with enabled false; allowed: a sample rate only for a "
                                        "log that is on"))
    if enabled is None and sample_rate is None:
        problems.append(("enabled", "neither enabled nor sample_rate given; allowed: enabled true or false, "
                                    "sample_rate above 0 and at most 1, or both"))
    if problems:
        raise InvalidServingRequest(problems)
    return enabled, None if sample_rate is None else float(sample_rate)


def from_config(config: dict | None) -> Rollout | None:
    """The settings a replica finds in its user_config (None: no rollout)."""
    return rollout(**config) if config else None


def _fraction(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and 0 <= value <= 1


def _point(key: str) -> float:
    """A key's stable place in [0, 1)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:8], "big") / 2**64
