"""Promotion behind quality gates against the platform's real MLflow server (mlplatform.registry)."""

import json
import os
from datetime import datetime, timedelta, timezone

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlplatform_core.catalog import Promotion
from hub_config.catalog import DEFAULT_CATALOG
from mlplatform import registry

from ..support.mlflow_models import DATASET_NAME, DATASET_SOURCE, register_model, unique_name

POLICY = Promotion(alias="champion", metric_gates=[{"metric": "accuracy", "op": ">=", "threshold": 0.9}],
                   compare_with_champion=True, require_signature=True, model_card_fields=["intended_use", "owner"])
OWNER = {"owner": "team-vision"}  # on the registered model: every version inherits it
USE = {"intended_use": "integration tests"}  # on each version


@pytest.fixture
def mlflow(platform):
    return MlflowClient(platform.mlflow_url)


@pytest.fixture
def register(platform):
    def register(name, accuracy, **kw):
        kw.setdefault("version_tags", USE)
        kw.setdefault("model_tags", OWNER)
        return register_model(platform.mlflow_url, name, metrics={"accuracy": accuracy}, **kw)
    return register


def promote(mlflow, mv, user="alice"):
    return registry.promote(mv.name, mv.version, user=user, promotion=POLICY, client=mlflow)


def champion(mlflow, name):
    return mlflow.get_registered_model(name).aliases.get("champion")


def ours(tags):
    return {k: v for k, v in tags.items() if k.startswith("mlplatform.")}


def test_evaluate_reports_every_gate_and_changes_nothing(mlflow, register):
    v1 = register(unique_name("eval"), 0.95)
    report = registry.evaluate(v1.name, v1.version, promotion=POLICY, client=mlflow)
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


def test_promote_moves_the_alias_and_records_audit_and_model_card(mlflow, register, tmp_path):
    v1 = register(unique_name("promote"), 0.95, params={"max_iter": 50})
    before = datetime.now(timezone.utc)
    result = promote(mlflow, v1)
    json.dumps(result)
    assert champion(mlflow, v1.name) == "1"
    card_uri = f"runs:/{v1.run_id}/model_card/{v1.name}-v1.md"
    event = result["event"]
    assert result == {"action": "promote", "model": v1.name, "version": "1", "alias": "champion",
                      "previous_version": None, "card": card_uri, "event": event, "report": result["report"]}
    report = result["report"]
    assert (report["passed"], report["failed"], report["champion_version"], len(report["gates"])) == (True, [], None, 5)
    assert event == {"seq": 1, "action": "promote", "model": v1.name, "version": "1", "alias": "champion",
                     "user": "alice", "time": event["time"], "previous_version": None,
                     "gates": result["report"]["gates"], "card": card_uri}
    assert before <= datetime.fromisoformat(event["time"]) <= datetime.now(timezone.utc)
    assert datetime.fromisoformat(event["time"]).utcoffset() == timedelta(0)

    mv = mlflow.get_model_version(v1.name, "1")
    assert ours(mv.tags) == {
        "mlplatform.promotion.action": "promote",
        "mlplatform.promotion.user": "alice",
        "mlplatform.promotion.time": event["time"],
        "mlplatform.promotion.alias": "champion",
        "mlplatform.promotion.previous_version": "none",
        "mlplatform.promotion.gates": json.dumps(result["report"]["gates"], separators=(",", ":")),
        "mlplatform.model_card": card_uri,
        "mlplatform.audit.000001": json.dumps(event, sort_keys=True, separators=(",", ":")),
    }
    assert registry.history(v1.name, client=mlflow) == [event]

    card_file = mlflow.download_artifacts(v1.run_id, f"model_card/{v1.name}-v1.md", str(tmp_path))
    card = open(card_file).read()  # the artifact, through the tracking server
    assert card == mv.description
    for line in (f"# Model card: {v1.name} version 1",
                 f"Promoted to `@champion` by alice at {event['time']}. Previous `@champion`: none (first promotion).",
                 "| intended_use | integration tests |", "| owner | team-vision |",
                 f"`{v1.run_id}` (FINISHED", "- Experiment: mlplatform-tests (id ",
                 f"| {DATASET_NAME} | training | ", f" | {DATASET_SOURCE} |",
                 "| x1 | double | yes |", "| x2 | double | yes |", "| - | tensor int64 (-1) | yes |",
                 "| max_iter | 50 |", "| solver | lbfgs |", "| accuracy | 0.95 |",
                 "| accuracy >= 0.9 | pass | accuracy is 0.95, needs >= 0.9 |"):
        assert line in card, f"{line!r} not in the card:\n{card}"


