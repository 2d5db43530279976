"""Promotion behind quality gates, as the platform service carries it out (mlplatform_service.promotion),
against the platform's real MLflow server: the engine in the test process with its own audit database."""

import hashlib
import json
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlplatform import registry
from mlplatform_service.platform_mlflow import PlatformMlflow

from ..support.mlflow_models import DATASET_NAME, DATASET_SOURCE, register_model, unique_name
from ..support.promotion import TEAM, caller, engine

OWNER = {"owner": "team-vision"}  # on the registered model: every version inherits it
USE = {"intended_use": "integration tests"}  # on each version
ALICE, BOB, CAROL = caller("alice"), caller("bob"), caller("carol")


@pytest.fixture
def mlflow(platform):
    return MlflowClient(platform.mlflow_url)


@pytest.fixture
def service(platform, tmp_path):
    return engine(platform, tmp_path)


@pytest.fixture
def register(platform):
    def register(name, accuracy, **kw):
        kw.setdefault("version_tags", USE)
        kw.setdefault("model_tags", OWNER)
        return register_model(platform.mlflow_url, name, metrics={"accuracy": accuracy}, **kw)
    return register


def champion(mlflow, name):
    return mlflow.get_registered_model(name).aliases.get("champion")


def outcomes(service, name):
    """(action, outcome, actor) of every audit record of the model, oldest first."""
    return [(r["action"], r["outcome"], r["actor"]) for r in service.audit.query(team=TEAM, limit=10**9)
            if r["target"] == f"model {TEAM}/{name}"]


def test_evaluate_reports_every_gate_and_changes_nothing(mlflow, register, service):
    v1 = register(unique_name("eval"), 0.95)
    report = service.evaluate(ALICE, TEAM, v1.name, v1.version)
    assert report == {
        "model": v1.name, "version": "1", "alias": "champion", "champion_version": None, "passed": True, "failed": [],
        "gates": [
            {"id": "accuracy >= 0.9", "kind": "metric", "passed": True, "message": "accuracy is 0.95, needs >= 0.9",
             "metric": "accuracy", "op": ">=", "threshold": 0.9, "value": 0.95},
            {"id": "accuracy no worse than @champion", "kind": "champion", "passed": True,
             "message": "no version holds @champion yet: nothing to compare with", "metric": "accuracy",
             "better": "higher", "value": 0.95, "champion_version": None, "champion_value": None},
            {"id": "signature present", "kind": "signature", "passed": True,
             "message": "signature with 2 inputs and 1 outputs", "value": {"inputs": 2, "outputs": 1}},
            {"id": "model card: intended_use", "kind": "model_card_field", "passed": True,
             "message": "intended_use is set on the version", "field": "intended_use", "value": "integration tests",
             "source": "version"},
            {"id": "model card: owner", "kind": "model_card_field", "passed": True,
             "message": "owner is set on the registered model", "field": "owner", "value": "team-vision",
             "source": "registered model"},
        ],
    }
    json.dumps(report)
    mv = mlflow.get_model_version(v1.name, v1.version)
    assert (champion(mlflow, v1.name), mv.tags, mv.description) == (None, USE, "")
    assert outcomes(service, v1.name) == []




