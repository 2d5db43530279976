"""Promotion gates evaluated on plain values (mlplatform.registry.gates): whole-report asserts."""

import math

from mlplatform_core.catalog import Promotion
from mlplatform.registry.gates import evaluate_gates, summary

POLICY = Promotion(metric_gates=[{"metric": "accuracy", "op": ">=", "threshold": 0.92},
                                 {"metric": "loss", "op": "<", "threshold": 0.3}],
                   model_card_fields=["intended_use", "owner"])
SIGNATURE = {"inputs": [{"type": "double", "name": "x1", "required": True},
                        {"type": "double", "name": "x2", "required": True}],
             "outputs": [{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}], "params": None}
CARD_TAGS = {"intended_use": "fraud screening", "owner": "alice"}


def evaluate(metrics, champion=None, signature=SIGNATURE, version_tags=CARD_TAGS, model_tags=None, policy=POLICY,
             **kw):
    return evaluate_gates(policy, model="iris", version="3", metrics=metrics, signature=signature,
                          version_tags=version_tags, model_tags=model_tags or {}, champion=champion, **kw)


def test_first_promotion_passes_every_gate():
    assert evaluate({"accuracy": 0.95, "loss": 0.2}) == {
        "model": "iris", "version": "3", "alias": "champion", "champion_version": None,
        "passed": True, "failed": [],
        "gates": [
            {"id": "accuracy >= 0.92", "kind": "metric", "passed": True, "message": "accuracy is 0.95, needs >= 0.92",
             "metric": "accuracy", "op": ">=", "threshold": 0.92, "value": 0.95},
            {"id": "loss < 0.3", "kind": "metric", "passed": True, "message": "loss is 0.2, needs < 0.3",
             "metric": "loss", "op": "<", "threshold": 0.3, "value": 0.2},
            {"id": "accuracy no worse than @champion", "kind": "champion", "passed": True,
             "message": "no version holds @champion yet: nothing to compare with", "metric": "accuracy",
             "better": "higher", "value": 0.95, "champion_version": None, "champion_value": None},
            {"id": "loss no worse than @champion", "kind": "champion", "passed": True,
             "message": "no version holds @champion yet: nothing to compare with", "metric": "loss",
             "better": "lower", "value": 0.2, "champion_version": None, "champion_value": None},
            {"id": "signature present", "kind": "signature", "passed": True,
             "message": "signature with 2 inputs and 1 outputs", "value": {"inputs": 2, "outputs": 1}},
            {"id": "model card: intended_use", "kind": "model_card_field", "passed": True,
             "message": "intended_use is set on the version", "field": "intended_use", "value": "fraud screening",
             "source": "version"},
            {"id": "model card: owner", "kind": "model_card_field", "passed": True,
             "message": "owner is set on the version", "field": "owner", "value": "alice", "source": "version"},
        ],
    }


def test_every_gate_fails_with_its_values():
    champion = {"version": "2", "metrics": {"accuracy": 0.94, "loss": 0.1}}
    report = evaluate({"accuracy": 0.9, "f1": 0.8}, champion=champion, signature=None,
                      version_tags={"intended_use": "  "}, model_tags={})
    assert report == {
        "model": "iris", "version": "3", "alias": "champion", "champion_version": "2", "passed": False,
        "failed": ["accuracy >= 0.92", "loss < 0.3", "accuracy no worse than @champion",
                   "loss no worse than @champion", "signature present", "model card: intended_use",
                   "model card: owner"],
        "gates": [
            {"id": "accuracy >= 0.92", "kind": "metric", "passed": False, "message": "accuracy is 0.9, needs >= 0.92",
             "metric": "accuracy", "op": ">=", "threshold": 0.92, "value": 0.9},
            {"id": "loss < 0.3", "kind": "metric", "passed": False,
             "message": "loss was not logged by the version's run; metrics logged: accuracy, f1",
             "metric": "loss", "op": "<", "threshold": 0.3, "value": None},
            {"id": "accuracy no worse than @champion", "kind": "champion", "passed": False,
             "message": "accuracy 0.9 is worse than 0.94 of @champion (version 2; higher is better)",
             "metric": "accuracy", "better": "higher", "value": 0.9, "champion_version": "2", "champion_value": 0.94},
            {"id": "loss no worse than @champion", "kind": "champion", "passed": False,
             "message": "loss was not logged by the version's run; metrics logged: accuracy, f1",
             "metric": "loss", "better": "lower", "value": None, "champion_version": "2", "champion_value": 0.1},
            {"id": "signature present", "kind": "signature", "passed": False,
             "message": "the model was logged without a signature; log it with signature=infer_signature(X, y)",
             "value": None},
            {"id": "model card: intended_use", "kind": "model_card_field", "passed": False,
             "message": "tag 'intended_use' is missing; set it on the version with "
                        "MlflowClient().set_model_version_tag('iris', '3', 'intended_use', \"...\") "
                        "(or on the registered model with set_registered_model_tag)",
             "field": "intended_use", "value": None, "source": None},
            {"id": "model card: owner", "kind": "model_card_field", "passed": False,
             "message": "tag 'owner' is missing; set it on the version with "
                        "MlflowClient().set_model_version_tag('iris', '3', 'owner', \"...\") "
                        "(or on the registered model with set_registered_model_tag)",
             "field": "owner", "value": None, "source": None},
        ],
    }


