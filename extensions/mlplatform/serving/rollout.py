"""How an endpoint shares its traffic with a candidate version: the rollout settings (pure values).

In a rollout the champion and the candidate are each a Serve application (spec.serve_applications: the candidate
at `/<name>--candidate`), and the rollout gateway in front of Serve (gateway.py, gateway.lua) routes each request
by a `Rollout`:

    mode         "shadow"  every request (or `mirror_rate` of them) is also sent to the candidate;
                           callers get the champion's answer only
                 "canary"  `share` of the requests are answered by the candidate; a caller sending
                           the same `X-Rollout-Key` header always lands on the same side
                 "off"     the candidate is deployed but gets nothing (after a rollback)
    share        the canary's share, 0 to 1
    mirror_rate  the share of requests shadow mirrors, 0 to 1
    reason       why the mode is what it is (a rollback's cause), shown by the widget
    since        when the rollout's evidence starts (set by the platform service)

A change of these is a change of the gateway's traffic map (an atomic update at runtime, no reload): no Serve
application changes and no request is dropped. Adding or removing the candidate adds or removes its application.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .errors import InvalidServingRequest

MODES = ("shadow", "canary", "off")
LIVE_MODES = ("shadow", "canary")  # the candidate gets traffic (the live gates read the inference log)
KEY_HEADER = "X-Rollout-Key"  # pins a caller to a side in canary mode
SIDE_HEADER = "X-Rollout-Side"  # which side answered: champion | candidate


@dataclass(frozen=True)
class Rollout:
    mode: str = "shadow"
    share: float = 0.0
    mirror_rate: float = 1.0
    reason: str | None = None
    # When the rollout's evidence starts (epoch seconds; the platform service sets it): its live gates
    # read the inference log from here on.
    since: float | None = None

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
    """The settings a recorded application keeps in its champion's user_config (None: no rollout)."""
    return rollout(**config) if config else None


def _fraction(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and 0 <= value <= 1