def test_promote_moves_the_alias_and_records_the_audit_and_an_immutable_model_card(mlflow, register, service):
    v1 = register(unique_name("promote"), 0.95, params={"max_iter": 50})
    before = datetime.now(timezone.utc)
    result = service.promote(ALICE, TEAM, v1.name, v1.version)
    json.dumps(result)
    assert champion(mlflow, v1.name) == "1"
    event, report, digest = result["event"], result["report"], result["card"]
    assert result == {"action": "promote", "model": v1.name, "team": TEAM, "version": "1", "alias": "champion",
                      "previous_version": None, "card": digest, "event": event, "report": report}
    assert (report["passed"], report["failed"], report["champion_version"], len(report["gates"])) == (True, [], None, 5)
    assert event == {"seq": event["seq"], "action": "promote", "model": v1.name, "team": TEAM, "version": "1",
                     "alias": "champion", "user": "alice", "time": event["time"], "previous_version": None,
                     "gates": report["gates"], "card": digest}
    moment = datetime.fromisoformat(event["time"])
    assert before <= moment <= datetime.now(timezone.utc) and moment.utcoffset() == timedelta(0)
    # The intent was durable before the alias moved; the outcome names it.
    records = [r for r in service.audit.query(team=TEAM, limit=10**9) if r["target"] == f"model {TEAM}/{v1.name}"]
    assert [(r["outcome"], r["details"].get("intent_seq")) for r in records] == [
        ("intent", None), ("succeeded", records[0]["seq"])]
    assert records[0]["details"]["card_sha256"] == digest
    assert service.history(ALICE, TEAM, v1.name) == {"events": [event], "holder": "1", "rollback_to": None}

    card = service.cards.get(digest)
    assert hashlib.sha256(card.encode()).hexdigest() == digest
    mv = mlflow.get_model_version(v1.name, "1")
    assert (card, mv.tags) == (mv.description, USE)  # the card is the description; no tag of the platform's
    for line in (f"# Model card: {v1.name} version 1",
                 "Promoted to `@champion` by alice at ", "Previous `@champion`: none (first promotion).",
                 "| intended_use | integration tests |", "| owner | team-vision |",
                 f"`{v1.run_id}` (FINISHED", "- Experiment: mlplatform-tests (id ",
                 f"| {DATASET_NAME} | training | ", f" | {DATASET_SOURCE} |",
                 "| x1 | double | yes |", "| x2 | double | yes |", "| - | tensor int64 (-1) | yes |",
                 "| max_iter | 50 |", "| solver | lbfgs |", "| accuracy | 0.95 |",
                 "| accuracy >= 0.9 | pass | accuracy is 0.95, needs >= 0.9 |"):
        assert line in card, f"{line!r} not in the card:\n{card}"
    # Editing the description later does not change the stored card.
    mlflow.update_model_version(v1.name, "1", description="edited")
    assert service.cards.get(digest) == card


def test_failed_gates_move_no_alias_change_nothing_and_are_audited(mlflow, register, service):
    name = unique_name("refuse")
    register(name, 0.95)
    service.promote(ALICE, TEAM, name, "1")
    v2 = register(name, 0.85, signature=False, version_tags={})
    trail = service.history(ALICE, TEAM, name)

    with pytest.raises(registry.PromotionRefused) as refused:
        service.promote(BOB, TEAM, name, v2.version)
    report = refused.value.report
    assert (report["passed"], report["champion_version"], report["failed"]) == (
        False, "1", ["accuracy >= 0.9", "accuracy no worse than @champion", "signature present",
                     "model card: intended_use"])
    assert str(refused.value) == (
        f"version 2 of {name!r} was not promoted to @champion: 4 of 5 gates failed: "
        "accuracy >= 0.9: accuracy is 0.85, needs >= 0.9; "
        "accuracy no worse than @champion: accuracy 0.85 is worse than 0.95 of @champion (version 1; higher is "
        "better); signature present: the model was logged without a signature; log it with "
        "signature=infer_signature(X, y); model card: intended_use: tag 'intended_use' is missing; set it on the "
        f"""version with MlflowClient().set_model_version_tag({name!r}, '2', 'intended_use', "...") (or on the """
        "registered model with set_registered_model_tag)")
    assert refused.value.to_dict() == {"message": str(refused.value), "report": report}

    assert champion(mlflow, name) == "1"
    mv2 = mlflow.get_model_version(name, "2")
    assert (mv2.tags, mv2.description, mv2.aliases) == ({}, "", [])
    assert service.history(ALICE, TEAM, name) == trail
    assert outcomes(service, name) == [("promote", "intent", "alice"), ("promote", "succeeded", "alice"),
                                       ("promote", "refused", "bob")]


class AliasRefused(PlatformMlflow):
    """The real server, except that moving the alias fails with an answer (as a store error would)."""

    class Client(MlflowClient):
        def set_registered_model_alias(self, name, alias, version):
            raise MlflowException("injected: the alias could not be set")

    @contextmanager
    def client(self, team):
        with super().client(team):
            yield self.Client(self.tracking_uri)


