"""Which gates apply (mlplatform.registry.policy) and arguments refused before MLflow is asked."""

import pytest

from mlplatform_core.catalog import Promotion, load_catalog
from hub_config.catalog import DEFAULT_CATALOG
from mlplatform import registry
from mlplatform.registry.policy import resolve_policy

PLATFORM_PROMOTION = Promotion(alias="champion", metric_gates=[{"metric": "accuracy", "op": ">=", "threshold": 0.92}],
                               compare_with_champion=True, require_signature=True,
                               model_card_fields=["intended_use", "owner"])


def test_policy_from_each_source():
    mine = Promotion(alias="production", model_card_fields=[])
    assert resolve_policy(promotion=mine) is mine
    assert resolve_policy(promotion={"alias": "production", "model_card_fields": []}) == mine
    assert resolve_policy(catalog=load_catalog(DEFAULT_CATALOG)) == PLATFORM_PROMOTION
    assert resolve_policy(catalog=str(DEFAULT_CATALOG)) == PLATFORM_PROMOTION
    assert resolve_policy(environ={"MLPLATFORM_CATALOG": str(DEFAULT_CATALOG)}) == PLATFORM_PROMOTION


def test_no_policy_is_an_error_not_an_empty_gate_list():
    with pytest.raises(registry.RegistryError) as e:
        resolve_policy(environ={})
    assert str(e.value) == ("no promotion policy: MLPLATFORM_CATALOG is not set (it is on servers the platform "
                            "starts); pass catalog= (a Catalog or a catalog file) or promotion=")


def test_bad_policies_say_what_is_allowed(tmp_path):
    with pytest.raises(registry.RegistryError, match=r"^invalid promotion policy: metric_gates\.0\.op: Input should "
                                                     r"be '>=', '>', '<=' or '<'; allowed keys: alias, metric_gates, "
                                                     r"compare_with_champion, require_signature, model_card_fields$"):
        resolve_policy(promotion={"metric_gates": [{"metric": "accuracy", "op": "=>", "threshold": 0.9}]})
    with pytest.raises(registry.RegistryError, match="^pass either catalog= or promotion=, not both$"):
        resolve_policy(catalog=load_catalog(DEFAULT_CATALOG), promotion=PLATFORM_PROMOTION)
    missing = tmp_path / "nope.yaml"
    with pytest.raises(registry.RegistryError, match=f"^invalid catalog {missing}:\n  - cannot read the file"):
        resolve_policy(environ={"MLPLATFORM_CATALOG": str(missing)})


@pytest.mark.parametrize("call", [
    lambda: registry.promote("iris", 1, user="", promotion=PLATFORM_PROMOTION, tracking_uri="http://unused"),
    lambda: registry.rollback("iris", user=None, promotion=PLATFORM_PROMOTION, tracking_uri="http://unused"),
])
def test_who_acts_is_required(call):
    with pytest.raises(registry.RegistryError, match="is not allowed: name who acts \\(the hub username\\), "
                                                     "e.g. user='alice'$"):
        call()


def test_client_or_tracking_uri_not_both():
    from mlflow import MlflowClient
    with pytest.raises(registry.RegistryError, match="^pass either client= or tracking_uri=, not both$"):
        registry.history("iris", client=MlflowClient("http://unused"), tracking_uri="http://unused")


def test_errors_carry_their_status_and_json_body():
    report = {"model": "iris", "version": "2", "alias": "champion", "gates": [
        {"id": "accuracy >= 0.9", "passed": False, "message": "accuracy is 0.8, needs >= 0.9"},
        {"id": "signature present", "passed": True, "message": "ok"}]}
    refused = registry.PromotionRefused(report)
    assert (refused.status, refused.to_dict()) == (409, {
        "message": "version 2 of 'iris' was not promoted to @champion: 1 of 2 gates failed: "
                   "accuracy >= 0.9: accuracy is 0.8, needs >= 0.9",
        "report": report})
    assert [e.status for e in (registry.NotFound("x"), registry.RollbackRefused("x"), registry.Conflict("x"),
                               registry.MlflowError("x"), registry.RegistryError("x"))] == [404, 409, 409, 502, 400]
