"""Promotion and rollback behind the quality gates, carried out by the platform with its own MLflow identity.

The gates (`mlplatform.registry.gates`) are evaluated here, from MLflow's records as the platform reads
them; the protected aliases (the catalog's `promotion.alias` and `protected_aliases`) can be moved by
the platform identity only, MLflow refuses everyone else (hub_config/mlflow_access/server.py). A
registered model belongs to the team whose MLflow workspace holds it: only the team's members (and
platform admins) may promote or roll it back.

One promotion or rollback of a model at a time (a lock per model in this process: the service runs as
one process, like the hub). Its steps, each durable before the next:
1. the gate report; a failed gate is audited (`refused`) and nothing else happens;
2. the model card, stored immutably (its SHA-256 goes into the audit record);
3. the audit `intent` record: what is about to change;
4. the version's description (the card), then the alias, last;
5. the outcome record (`succeeded` or `failed`, naming the intent).
If MLflow or the service stops after 3, the intent stays open; the next action on the model (or its
`history`) settles it from what MLflow shows: the alias never moved without its audit record.
A rollback goes back along the platform's own record of succeeded events (trail.py), never along tags.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlplatform.mlflow_health import MlflowUnavailable, lost_contact
from mlplatform.registry.card import render_card
from mlplatform.registry.errors import Conflict, Forbidden, MlflowError, NotFound, PromotionRefused, RollbackRefused
from mlplatform.registry.gates import evaluate_gates
from mlplatform_core.catalog import Catalog, Promotion
from mlplatform_core.timestamps import now as _now

from .audit_log import AuditLog
from .cards import CardStore
from .platform_mlflow import PlatformMlflow
from .trail import events, model_target, open_intents, rollback_target

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)
ALL = 10**9  # every record of one model (a few per promotion)


@dataclass(frozen=True)
class Caller:
    """Who asks, as the hub says: name, teams (from the hub's groups and the catalog), admin flag; and how
    to read the model's artifacts with the caller's own S3 rights (None: MLflow's default)."""

    name: str
    teams: tuple[str, ...]
    admin: bool = False
    download: Callable[[str, str], str] | None = field(default=None, compare=False)


class Promotions:
    def __init__(self, *, catalog: Callable[[], Catalog], audit: AuditLog, cards: CardStore, mlflow: PlatformMlflow):
        self.catalog, self.audit, self.cards, self.mlflow = catalog, audit, cards, mlflow
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    # --- the four actions -------------------------------------------------------------------------
    def evaluate(self, caller: Caller, team: str, name: str, version) -> dict:
        """The gate report of one version; changes nothing."""
        policy = self._policy()
        self._check_team(caller, team, name, "evaluate")
        with self.guarded_mlflow(team) as client:
            return self._assess(client, policy, name, version, caller)[0]

    def promote(self, caller: Caller, team: str, name: str, version, *, live_gates: list[dict] | None = None) -> dict:
        """`live_gates`: gates of a rollout (kind `live`, rollouts.py) the version must pass besides the catalog's."""
        policy = self._policy()
        self._check_team(caller, team, name, "promote", audited=True)
        with self._model(team, name), self.guarded_mlflow(team) as client:
            self._settle(client, team, name)
            report, about, mv = self._assess(client, policy, name, version, caller)
            if live_gates:
                report["gates"] += live_gates
                report["failed"] += [g["id"] for g in live_gates if not g["passed"]]
                report["passed"] = not report["failed"]
            version, alias, previous = report["version"], policy.alias, report["champion_version"]
            details = {"model": name, "version": version, "alias": alias, "previous_version": previous}
            if previous == version:
                raise Conflict(f"version {version} of {name!r} holds @{alias} already: nothing to promote")
            if not report["passed"]:
                self._record("promote", caller, team, name, "refused", {**details, "failed": report["failed"]})
                raise PromotionRefused(report)
            card = render_card(about, report, promoted_by=caller.name, promoted_at=_now(), previous_version=previous)
            digest = self.cards.put(card)
            intent = self._record("promote", caller, team, name, "intent",
                                  {**details, "gates": report["gates"], "card_sha256": digest})
            self._apply(client, mv, intent, description=card)
        log.info("promoted %s/%s version %s to @%s (previous: %s) by %s", team, name, version, alias, previous,
                 caller.name)
        return {"action": "promote", "model": name, "team": team, "version": version, "alias": alias,
                "previous_version": previous, "card": digest, "event": self._event(intent), "report": report}

    def rollback(self, caller: Caller, team: str, name: str) -> dict:
        policy = self._policy()
        alias = policy.alias
        self._check_team(caller, team, name, "rollback", audited=True)
        from mlplatform.registry import facts  # imports MLflow: at first use (platform_mlflow.py)

        with self._model(team, name), self.guarded_mlflow(team) as client:
            self._settle(client, team, name)
            current = facts.registered_model(client, name).aliases.get(alias)
            current = None if current is None else str(current)
            trail = self._events(team, name)
            target = rollback_target(trail, name, alias, current)
            try:
                mv = facts.model_version(client, name, target)
            except NotFound:
                raise RollbackRefused(f"the previous @{alias} of {name!r}, version {target}, no longer exists; "
                                      f"promote a version instead") from None
            card = next((e["card"] for e in reversed(trail) if e["version"] == target and e["card"]), None)
            intent = self._record("rollback", caller, team, name, "intent",
                                  {"model": name, "version": target, "alias": alias, "previous_version": current,
                                   "gates": None, "card_sha256": card})
            self._apply(client, mv, intent)
        log.info("rolled back @%s of %s/%s from version %s to %s by %s", alias, team, name, current, target,
                 caller.name)
        return {"action": "rollback", "model": name, "team": team, "version": target, "alias": alias,
                "previous_version": current, "card": card, "event": self._event(intent)}

    def history(self, caller: Caller, team: str, name: str) -> dict:
        """`{"events": every succeeded promotion and rollback, oldest first (trail.py), "holder": the
        alias's version, "rollback_to": where a rollback would move it (None: nowhere)}`."""
        alias = self._policy().alias
        self._check_team(caller, team, name, "history", readers=True)
        from mlplatform.registry import facts  # imports MLflow: at first use (platform_mlflow.py)

        with self._model(team, name), self.guarded_mlflow(team) as client:
            holder = facts.registered_model(client, name).aliases.get(alias)  # NotFound for an unknown model
            self._settle(client, team, name)
        holder = None if holder is None else str(holder)
        trail = self._events(team, name)
        try:
            rollback_to = rollback_target(trail, name, alias, holder)
        except RollbackRefused:
            rollback_to = None
        return {"events": trail, "holder": holder, "rollback_to": rollback_to}

    # --- steps ------------------------------------------------------------------------------------
    def _policy(self) -> Promotion:
        return self.catalog().promotion

    WHAT = {"evaluate": "evaluate", "promote": "promote", "rollback": "roll back", "history": "read the history of"}

    def _check_team(self, caller: Caller, team: str, name: str, action: str, *, readers: bool = False,
                    audited: bool = False) -> None:
        """The model is the team's (its MLflow workspace): its members act on it, admins too; other teams
        read its history when the catalog lets them read. A refused change is audited."""
        catalog = self.catalog()
        if team not in catalog.teams:
            raise NotFound(f"team {team!r} is not a team of the catalog; teams: {', '.join(catalog.teams)}")
        if caller.admin or team in caller.teams:
            return
        if readers and catalog.mlflow.other_teams(catalog.teams[team]) == "read":
            return
        refused = Forbidden(f"{caller.name} may not {self.WHAT[action]} {name!r}: it belongs to team {team}, and only "
                            f"its members promote and roll back its models ({caller.name}'s teams: "
                            f"{', '.join(caller.teams) or 'none'})")
        if audited:
            self._record(action, caller, team, name, "refused", {"model": name, "reason": str(refused)})
        raise refused

    @contextmanager
    def _model(self, team: str, name: str):
        with self._guard:
            lock = self._locks.setdefault((team, name), threading.Lock())
        with lock:
            yield

    @contextmanager
    def guarded_mlflow(self, team: str, unchanged: str = "no alias was moved"):
        """A client in the team's workspace whose failures say what happened: MLflow gone (503, and what is
        `unchanged`), not found, error."""
        from mlflow.exceptions import MlflowException  # at first use (platform_mlflow.py)

        with self.mlflow.client(team) as client:
            try:
                yield client
            except (MlflowException, OSError) as e:
                cause = lost_contact(e)
                if cause is not None:
                    raise MlflowUnavailable(f"MLflow at {client.tracking_uri} stopped answering ({cause}); "
                                            f"{unchanged}. Try again when it is back") from e
                if not isinstance(e, MlflowException):
                    raise
                if e.error_code == "RESOURCE_DOES_NOT_EXIST":  # e.g. no workspace yet: no server of the team started
                    raise NotFound(f"MLflow at {client.tracking_uri} has no such thing for team {team}: {e.message}"
                                   ) from e
                raise MlflowError(f"MLflow at {client.tracking_uri} failed: {e.message}") from e

    def _assess(self, client: MlflowClient, policy: Promotion, name: str, version, caller: Caller):
        """(gate report, version facts, model version): reads only."""
        from mlplatform.registry import facts  # imports MLflow: at first use (platform_mlflow.py)

        model = facts.registered_model(client, name)
        mv = facts.model_version(client, name, version)
        about = facts.version_facts(client, mv, model.tags, caller.download)
        holder = model.aliases.get(policy.alias)
        champion = None
        if holder is not None:
            champion = {"version": str(holder),
                        "metrics": facts.run_metrics(client, client.get_model_version(name, holder).run_id)}
        report = evaluate_gates(policy, model=name, version=mv.version, metrics=about["metrics"],
                                signature=about["signature"], signature_problem=about["signature_problem"],
                                version_tags=about["tags"], model_tags=about["model_tags"], champion=champion)
        return report, about, mv

    def _record(self, action: str, caller: Caller | str, team: str, name: str, outcome: str, details: dict) -> dict:
        actor = caller if isinstance(caller, str) else caller.name
        return self.audit.append(action, actor=actor, team=team, target=model_target(team, name), outcome=outcome,
                                 details=details)

    def _records(self, team: str, name: str) -> list[dict]:
        target = model_target(team, name)
        return [r for r in self.audit.query(team=team, target=target, limit=ALL) if r["target"] == target]

    def _events(self, team: str, name: str) -> list[dict]:
        return events(self._records(team, name))

    @staticmethod
    def _event(intent: dict) -> dict:
        return events([intent, {**intent, "outcome": "succeeded", "details": {"intent_seq": intent["seq"]}}])[0]

    def _settle(self, client: MlflowClient, team: str, name: str) -> None:
        """Give every open intent of the model its outcome, from where MLflow's alias is now."""
        for intent in open_intents(self._records(team, name)):
            d = intent["details"]
            holder = client.get_registered_model(name).aliases.get(d["alias"])
            moved = holder is not None and str(holder) == d["version"]
            self._record(intent["action"], "platform", team, name, "succeeded" if moved else "failed",
                         {"intent_seq": intent["seq"], "settled": True,
                          **({} if moved else {"reason": f"@{d['alias']} did not move to version {d['version']}"})})

    def _apply(self, client: MlflowClient, mv, intent: dict, description: str | None = None) -> None:
        """The description, then the alias (last), then the outcome record. A failure while MLflow
        answers undoes the steps taken (each undo registered before its step: a step whose answer was
        lost may still have been carried out) and records `failed`."""
        d = intent["details"]
        name, version, alias, previous = mv.name, mv.version, d["alias"], d["previous_version"]
        undo, alias_sent = [], False
        try:
            if description is not None:
                undo.append(lambda: client.update_model_version(name, version, description=mv.description or ""))
                client.update_model_version(name, version, description=description)
            undo.append(lambda: client.set_registered_model_alias(name, alias, previous) if previous
                        else client.delete_registered_model_alias(name, alias))
            alias_sent = True
            client.set_registered_model_alias(name, alias, version)
        except BaseException as e:
            self._undo(undo, intent)
            cause = lost_contact(e)
            if cause is None or not alias_sent:
                self._outcome(intent, "failed", reason=f"{type(e).__name__}: {getattr(e, 'message', e)}")
            if cause is not None:
                raise self._stopped(client, intent, cause, alias_sent=alias_sent) from e
            raise
        self._outcome(intent, "succeeded")

    def _outcome(self, intent: dict, outcome: str, **details) -> None:
        self.audit.append(intent["action"], actor=intent["actor"], team=intent["team"], target=intent["target"],
                          outcome=outcome, details={"intent_seq": intent["seq"], **details})

    @staticmethod
    def _undo(steps: list, intent: dict) -> None:
        for step in reversed(steps):  # the alias first
            try:
                step()
            except Exception as undo_error:  # keep undoing the rest; the original error is what the caller needs
                log.exception("could not undo a step of audit intent %s", intent["seq"])
                if lost_contact(undo_error):
                    return  # MLflow is gone: every other step would wait for its client's retries to fail too

    @staticmethod
    def _stopped(client: MlflowClient, intent: dict, cause: str, *, alias_sent: bool) -> MlflowUnavailable:
        d = intent["details"]
        where = (f"MLflow at {client.tracking_uri} stopped answering ({cause}) during the {intent['action']} of "
                 f"{d['model']!r} version {d['version']} to @{d['alias']}")
        if not alias_sent:
            return MlflowUnavailable(f"{where}: @{d['alias']} did not move (audit record {intent['seq']} says so). "
                                     "Try again when MLflow is back")
        return MlflowUnavailable(f"{where}: @{d['alias']} may have moved; audit record {intent['seq']} holds the "
                                 "intent, and the platform records what happened at the model's next action or "
                                 "history. Check the history when MLflow is back")
