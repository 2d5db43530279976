"""Promotions and rollbacks as the platform recorded them (pure: audit records in, events and targets out).

The platform service writes each promotion or rollback to the audit log as an `intent` record (before
the alias moves) and then an outcome record (`succeeded`, `failed`) whose details name the intent's
`seq`. The trail of a model is its succeeded events; a rollback goes back along it, so it only ever
returns to a version the platform itself promoted behind the gates, whatever the model's tags say.

An event (what `history` returns, oldest first): {"seq": 12, "action": "promote" | "rollback",
"model": "iris", "team": "team-vision", "version": "3", "alias": "champion", "user": "alice",
"time": "2026-11-22T20:06:02.123Z", "previous_version": "2" | None, "gates": [...] | None,
"card": "<sha256 of the model card>" | None}.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from mlplatform.registry.errors import RollbackRefused

ACTIONS = ("promote", "rollback")


def model_target(team: str | None, model: str) -> str:
    """The audit log's `target` of a registered model."""
    return f"model {team}/{model}" if team else f"model {model}"


def events(records: Iterable[Mapping]) -> list[dict]:
    """The succeeded promotions and rollbacks among a model's audit records, as events, oldest first."""
    intents = {r["seq"]: r for r in records if r["outcome"] == "intent"}
    out = []
    for r in records:
        intent = intents.get((r.get("details") or {}).get("intent_seq"))
        if r["outcome"] != "succeeded" or r["action"] not in ACTIONS or intent is None:
            continue
        d = intent["details"]
        out.append({"seq": intent["seq"], "action": r["action"], "model": d["model"], "team": r.get("team"),
                    "version": d["version"], "alias": d["alias"], "user": intent["actor"], "time": intent["time"],
                    "previous_version": d.get("previous_version"), "gates": d.get("gates"),
                    "card": d.get("card_sha256")})
    return sorted(out, key=lambda e: e["seq"])


def open_intents(records: Iterable[Mapping]) -> list[dict]:
    """Intents without an outcome: the service stopped (or lost MLflow) after writing one."""
    records = list(records)
    decided = {(r.get("details") or {}).get("intent_seq") for r in records if r["outcome"] != "intent"}
    return [r for r in records if r["outcome"] == "intent" and r["seq"] not in decided]


def holders(events: list[Mapping], alias: str) -> list[str]:
    """The alias's holders as a stack (oldest first) after replaying the trail: a promotion pushes, a
    rollback pops. A promotion whose recorded previous holder is not on top (the alias was moved
    outside the trail, before protected aliases) pushes that holder first."""
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
    """The version a rollback of `alias` moves to: the holder before `current` among the versions the
    platform promoted; RollbackRefused if there is none."""
    if current is None:
        raise RollbackRefused(f"no version of {model!r} holds @{alias}: nothing to roll back; "
                              f"promote a version instead")
    promoted = {e["version"] for e in events if e["action"] == "promote" and e.get("alias") == alias}
    stack = holders(events, alias)
    if not stack or stack[-1] != current:
        stack.append(current)
    earlier = [v for v in stack[:-1] if v != current and v in promoted]
    if not earlier:
        raise RollbackRefused(f"no previous @{alias} of {model!r} that the platform promoted: version {current} "
                              f"is the first version promoted to @{alias}; promote another version instead")
    return earlier[-1]