def test_a_failure_while_moving_the_alias_undoes_the_promotion_and_is_audited(mlflow, register, platform, tmp_path):
    service = engine(platform, tmp_path, mlflow=AliasRefused(platform.mlflow_url, None, workspaces=False))
    name = unique_name("undo")
    register(name, 0.95)
    with pytest.raises(registry.MlflowError, match="injected: the alias could not be set"):
        service.promote(BOB, TEAM, name, "1")
    mv = mlflow.get_model_version(name, "1")
    assert (champion(mlflow, name), mv.tags, mv.description) == (None, USE, "")  # the description was undone
    assert outcomes(service, name) == [("promote", "intent", "bob"), ("promote", "failed", "bob")]
    assert service.history(ALICE, TEAM, name)["events"] == []


def test_worse_than_champion_is_refused_and_a_tie_is_not(mlflow, register, service):
    name = unique_name("champ")
    register(name, 0.95)
    service.promote(ALICE, TEAM, name, "1")
    worse = register(name, 0.93)  # passes the threshold, loses to the champion
    with pytest.raises(registry.PromotionRefused) as refused:
        service.promote(ALICE, TEAM, name, worse.version)
    assert refused.value.report["failed"] == ["accuracy no worse than @champion"]
    assert [g for g in refused.value.report["gates"] if g["kind"] == "champion"] == [
        {"id": "accuracy no worse than @champion", "kind": "champion", "passed": False,
         "message": "accuracy 0.93 is worse than 0.95 of @champion (version 1; higher is better)",
         "metric": "accuracy", "better": "higher", "value": 0.93, "champion_version": "1", "champion_value": 0.95}]
    assert champion(mlflow, name) == "1"

    tie = register(name, 0.95)
    result = service.promote(BOB, TEAM, name, tie.version)
    assert (result["version"], result["previous_version"], champion(mlflow, name)) == ("3", "1", "3")
    with pytest.raises(registry.Conflict, match=f"^version 3 of {name!r} holds @champion already: nothing to promote$"):
        service.promote(ALICE, TEAM, name, "3")


def test_rollback_returns_to_the_previous_champion_and_is_audited(mlflow, register, service):
    name = unique_name("rollback")
    register(name, 0.95), register(name, 0.96)
    first = service.promote(ALICE, TEAM, name, "1")
    service.promote(ALICE, TEAM, name, "2")
    assert champion(mlflow, name) == "2"
    assert service.history(ALICE, TEAM, name)["rollback_to"] == "1"

    result = service.rollback(CAROL, TEAM, name)
    json.dumps(result)
    assert champion(mlflow, name) == "1"
    event = result["event"]
    assert result == {"action": "rollback", "model": name, "team": TEAM, "version": "1", "alias": "champion",
                      "previous_version": "2", "card": first["card"], "event": event}
    assert {k: event[k] for k in ("action", "version", "user", "previous_version", "gates", "card")} == {
        "action": "rollback", "version": "1", "user": "carol", "previous_version": "2", "gates": None,
        "card": first["card"]}

    trail = service.history(ALICE, TEAM, name)
    assert [(e["action"], e["version"], e["previous_version"], e["user"]) for e in trail["events"]] == [
        ("promote", "1", None, "alice"), ("promote", "2", "1", "alice"), ("rollback", "1", "2", "carol")]
    assert (trail["holder"], trail["rollback_to"]) == ("1", None)

    with pytest.raises(registry.RollbackRefused) as refused:
        service.rollback(CAROL, TEAM, name)
    assert str(refused.value) == (f"no previous @champion of {name!r} that the platform promoted: version 1 is the "
                                  "first version promoted to @champion; promote another version instead")
    assert champion(mlflow, name) == "1"
    assert len(service.history(ALICE, TEAM, name)["events"]) == 3


def test_rollback_without_a_champion_is_refused(register, service):
    v1 = register(unique_name("nochamp"), 0.95)
    with pytest.raises(registry.RollbackRefused, match=f"^no version of {v1.name!r} holds @champion: nothing to "
                                                       "roll back; promote a version instead$"):
        service.rollback(CAROL, TEAM, v1.name)