def test_failed_gates_move_no_alias_and_change_nothing(mlflow, register):
    name = unique_name("refuse")
    register(name, 0.95)
    promote(mlflow, mlflow.get_model_version(name, "1"))
    v2 = register(name, 0.85, signature=False, version_tags={})
    trail = registry.history(name, client=mlflow)

    with pytest.raises(registry.PromotionRefused) as refused:
        promote(mlflow, v2, user="bob")
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
        "version or on the registered model")
    assert refused.value.to_dict() == {"message": str(refused.value), "report": report}
    json.dumps(refused.value.to_dict())

    assert champion(mlflow, name) == "1"
    mv2 = mlflow.get_model_version(name, "2")
    assert (mv2.tags, mv2.description, mv2.aliases) == ({}, "", [])
    assert registry.history(name, client=mlflow) == trail
    assert mlflow.list_artifacts(v2.run_id, "model_card") == []


class AuditStoreDown(MlflowClient):
    """The real server, except that writing the audit event fails (as when the store goes away mid-way)."""

    def set_model_version_tag(self, name, version, key, value):
        if key.startswith("mlplatform.audit."):
            raise MlflowException("injected: the tag could not be written")
        return super().set_model_version_tag(name, version, key, value)


def test_a_failure_while_auditing_undoes_the_promotion(mlflow, register, platform):
    name = unique_name("undo")
    promote(mlflow, register(name, 0.95))
    v2 = register(name, 0.96)
    with pytest.raises(registry.MlflowError, match="injected: the tag could not be written"):
        registry.promote(name, v2.version, user="bob", promotion=POLICY, client=AuditStoreDown(platform.mlflow_url))
    mv2 = mlflow.get_model_version(name, "2")
    assert (champion(mlflow, name), mv2.tags, mv2.description) == ("1", USE, "")
    assert [e["version"] for e in registry.history(name, client=mlflow)] == ["1"]


def test_worse_than_champion_is_refused_and_a_tie_is_not(mlflow, register):
    name = unique_name("champ")
    promote(mlflow, register(name, 0.95))
    worse = register(name, 0.93)  # passes the threshold, loses to the champion
    with pytest.raises(registry.PromotionRefused) as refused:
        promote(mlflow, worse)
    assert refused.value.report["failed"] == ["accuracy no worse than @champion"]
    assert [g for g in refused.value.report["gates"] if g["kind"] == "champion"] == [
        {"id": "accuracy no worse than @champion", "kind": "champion", "passed": False,
         "message": "accuracy 0.93 is worse than 0.95 of @champion (version 1; higher is better)",
         "metric": "accuracy", "better": "higher", "value": 0.93, "champion_version": "1", "champion_value": 0.95}]
    assert champion(mlflow, name) == "1"

    tie = register(name, 0.95)
    result = promote(mlflow, tie, user="bob")
    assert (result["version"], result["previous_version"], champion(mlflow, name)) == ("3", "1", "3")
    assert ours(mlflow.get_model_version(name, "3").tags)["mlplatform.promotion.previous_version"] == "1"

    with pytest.raises(registry.Conflict, match=f"^version 3 of {name!r} holds @champion already: nothing to promote$"):
        promote(mlflow, tie)