def champion_gates(metrics, champion_metrics, policy=POLICY):
    report = evaluate(metrics, champion={"version": "2", "metrics": champion_metrics}, policy=policy)
    return [(g["id"], g["passed"], g["message"]) for g in report["gates"] if g["kind"] == "champion"]


def test_champion_comparison_direction_comes_from_the_op_and_ties_pass():
    assert champion_gates({"accuracy": 0.95, "loss": 0.25}, {"accuracy": 0.95, "loss": 0.2}) == [
        ("accuracy no worse than @champion", True,
         "accuracy 0.95 is no worse than 0.95 of @champion (version 2; higher is better)"),
        ("loss no worse than @champion", False,
         "loss 0.25 is worse than 0.2 of @champion (version 2; lower is better)"),
    ]


def test_champion_without_the_metric_and_the_champion_itself_pass():
    policy = Promotion(metric_gates=[{"metric": "accuracy", "op": ">", "threshold": 0.5},
                                     {"metric": "accuracy", "op": ">=", "threshold": 0.6}],  # one comparison
                       model_card_fields=[])
    assert champion_gates({"accuracy": 0.7}, {}, policy) == [
        ("accuracy no worse than @champion", True,
         "@champion (version 2) has no accuracy value: nothing to compare with")]
    report = evaluate_gates(policy, model="iris", version="2", metrics={"accuracy": 0.7}, signature=SIGNATURE,
                            version_tags={}, model_tags={}, champion={"version": "2", "metrics": {"accuracy": 0.7}})
    assert [(g["id"], g["message"]) for g in report["gates"] if g["kind"] == "champion"] == [
        ("accuracy no worse than @champion", "version 2 holds @champion already")]


def test_switched_off_gates_are_not_reported():
    policy = Promotion(alias="production", metric_gates=[], compare_with_champion=False, require_signature=False,
                       model_card_fields=[])
    assert evaluate({}, signature=None, policy=policy) == {
        "model": "iris", "version": "3", "alias": "production", "champion_version": None,
        "passed": True, "failed": [], "gates": []}


def test_model_card_field_falls_back_to_the_registered_model():
    report = evaluate({"accuracy": 0.95, "loss": 0.1}, version_tags={"owner": "bob"},
                      model_tags={"intended_use": "demo", "owner": "carol"})
    assert [g for g in report["gates"] if g["kind"] == "model_card_field"] == [
        {"id": "model card: intended_use", "kind": "model_card_field", "passed": True,
         "message": "intended_use is set on the registered model", "field": "intended_use", "value": "demo",
         "source": "registered model"},
        {"id": "model card: owner", "kind": "model_card_field", "passed": True,
         "message": "owner is set on the version", "field": "owner", "value": "bob", "source": "version"},
    ]


def test_nan_metric_and_unreadable_signature_fail_with_a_reason():
    report = evaluate({"accuracy": math.nan, "loss": 0.1}, signature=None,
                      signature_problem="the version's MLmodel file could not be read: 404")
    assert [(g["id"], g["passed"], g["message"]) for g in report["gates"]][:1] == [
        ("accuracy >= 0.92", False, "accuracy is NaN")]
    assert [(g["passed"], g["message"]) for g in report["gates"] if g["kind"] == "signature"] == [
        (False, "the version's MLmodel file could not be read: 404")]


def test_summary_is_one_line_per_gate():
    report = evaluate({"accuracy": 0.9, "loss": 0.1}, policy=Promotion(
        metric_gates=[{"metric": "accuracy", "op": ">=", "threshold": 0.92}], compare_with_champion=False,
        model_card_fields=["owner"]))
    assert summary(report) == ("FAIL accuracy >= 0.92: accuracy is 0.9, needs >= 0.92\n"
                               "PASS signature present: signature with 2 inputs and 1 outputs\n"
                               "PASS model card: owner: owner is set on the version")
