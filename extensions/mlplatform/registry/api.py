"""The Python API of promotion: evaluate, promote, rollback, history. The only module that writes to MLflow.

MLflow comes from `client` (an `MlflowClient`), else `tracking_uri`, else MLFLOW_TRACKING_URI (set in every
notebook the platform starts). The gates come from `promotion`, else `catalog`, else $MLPLATFORM_CATALOG
(see `policy.resolve_policy`). Every function returns JSON-serializable values.
"""

from __future__ import annotations

import logging
import re

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlplatform_core.timestamps import now as _now

from ..mlflow_health import MlflowUnavailable, lost_contact
from . import audit, facts
from .card import render_card
from .errors import Conflict, MlflowError, NotFound, PromotionRefused, RegistryError, RollbackRefused
from .gates import evaluate_gates
from .policy import resolve_policy

log = logging.getLogger(__name__)


def _client(client: MlflowClient | None, tracking_uri: str | None) -> MlflowClient:
    if client is not None and tracking_uri is not None:
        raise RegistryError("pass either client= or tracking_uri=, not both")
    return client if client is not None else MlflowClient(tracking_uri=tracking_uri)


def _check_user(user) -> str:
    if not isinstance(user, str) or not user.strip():
        raise RegistryError(f"user {user!r} is not allowed: name who acts (the hub username), e.g. user='alice'")
    return user.strip()


def _champion(client: MlflowClient, name: str, holder: str | None) -> dict | None:
    if holder is None:
        return None
    mv = client.get_model_version(name, holder)
    return {"version": str(holder), "metrics": facts.run_metrics(client, mv.run_id)}


def _assess(client: MlflowClient, policy, name: str, version) -> tuple[dict, dict, object]:
    """(gate report, version facts, model version) — reads only."""
    model = facts.registered_model(client, name)
    mv = facts.model_version(client, name, version)
    about = facts.version_facts(client, mv, model.tags)
    champion = _champion(client, name, model.aliases.get(policy.alias))
    report = evaluate_gates(policy, model=name, version=mv.version, metrics=about["metrics"],
                            signature=about["signature"], signature_problem=about["signature_problem"],
                            version_tags=about["tags"], model_tags=about["model_tags"], champion=champion)
    return report, about, mv


def evaluate(name: str, version, *, catalog=None, promotion=None, client: MlflowClient | None = None,
             tracking_uri: str | None = None) -> dict:
    """The gate report of one version (see `gates` for its shape). Changes nothing."""
    policy = resolve_policy(catalog, promotion)
    client = _client(client, tracking_uri)
    return _mlflow_call(lambda: _assess(client, policy, name, version)[0], client)


def promote(name: str, version, *, user: str, catalog=None, promotion=None, client: MlflowClient | None = None,
            tracking_uri: str | None = None) -> dict:
    """Move the policy's alias to `version` if, evaluated now, every gate passes.

    On success: the model card is logged as an artifact of the version's run
    (`model_card/<model>-v<version>.md`) and becomes the version's description, the alias moves, and
    the audit event is written as tags of the version. Returns
    `{"action": "promote", "model", "version", "alias", "previous_version", "card", "event", "report"}`.

    Raises PromotionRefused (carrying `.report`) when a gate fails: then nothing at all has changed,
    not even an audit tag. Conflict when `version` holds the alias already; NotFound for an unknown
    model or version.
    MlflowUnavailable (503) when MLflow stops answering: its message says what is left (the alias
    never moves without its audit event; see `_apply`).
    """
    user = _check_user(user)
    policy = resolve_policy(catalog, promotion)
    client = _client(client, tracking_uri)
    return _mlflow_call(lambda: _promote(client, policy, name, version, user), client)


def _promote(client: MlflowClient, policy, name: str, version, user: str) -> dict:
    report, about, mv = _assess(client, policy, name, version)
    version, alias, previous = report["version"], policy.alias, report["champion_version"]
    if previous == version:
        raise Conflict(f"version {version} of {name!r} holds @{alias} already: nothing to promote")
    if not report["passed"]:
        log.info("refused to promote %s version %s to @%s: %s failed", name, version, alias,
                 ", ".join(report["failed"]))
        raise PromotionRefused(report)
    now = _now()
    card = render_card(about, report, promoted_by=user, promoted_at=now, previous_version=previous)
    card_uri = _log_card(client, mv, card)
    event = audit.make_event(audit.next_seq(_events(client, name)), "promote", model=name, version=version,
                             alias=alias, user=user, time=now, previous_version=previous,
                             gates=report["gates"], card=card_uri)
    _apply(client, mv, event, description=card)
    log.info("promoted %s version %s to @%s (previous: %s) by %s", name, version, alias, previous, user)
    return {"action": "promote", "model": name, "version": version, "alias": alias, "previous_version": previous,
            "card": card_uri, "event": event, "report": report}


def rollback(name: str, *, user: str, catalog=None, promotion=None, client: MlflowClient | None = None,
             tracking_uri: str | None = None) -> dict:
    """Move the policy's alias back to the version that held it before the current one, per the audit trail.

    Gates are not evaluated again (the previous holder passed them when it was promoted); the event is
    audited on the version that receives the alias, with `previous_version` the one rolled back from.
    Returns `{"action": "rollback", "model", "version", "alias", "previous_version", "card", "event"}`.
    Raises RollbackRefused when there is no previous holder (or it was deleted).
    """
    user = _check_user(user)
    policy = resolve_policy(catalog, promotion)
    client = _client(client, tracking_uri)
    return _mlflow_call(lambda: _rollback(client, policy.alias, name, user), client)