def test_a_forged_audit_tag_does_not_steer_a_rollback(mlflow, register, service):
    """The trail is the platform's own record: tags on the versions, whatever they say, are not read."""
    name = unique_name("forged")
    for accuracy in (0.95, 0.96, 0.97):
        register(name, accuracy)
    ungated = register(name, 0.5, signature=False)  # version 4 would fail every gate
    service.promote(ALICE, TEAM, name, "1")
    service.promote(ALICE, TEAM, name, "2")
    forged = {"seq": 2, "action": "promote", "model": name, "version": ungated.version, "alias": "champion",
              "user": "alice", "time": "2026-01-01T00:00:00+00:00", "previous_version": "1", "gates": [], "card": None}
    mlflow.set_model_version_tag(name, ungated.version, "mlplatform.audit.000002", json.dumps(forged))
    assert service.rollback(BOB, TEAM, name)["version"] == "1"
    assert champion(mlflow, name) == "1"


def test_only_the_team_acts_on_its_models(mlflow, register, service):
    v1 = register(unique_name("teams"), 0.95)
    outsider = caller("bob", teams=("team-nlp",))
    for action in (lambda: service.promote(outsider, TEAM, v1.name, "1"),
                   lambda: service.rollback(outsider, TEAM, v1.name)):
        with pytest.raises(registry.Forbidden) as refused:
            action()
        assert str(refused.value).startswith("bob may not ")
        assert "it belongs to team team-vision, and only its members promote and roll back its models (bob's " \
               "teams: team-nlp)" in str(refused.value)
    assert champion(mlflow, v1.name) is None
    assert outcomes(service, v1.name) == [("promote", "refused", "bob"), ("rollback", "refused", "bob")]
    # Reading is what the catalog lets other teams do (the bundled catalog: read).
    assert service.history(outsider, TEAM, v1.name)["events"] == []
    # A platform admin may act on any team's model, audited under their name.
    assert service.promote(caller("admin", teams=("team-nlp",), admin=True), TEAM, v1.name, "1")["event"]["user"] == \
        "admin"


def test_concurrent_promotions_of_one_model_are_serialized(mlflow, register, service):
    from concurrent.futures import ThreadPoolExecutor

    name = unique_name("race")
    for accuracy in (0.95, 0.95, 0.95):
        register(name, accuracy)
    service.promote(ALICE, TEAM, name, "1")
    with ThreadPoolExecutor(2) as pool:
        done = [f.result() for f in [pool.submit(service.promote, ALICE, TEAM, name, "2"),
                                     pool.submit(service.promote, BOB, TEAM, name, "3")]]
    # One after the other: the second saw the first's result as its previous holder.
    by_order = sorted(done, key=lambda r: r["event"]["seq"])
    assert by_order[0]["previous_version"] == "1"
    assert by_order[1]["previous_version"] == by_order[0]["version"]
    assert champion(mlflow, name) == by_order[1]["version"]
    events = service.history(ALICE, TEAM, name)["events"]
    assert [(e["version"], e["previous_version"]) for e in events] == [
        ("1", None), (by_order[0]["version"], "1"), (by_order[1]["version"], by_order[0]["version"])]


def test_unknown_model_version_and_team_say_what_exists(mlflow, register, service, platform):
    v1 = register(unique_name("known"), 0.95)
    with pytest.raises(registry.NotFound) as missing:
        service.evaluate(ALICE, TEAM, "no-such-model", 1)
    assert str(missing.value).startswith(f"no registered model 'no-such-model' in MLflow at {platform.mlflow_url}; "
                                         "registered models: ")
    with pytest.raises(registry.NotFound, match=f"^{v1.name!r} has no version 7; versions: 1$"):
        service.promote(ALICE, TEAM, v1.name, 7)
    with pytest.raises(registry.NotFound, match=f"^version 'latest' of {v1.name!r} is not a version number; "
                                                "versions: 1$"):
        service.evaluate(ALICE, TEAM, v1.name, "latest")
    with pytest.raises(registry.NotFound, match="^team 'team-x' is not a team of the catalog; teams: team-vision, "):
        service.promote(ALICE, "team-x", v1.name, 1)
    for call in (lambda: service.history(ALICE, TEAM, "no-such-model"),
                 lambda: service.rollback(ALICE, TEAM, "no-such-model")):
        with pytest.raises(registry.NotFound, match="^no registered model 'no-such-model'"):
            call()
    assert champion(mlflow, v1.name) is None
