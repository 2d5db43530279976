"""The audit trail as model version tags (pure: events in, tags out, and back).

Each promotion or rollback writes, on the version that receives the alias:

- one event tag `mlplatform.audit.<seq>` (seq counts the events of the registered model, 6 digits) whose
  value is the whole event as JSON — the trail `history` reads, so a version promoted twice keeps both;
- the latest event again as readable tags `mlplatform.promotion.{action,user,time,alias,previous_version,
  gates}` (`previous_version` is `none` for a first promotion; `gates` is the gate list as JSON,
  `null` for a rollback, which does not evaluate gates).

An event: {"seq": 2, "action": "promote" | "rollback", "model": "iris", "version": "3",
"alias": "champion", "user": "alice", "time": "2026-11-22T20:06:02.123456+00:00",
"previous_version": "2" | None, "gates": [...] | None, "card": "runs:/<run>/model_card/iris-v3.md" | None}.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from .errors import RollbackRefused

EVENT_PREFIX = "mlplatform.audit."
SUMMARY_PREFIX = "mlplatform.promotion."
CARD_TAG = "mlplatform.model_card"


def make_event(seq: int, action: str, *, model: str, version: str, alias: str, user: str, time: str,
               previous_version: str | None, gates: list | None = None, card: str | None = None) -> dict:
    return {"seq": seq, "action": action, "model": model, "version": str(version), "alias": alias, "user": user,
            "time": time, "previous_version": None if previous_version is None else str(previous_version),
            "gates": gates, "card": card}


def event_tags(event: Mapping) -> dict[str, str]:
    """The tags that record `event` on its version."""
    tags = {SUMMARY_PREFIX + key: str(event[key]) for key in ("action", "user", "time", "alias")}
    tags[SUMMARY_PREFIX + "previous_version"] = event["previous_version"] or "none"
    tags[SUMMARY_PREFIX + "gates"] = json.dumps(event["gates"], separators=(",", ":"))
    if event.get("card"):
        tags[CARD_TAG] = event["card"]
    # Last, so that a failure part-way leaves no event in the trail.
    tags[f"{EVENT_PREFIX}{event['seq']:06d}"] = json.dumps(event, sort_keys=True, separators=(",", ":"))
    return tags


def events_from_tags(tags_by_version: Iterable[Mapping[str, str]]) -> list[dict]:
    """Every event recorded in the tags of a model's versions, oldest first."""
    events = []
    for tags in tags_by_version:
        for key, value in tags.items():
            if key.startswith(EVENT_PREFIX):
                try:
                    events.append(json.loads(value))
                except ValueError:
                    continue  # a tag someone edited by hand: not part of the trail
    return sorted(events, key=lambda e: (e.get("seq", 0), e.get("time", "")))


def next_seq(events: list[Mapping]) -> int:
    return max((e.get("seq", 0) for e in events), default=0) + 1


def holders(events: list[Mapping], alias: str) -> list[str]:
    """The alias's holders as a stack (oldest first) after replaying the trail: a promotion pushes, a
    rollback pops. A promotion whose recorded previous holder is not on top (the alias was moved
    outside the trail) pushes that holder first, so a rollback returns to what was really there."""
    stack: list[str] = []
    for e in events:
        if e.get("alias") != alias:
            continue
        previous = e.get("previous_version")
        if e["action"] == "promote":
            if previous and (not stack or stack[-1] != previous):
                stack.append(previous)
            stack.append(e["version"])
        elif e["action"] == "rollback":
            if stack and stack[-1] == previous:
                stack.pop()
            if not stack or stack[-1] != e["version"]:
                stack.append(e["version"])
    return stack


def rollback_target(events: list[Mapping], model: str, alias: str, current: str | None) -> str:
    """The version a rollback of `alias` moves to, given the current holder; RollbackRefused if none."""
    if current is None:
        raise RollbackRefused(f"no version of {model!r} holds @{alias}: nothing to roll back; "
                              f"promote a version instead")
    stack = holders(events, alias)
    if not stack or stack[-1] != current:
        stack.append(current)  # moved outside the trail: roll back to the trail's last holder
    earlier = [v for v in stack[:-1] if v != current]
    if not earlier:
        raise RollbackRefused(f"no previous @{alias} of {model!r} in the audit trail: version {current} is the "
                              f"first version promoted to @{alias}; promote another version instead")
    return earlier[-1]