def _rollback(client: MlflowClient, alias: str, name: str, user: str) -> dict:
    model = facts.registered_model(client, name)
    current = model.aliases.get(alias)
    current = None if current is None else str(current)
    events = _events(client, name)
    target = audit.rollback_target(events, name, alias, current)
    try:
        mv = facts.model_version(client, name, target)
    except NotFound:
        raise RollbackRefused(f"the previous @{alias} of {name!r}, version {target}, no longer exists; "
                              f"promote a version instead") from None
    event = audit.make_event(audit.next_seq(events), "rollback", model=name, version=target, alias=alias,
                             user=user, time=_now(), previous_version=current,
                             card=mv.tags.get(audit.CARD_TAG))
    _apply(client, mv, event)
    log.info("rolled back @%s of %s from version %s to %s by %s", alias, name, current, target, user)
    return {"action": "rollback", "model": name, "version": target, "alias": alias, "previous_version": current,
            "card": event["card"], "event": event}


def history(name: str, *, client: MlflowClient | None = None, tracking_uri: str | None = None) -> list[dict]:
    """Every promotion and rollback of the model, oldest first (events as described in `audit`)."""
    client = _client(client, tracking_uri)

    def read() -> list[dict]:
        facts.registered_model(client, name)  # NotFound for an unknown model, not an empty trail
        return _events(client, name)

    return _mlflow_call(read, client)


def _events(client: MlflowClient, name: str) -> list[dict]:
    return audit.events_from_tags(mv.tags for mv in facts.all_versions(client, name))


def _log_card(client: MlflowClient, mv, card: str) -> str | None:
    """Log the card as a run artifact; its `runs:/` URI, or None for a version without a run."""
    if not mv.run_id:
        return None
    path = f"model_card/{re.sub(r'[^A-Za-z0-9._-]+', '_', mv.name)}-v{mv.version}.md"
    client.log_text(mv.run_id, card, path)
    return f"runs:/{mv.run_id}/{path}"


def _apply(client: MlflowClient, mv, event: dict, description: str | None = None) -> None:
    """Description, audit tags, then the alias — all or nothing while MLflow answers: a failure undoes
    the steps taken. Each undo is registered before its step, since a step whose answer was lost may
    still have been carried out.

    If MLflow stops part-way, the undo cannot reach it either. The alias moves last, so it never holds
    the new version without the event in the trail: what may be left is the event of an attempt whose
    alias did not move (MlflowUnavailable says which, see `_stopped`), never an unaudited alias move.
    """
    name, version, alias, previous = mv.name, mv.version, event["alias"], event["previous_version"]
    undo, alias_sent = [], False
    try:
        if description is not None:
            undo.append(lambda: client.update_model_version(name, version, description=mv.description or ""))
            client.update_model_version(name, version, description=description)
        for key, value in audit.event_tags(event).items():  # the event tag, which history reads, comes last
            old = mv.tags.get(key)
            undo.append(lambda key=key, old=old: client.set_model_version_tag(name, version, key, old)
                        if old is not None else client.delete_model_version_tag(name, version, key))
            client.set_model_version_tag(name, version, key, value)
        undo.append(lambda: client.set_registered_model_alias(name, alias, previous) if previous
                    else client.delete_registered_model_alias(name, alias))
        alias_sent = True
        client.set_registered_model_alias(name, alias, version)
    except BaseException as e:
        undone = True
        for step in reversed(undo):  # the alias first
            try:
                step()
            except Exception as undo_error:  # keep undoing the rest; the original error is what the caller needs
                undone = False
                log.exception("could not undo a step of %s of %s version %s", event["action"], name, version)
                if lost_contact(undo_error):
                    break  # MLflow is gone: every other step would wait for its client's retries to fail too
        cause = lost_contact(e)
        if cause is not None:
            raise _stopped(client, event, cause, undone=undone, alias_sent=alias_sent) from e
        raise


def _stopped(client: MlflowClient, event: dict, cause: str, *, undone: bool, alias_sent: bool) -> MlflowUnavailable:
    """What is left after MLflow stopped answering during `_apply`, told as it is."""
    name, version, alias = event["model"], event["version"], event["alias"]
    where = (f"MLflow at {client.tracking_uri} stopped answering ({cause}) during the {event['action']} of "
             f"{name!r} version {version} to @{alias}")
    if undone:
        return MlflowUnavailable(f"{where}; every step was undone (@{alias} did not move, no audit event). Try again")
    if not alias_sent:
        return MlflowUnavailable(f"{where}: @{alias} did not move, but the audit trail may hold event "
                                 f"{event['seq']} of this attempt. Try again when MLflow is back")
    return MlflowUnavailable(f"{where}: @{alias} may have moved to version {version}; if it did, audit event "
                             f"{event['seq']} records it. When MLflow is back, check @{alias} (and `history`) "
                             "and try again if it did not move")


def _mlflow_call(call, client: MlflowClient):
    """Run `call`, turning MLflow's own errors into MlflowError (a refused request, 502) or
    MlflowUnavailable (it stopped answering, 503)."""
    try:
        return call()
    except (MlflowException, OSError) as e:  # OSError: requests' own errors, from artifact downloads
        cause = lost_contact(e)
        if cause is not None:  # before any write (_apply tells its own state): the probe's 503, told so
            raise MlflowUnavailable(f"MLflow at {client.tracking_uri} stopped answering ({cause}); no alias was "
                                    "moved. Try again when it is back") from e
        if not isinstance(e, MlflowException):
            raise
        raise MlflowError(f"MLflow at {client.tracking_uri} failed: {e.message}") from e
