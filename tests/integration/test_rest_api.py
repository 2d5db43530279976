"""The jupyter server extension's REST API through pytest-jupyter's real server (`jp_fetch`)."""

import json
import re
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient
from tornado.httpclient import HTTPClientError

import mlplatform
from mlplatform.handlers import PREFIX, routes
from mlplatform.handlers.serving import DEPLOY_FIELDS, GENERATE_FIELDS, PREDICT_FIELDS
from mlplatform.handlers.spark import SUBMIT_FIELDS

from ..support.as_server import act_as
from ..support.mlflow_access import s3_admin, workspace
from ..support.mlflow_models import register_model, unique_name
from .rest_fixtures import api_fixture, server_config_fixture  # noqa: F401  (fixtures api, jp_server_config)

OPENAPI = Path(mlplatform.__file__).parent / "openapi.yaml"


@pytest.fixture
def tracking(platform, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", platform.mlflow_url)
    return MlflowClient(platform.mlflow_url)


def test_models_lists_registered_models_with_aliases(api, tracking):
    name = "rest-api-listed-model"
    if not tracking.search_registered_models(f"name = '{name}'"):
        tracking.create_registered_model(name, description="listed by the REST API")
        with mlflow.start_run() as run:
            mlflow.log_metric("accuracy", 0.9)
        tracking.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
        tracking.set_registered_model_alias(name, "champion", "1")
    r = api(*PREFIX.strip("/").split("/"), "models")
    [model] = [m for m in json.loads(r.body)["models"] if m["name"] == name]
    assert model["aliases"] == {"champion": "1"}
    assert model["description"] == "listed by the REST API"
    assert [v["version"] for v in model["versions"]] == ["1"]


def test_openapi_document_is_the_one_in_the_repository(api):
    r = api("mlplatform", "api", "openapi.json")
    assert json.loads(r.body) == yaml.safe_load(OPENAPI.read_text())


def test_every_route_is_documented_with_its_verbs():
    spec = yaml.safe_load(OPENAPI.read_text())
    served = {}
    for pattern, handler in routes():
        path = re.sub(r"\(\?P<\w+>[^)]*\)", "{}", pattern.removeprefix(PREFIX))
        served[path] = {m for m in ("get", "put", "post", "delete") if m in vars(handler)}  # verbs it defines
    documented = {re.sub(r"\{\w+\}", "{}", p): {m for m in item if m != "parameters"} for p, item in spec["paths"].items()}
    assert documented == served


def test_request_schemas_list_the_fields_the_handlers_take():
    spec = yaml.safe_load(OPENAPI.read_text())
    schemas = spec["components"]["schemas"]

    def posted(path):
        return spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]

    assert tuple(schemas["DeployRequest"]["properties"]) == DEPLOY_FIELDS
    assert tuple(schemas["SparkSubmitRequest"]["properties"]) == SUBMIT_FIELDS
    assert tuple(posted("/serving/{deployment}/predict")["properties"]) == PREDICT_FIELDS
    assert tuple(posted("/serving/{deployment}/generate")["properties"]) == GENERATE_FIELDS
    for schema in (schemas["DeployRequest"], schemas["SparkSubmitRequest"], posted("/serving/{deployment}/predict")):
        assert schema["additionalProperties"] is False  # the handlers refuse unknown fields


def test_unauthenticated_requests_are_refused(api):
    with pytest.raises(HTTPClientError) as e:
        api("mlplatform", "api", "models", headers={"Authorization": ""})
    assert e.value.code == 403


def test_promotion_over_rest_evaluates_refuses_promotes_and_rolls_back(api, tracking, platform, hub, monkeypatch):
    """The server extension's routes, as alice's server: the platform service does the promotion (the
    catalog's gates: accuracy >= 0.92, signature, card)."""
    _, env = hub.start_server("alice")
    act_as(monkeypatch, env)
    name = unique_name("rest-promotion")
    card = {"intended_use": "tests", "owner": "alice"}
    with workspace("team-vision"), s3_admin(platform):
        good, weak, better = (register_model(platform.mlflow_url, name, metrics={"accuracy": accuracy},
                                             version_tags=card, experiment="team-vision")
                              for accuracy in (0.95, 0.90, 0.97))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", platform.mlflow_url)  # register_model may have cleared it
    monkeypatch.setenv("MLFLOW_WORKSPACE", "team-vision")  # the test's MlflowClient reads the team's models

    report = json.loads(api("mlplatform", "api", "promote", name, good.version).body)
    assert report["passed"] is True and report["alias"] == "champion"
    assert json.loads(api("mlplatform", "api", "promote", name, good.version, method="POST", body="").body)[
        "version"] == good.version

    with pytest.raises(HTTPClientError) as refused:
        api("mlplatform", "api", "promote", name, weak.version, method="POST", body="")
    body = json.loads(refused.value.response.body)
    assert refused.value.code == 409 and "accuracy" in body["message"] and body["report"]["passed"] is False
    assert tracking.get_model_version_by_alias(name, "champion").version == good.version

    api("mlplatform", "api", "promote", name, better.version, method="POST", body="")
    rolled = json.loads(api("mlplatform", "api", "rollback", name, method="POST", body="").body)
    assert rolled["version"] == good.version
    assert tracking.get_model_version_by_alias(name, "champion").version == good.version
    events = json.loads(api("mlplatform", "api", "models", name, "history").body)["events"]
    assert [e["action"] for e in events] == ["promote", "promote", "rollback"]

    with pytest.raises(HTTPClientError) as missing:
        api("mlplatform", "api", "promote", "no-such-model", "1")
    assert missing.value.code == 404 and "no-such-model" in json.loads(missing.value.response.body)["message"]
