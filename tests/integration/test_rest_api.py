"""The jupyter server extension's REST API through pytest-jupyter's real server (`jp_fetch`)."""

import json
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient
from tornado.httpclient import HTTPClientError

import mlplatform
from hub_config.catalog import DEFAULT_CATALOG
from mlplatform.handlers import PREFIX

from ..support.mlflow_models import register_model, unique_name

OPENAPI = Path(mlplatform.__file__).parent / "openapi.yaml"


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"mlplatform": True}}}


@pytest.fixture
def api(jp_fetch, jp_asyncio_loop):
    """jp_fetch, run on pytest-jupyter's own loop (where its server lives), from a plain test."""
    return lambda *path, **kwargs: jp_asyncio_loop.run_until_complete(jp_fetch(*path, **kwargs))


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


def test_unauthenticated_requests_are_refused(api):
    with pytest.raises(HTTPClientError) as e:
        api("mlplatform", "api", "models", headers={"Authorization": ""})
    assert e.value.code == 403


def test_promotion_over_rest_evaluates_refuses_promotes_and_rolls_back(api, tracking, platform, monkeypatch):
    monkeypatch.setenv("MLPLATFORM_CATALOG", str(DEFAULT_CATALOG))  # gates: accuracy >= 0.92, signature, card
    name = unique_name("rest-promotion")
    card = {"intended_use": "tests", "owner": "alice"}
    good = register_model(platform.mlflow_url, name, metrics={"accuracy": 0.95}, version_tags=card)
    weak = register_model(platform.mlflow_url, name, metrics={"accuracy": 0.90}, version_tags=card)
    better = register_model(platform.mlflow_url, name, metrics={"accuracy": 0.97}, version_tags=card)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", platform.mlflow_url)  # register_model may have cleared it

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
