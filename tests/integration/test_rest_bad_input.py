"""Inputs that used to crash the REST API (500) or reach MLflow as a bad request (502) are refused with
a 4xx naming the field and what is allowed, before anything runs (found by a schemathesis run)."""

from __future__ import annotations

import json

import pytest

from hub_config.catalog import DEFAULT_CATALOG
from mlplatform.handlers.base import MAX_BODY_BYTES

from .rest_fixtures import refused
from .rest_fixtures import api_fixture, server_config_fixture  # noqa: F401  (fixtures api, jp_server_config)

HUGE = 10**400


@pytest.fixture(autouse=True)
def notebook_environment(monkeypatch, tmp_path):
    """The server runs in this process: a local backend whose Ray head is never started."""
    monkeypatch.setenv("MLPLATFORM_BACKEND", "local")
    monkeypatch.setenv("MLPLATFORM_RAY_DIR", str(tmp_path / "ray"))
    monkeypatch.setenv("MLPLATFORM_RAY_PORT", "29991")
    monkeypatch.setenv("MLPLATFORM_CATALOG", str(DEFAULT_CATALOG))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing may reach MLflow


@pytest.mark.parametrize("main_file, why", [
    ("jobs/a\x00b.py", "is not a usable path"),          # a NUL byte
    ("~nosuchuser/job.py", "is not a usable path"),      # expanduser of an unknown user
    ("a" * 5000 + ".py", "is not a usable path"),        # a name longer than the OS allows
])
def test_unusable_main_files(api, main_file, why):
    status, body = refused(api, "POST", "spark", body={"name": "wordcount", "main_file": main_file})
    assert status == 400 and body["field"] == "main_file" and why in body["message"]
    assert len(body["message"]) < 600  # the value is shortened, not echoed whole


@pytest.mark.parametrize("tail", ["²", "٣", "-1", "0", "1e3", "10001"])
def test_log_tail_must_be_ascii_digits_in_range(api, tail):
    status, body = refused(api, "GET", "spark", "wordcount-00000000", "logs", params={"tail": tail})
    assert (status, body["field"]) == (400, "tail")
    assert "from 1 to 10000, or 'all'" in body["message"]


def test_deeply_nested_body(api):
    status, body = refused(api, "POST", "spark", body="[" * 100_000 + "]" * 100_000)
    assert status == 400 and "nested too deeply" in body["message"]


def test_body_size_limit(api):
    status, body = refused(api, "POST", "spark", body=json.dumps({"name": "x" * MAX_BODY_BYTES}))
    assert status == 413 and f"at most {MAX_BODY_BYTES} bytes" in body["message"]


@pytest.mark.parametrize("field, value, allowed", [
    ("replicas", HUGE, "an integer from 1 to 16"),
    ("replicas", 17, "an integer from 1 to 16"),
    ("cpus", HUGE, "is not a number"),
    ("cpus", 17, "at most 16"),
    ("gpus", 9, "up to 8"),
])
def test_serving_bounds_come_from_the_catalog(api, field, value, allowed):
    status, body = refused(api, "PUT", "serving", "iris",
                           body=f'{{"model_uri": "models:/iris/1", "{field}": {value}}}')
    assert status == 400 and body["problems"][0]["field"] == field and allowed in body["problems"][0]["message"]
    assert len(body["message"]) < 400


@pytest.mark.parametrize("name", ["iris\n", "Iris", "-iris", "iris_1"])
def test_names_are_matched_whole(api, name):
    status, body = refused(api, "PUT", "serving", name, body={"model_uri": "models:/iris/1"})
    assert status == 400 and body["problems"][0]["field"] == "name"


def test_a_spark_name_with_a_trailing_newline_is_refused(api, jp_root_dir):
    (jp_root_dir / "job.py").write_text("print('hi')\n")
    status, body = refused(api, "POST", "spark", body={"name": "wordcount\n", "main_file": "job.py"})
    assert (status, body["field"]) == (400, "name")


@pytest.mark.parametrize("route", [("models", "a:b", "history"), ("promote", "a:b", "1"), ("rollback", "x:y")])
def test_model_names_mlflow_refuses_are_the_callers_mistake(api, route):
    method, body = ("POST", "") if route[0] == "rollback" else ("GET", None)
    status, body = refused(api, method, *route, body=body)
    assert status == 400 and "cannot contain '/' or ':'" in body["message"]


def test_predicting_from_an_unknown_application_is_404_not_an_outage(api):
    status, body = refused(api, "POST", "serving", "nothing-here", "predict", body={"rows": [[1]]})
    assert status == 404 and "no serving application 'nothing-here'" in body["message"]