def test_rollback_returns_to_the_previous_champion_and_is_audited(mlflow, register):
    name = unique_name("rollback")
    v1, v2 = register(name, 0.95), register(name, 0.96)
    promote(mlflow, v1)
    promote(mlflow, v2)
    assert champion(mlflow, name) == "2"

    result = registry.rollback(name, user="carol", promotion=POLICY, client=mlflow)
    json.dumps(result)
    assert champion(mlflow, name) == "1"
    event = result["event"]
    v1_card = f"runs:/{v1.run_id}/model_card/{name}-v1.md"
    assert result == {"action": "rollback", "model": name, "version": "1", "alias": "champion",
                      "previous_version": "2", "card": v1_card, "event": event}
    assert event == {"seq": 3, "action": "rollback", "model": name, "version": "1", "alias": "champion",
                     "user": "carol", "time": event["time"], "previous_version": "2", "gates": None, "card": v1_card}
    tags = ours(mlflow.get_model_version(name, "1").tags)
    assert {k: tags[k] for k in ("mlplatform.promotion.action", "mlplatform.promotion.user",
                                 "mlplatform.promotion.previous_version", "mlplatform.promotion.gates")} == {
        "mlplatform.promotion.action": "rollback", "mlplatform.promotion.user": "carol",
        "mlplatform.promotion.previous_version": "2", "mlplatform.promotion.gates": "null"}
    assert "mlplatform.audit.000001" in tags and "mlplatform.audit.000003" in tags  # both events of version 1

    trail = registry.history(name, client=mlflow)
    assert [(e["seq"], e["action"], e["version"], e["previous_version"], e["user"]) for e in trail] == [
        (1, "promote", "1", None, "alice"), (2, "promote", "2", "1", "alice"), (3, "rollback", "1", "2", "carol")]

    with pytest.raises(registry.RollbackRefused) as refused:
        registry.rollback(name, user="carol", promotion=POLICY, client=mlflow)
    assert str(refused.value) == (f"no previous @champion of {name!r} in the audit trail: version 1 is the first "
                                  "version promoted to @champion; promote another version instead")
    assert champion(mlflow, name) == "1"
    assert len(registry.history(name, client=mlflow)) == 3


def test_rollback_without_a_champion_is_refused(mlflow, register):
    v1 = register(unique_name("nochamp"), 0.95)
    with pytest.raises(registry.RollbackRefused, match=f"^no version of {v1.name!r} holds @champion: nothing to "
                                                       "roll back; promote a version instead$"):
        registry.rollback(v1.name, user="carol", promotion=POLICY, client=mlflow)


def test_unknown_model_and_version_say_what_exists(mlflow, register, platform):
    v1 = register(unique_name("known"), 0.95)
    with pytest.raises(registry.NotFound) as missing:
        registry.evaluate("no-such-model", 1, promotion=POLICY, client=mlflow)
    assert str(missing.value).startswith(f"no registered model 'no-such-model' in MLflow at {platform.mlflow_url}; "
                                         "registered models: ")
    with pytest.raises(registry.NotFound, match=f"^{v1.name!r} has no version 7; versions: 1$"):
        registry.promote(v1.name, 7, user="alice", promotion=POLICY, client=mlflow)
    with pytest.raises(registry.NotFound, match=f"^version 'latest' of {v1.name!r} is not a version number; "
                                                "versions: 1$"):
        registry.evaluate(v1.name, "latest", promotion=POLICY, client=mlflow)
    for call in (lambda: registry.history("no-such-model", client=mlflow),
                 lambda: registry.rollback("no-such-model", user="alice", promotion=POLICY, client=mlflow)):
        with pytest.raises(registry.NotFound, match="^no registered model 'no-such-model'"):
            call()
    assert champion(mlflow, v1.name) is None


def test_notebook_defaults_gates_from_the_catalog_and_mlflow_from_the_environment(register, platform, monkeypatch):
    # As in a notebook the platform started: MLPLATFORM_CATALOG and MLFLOW_TRACKING_URI, no arguments.
    monkeypatch.setenv("MLPLATFORM_CATALOG", str(DEFAULT_CATALOG))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", platform.mlflow_url)
    v1 = register(unique_name("notebook"), 0.91)
    report = registry.evaluate(v1.name, v1.version)
    assert [(g["id"], g["passed"]) for g in report["gates"]] == [
        ("accuracy >= 0.92", False), ("accuracy no worse than @champion", True), ("signature present", True),
        ("model card: intended_use", True), ("model card: owner", True)]
    with pytest.raises(registry.PromotionRefused):
        registry.promote(v1.name, v1.version, user="alice")
    assert registry.history(v1.name) == []
    assert os.environ["MLFLOW_TRACKING_URI"] == platform.mlflow_url  # nothing here unset MLflow's variable
