"""Which gates apply (mlplatform.registry.policy) and arguments refused before MLflow is asked."""

import pytest

from mlplatform_core.catalog import Promotion, load_catalog
from hub_config.catalog import DEFAULT_CATALOG
from mlplatform import registry
from mlplatform.registry.policy import resolve_policy

PLATFORM_PROMOTION = Promotion(alias="champion", metric_gates=[{"metric": "accuracy", "op": ">=", "threshold": 0.92}],
                               compare_with_champion=True, require_signature=True,
                               model_card_fields=["intended_use", "owner"],
                               live_gates={"max_p99_ratio": 2.5})  # one machine: hub_config/platform.yaml says why


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
                                                     r"compare_with_champion, require_signature, model_card_fields, "
                                                     r"protected_aliases, live_gates$"):
        resolve_policy(promotion={"metric_gates": [{"metric": "accuracy", "op": "=>", "threshold": 0.9}]})
    with pytest.raises(registry.RegistryError, match="^pass either catalog= or promotion=, not both$"):
        resolve_policy(catalog=load_catalog(DEFAULT_CATALOG), promotion=PLATFORM_PROMOTION)
    missing = tmp_path / "nope.yaml"
    with pytest.raises(registry.RegistryError, match=f"^invalid catalog {missing}:\n  - cannot read the file"):
        resolve_policy(environ={"MLPLATFORM_CATALOG": str(missing)})


def test_outside_a_server_of_the_platform_says_what_promotion_needs(monkeypatch):
    for name in ("MLPLATFORM_SERVICE_URL", "JUPYTERHUB_API_TOKEN", "MLFLOW_WORKSPACE", "MLPLATFORM_TEAM"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(registry.RegistryError, match="^promotion goes through the platform service: "
                                                     "MLPLATFORM_SERVICE_URL and JUPYTERHUB_API_TOKEN are set in "
                                                     "servers the platform's hub starts$"):
        registry.rollback("iris", team="team-vision")
    monkeypatch.setenv("MLPLATFORM_SERVICE_URL", "http://127.0.0.1:9/services/mlplatform")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "t")
    with pytest.raises(registry.RegistryError, match="^no team: promotion acts on a team's models; in a server the "
                                                     "platform started, MLFLOW_WORKSPACE names it; else pass team=$"):
        registry.promote("iris", 1)


def test_the_services_answers_become_the_registrys_errors():
    from mlplatform.mlflow_health import MlflowUnavailable
    from mlplatform.registry.api import _error

    report = {"model": "iris", "version": "2", "alias": "champion", "passed": False, "failed": ["x"],
              "gates": [{"id": "x", "passed": False, "message": "no"}]}
    refused = _error(409, {"message": "...", "report": report, "error": "PromotionRefused"})
    assert isinstance(refused, registry.PromotionRefused) and refused.report == report
    assert type(_error(409, {"message": "m", "error": "RollbackRefused"})) is registry.RollbackRefused
    assert type(_error(409, {"message": "m", "error": "Conflict"})) is registry.Conflict
    assert type(_error(403, {"message": "m", "error": "Forbidden"})) is registry.Forbidden
    assert type(_error(403, {"message": "the service needs a hub token"})) is registry.Forbidden
    assert type(_error(404, {"message": "m", "error": "NotFound"})) is registry.NotFound
    unavailable = _error(503, {"message": "MLflow stopped answering"})
    assert isinstance(unavailable, MlflowUnavailable) and str(unavailable) == "MLflow stopped answering"
    assert type(_error(500, {"message": "boom"})) is registry.MlflowError


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
