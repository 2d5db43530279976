"""Model serving over the extension's REST API, on the real local backend (Ray head, Ray Serve, MLflow).

A registered scikit-learn model is deployed once for the module, over REST (Ray deploys take ~30 s
on a 2-core machine): the PUT answers 202, GET shows it running, predict answers over REST, bad
input is refused with the field, the value and what is allowed and changes nothing, DELETE removes
it. The module serves on the session's shared head (conftest.py), which the session's fixture stops at
the end, checking that no Ray process is left.
"""

from __future__ import annotations

import contextlib
import json
import time

import pytest
from mlflow import MlflowClient

from hub_config.catalog import DEFAULT_CATALOG
from mlplatform import serving

from ..conftest import SHARED_RAY_PORT
from ..support.mlflow_models import SAMPLE_ROWS, register_model, unique_name
from ..support.ray_head import local_backend_environ, module_on_shared_head
from .rest_fixtures import UNAUTHENTICATED, refused, send
from .rest_fixtures import api_fixture, server_config_fixture  # noqa: F401  (fixtures api, jp_server_config)

RAY_PORT = SHARED_RAY_PORT  # the session's shared head (conftest.py)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # MLflow's hints when logging models
# What the serving API reads from the environment: the jupyter server runs in this process.
ENVIRONMENT = ("MLPLATFORM_BACKEND", "MLPLATFORM_RAY_PORT", "MLPLATFORM_RAY_DIR", "MLFLOW_TRACKING_URI",
               "MLPLATFORM_CATALOG", "MLPLATFORM_TEAM")


@pytest.fixture(scope="module")
def local_ray(shared_ray_head, platform):
    """The local backend's environment for the module, on the session's shared head."""
    with module_on_shared_head(shared_ray_head, local_backend_environ(RAY_PORT, platform.mlflow_url),
                               unset=ENVIRONMENT) as head:
        yield head


@pytest.fixture(scope="module")
def model(local_ray, platform):
    """Version 1 of a registered model, @champion."""
    version = register_model(platform.mlflow_url, unique_name("rest-iris"))
    MlflowClient(platform.mlflow_url).set_registered_model_alias(version.name, "champion", version.version)
    return version


@pytest.fixture(scope="module")
def the_deployment(model):
    """The module's one deployment: made by the first test that needs it, removed at the end if a test
    failed before DELETE did."""
    state = {"app": f"rest-{model.name.rsplit('-', 1)[1]}", "put": None, "error": None}
    yield state
    with contextlib.suppress(serving.DeploymentNotFound):
        serving.delete(state["app"])


@pytest.fixture
def deployed(the_deployment, api, model):
    """The deployment, made over REST and running (PUT, then GET until it settles)."""
    state = the_deployment
    if state["error"]:
        pytest.fail(f"the module's deployment failed earlier: {state['error']}")
    if state["put"] is None:
        try:
            r = api("mlplatform", "api", "serving", state["app"], method="PUT", request_timeout=240,
                    body=json.dumps({"model_uri": f"models:/{model.name}@champion", "cpus": 0.5}))
            put = (r.code, json.loads(r.body))
            states = wait_until_settled(api, state["app"])
            assert states[-1] == "running", send(api, "GET", "serving", state["app"])
        except BaseException as e:
            state["error"] = repr(e)
            raise
        state.update(put=put, states=states)
    return state


def wait_until_settled(api, name: str, timeout: float = 240) -> list[str]:
    """The states GET answered, in order, until running or failed."""
    states: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = send(api, "GET", "serving", name)["state"]
        if not states or states[-1] != state:
            states.append(state)
        if state in ("running", "failed"):
            break
        time.sleep(0.5)
    return states


OK_URI = "models:/any-model/1"  # well formed; refused before it is looked up


@pytest.mark.parametrize("method,route,body", [
    ("GET", ("serving",), None),
    ("GET", ("serving", "iris"), None),
    ("PUT", ("serving", "iris"), {"model_uri": OK_URI}),
    ("DELETE", ("serving", "iris"), None),
    ("POST", ("serving", "iris", "predict"), {"rows": SAMPLE_ROWS}),
    ("POST", ("serving", "iris", "generate"), {"prompt": "hi"}),
])
def test_unauthenticated_serving_requests_are_refused(api, method, route, body):
    code, answer = refused(api, method, *route, body=body, headers=dict(UNAUTHENTICATED))
    assert code == 403, answer


@pytest.mark.parametrize("name,body,field,message", [
    ("iris-x", {"model_uri": OK_URI, "replicas": -1}, "replicas", "replicas: -1 is out of range; allowed: an integer from 1 to 16"),
    ("Iris_Model", {"model_uri": OK_URI}, "name", ("name: 'Iris_Model' is not a DNS label; allowed: at most 63 "
                                                  "lowercase letters, digits and '-'")),
    ("iris-x", {"model_uri": "iris@champion"}, "model_uri", ("model_uri: 'iris@champion' is not a registered model; "
                                                            "allowed: 'models:/<name>@<alias>'")),
    ("iris-x", {"model_uri": OK_URI, "replica": 2}, "replica",
     ("unknown field 'replica'; allowed fields: 'model_uri', 'replicas', 'min_replicas', 'max_replicas', 'cpus', "
      "'gpus', 'max_batch_size', 'batch_wait_timeout_s', 'max_ongoing_requests', 'task' (required: 'model_uri')")),
    ("iris-x", {"replicas": 2}, "model_uri", "missing field 'model_uri'; allowed fields: 'model_uri'"),
    ("iris-x", [{"model_uri": OK_URI}], None, "the request body is a JSON list, not an object; send a JSON object"),
    ("iris-x", "{model_uri", None, "the request body is not valid JSON"),
])
def test_bad_deploy_requests_are_refused_and_deploy_nothing(api, local_ray, name, body, field, message):
    code, answer = refused(api, "PUT", "serving", name, body=body)
    assert code == 400 and message in answer["message"], answer
    assert answer.get("field") == field
    assert name not in [d["name"] for d in send(api, "GET", "serving")["deployments"]]


def test_every_problem_of_a_request_is_listed(api, local_ray):
    code, answer = refused(api, "PUT", "serving", "Bad_Name", body={"model_uri": OK_URI, "replicas": 0, "cpus": -1})
    assert code == 400
    assert [p["field"] for p in answer["problems"]] == ["name", "replicas", "cpus"]
    assert answer["problems"][2]["message"] == "-1 is out of range; allowed: a number of CPUs per replica above 0, " \
                                               "at most 16"


def test_gpus_beyond_the_teams_quota_are_refused(api, local_ray, monkeypatch):
    monkeypatch.setenv("MLPLATFORM_CATALOG", str(DEFAULT_CATALOG))
    monkeypatch.setenv("MLPLATFORM_TEAM", "team-nlp")  # 2 GPUs in all
    code, answer = refused(api, "PUT", "serving", "big-model", body={"model_uri": OK_URI, "gpus": 1, "replicas": 3})
    assert code == 400 and answer["field"] == "gpus"
    assert "gpus: 1 per replica × 3 replica(s) needs 3 GPUs, more than the team's GPU quota of 2; allowed: at most " \
           "2 GPUs in all" in answer["message"]
    code, answer = refused(api, "PUT", "serving", "big-model", body={"model_uri": OK_URI, "gpus": 1,
                                                                     "min_replicas": 1, "max_replicas": 4})
    assert code == 400 and "needs 4 GPUs" in answer["message"]  # autoscaling counts the most replicas
    # Within the quota, the request goes on to the model, which does not exist.
    code, answer = refused(api, "PUT", "serving", "big-model", body={"model_uri": OK_URI, "gpus": 1, "replicas": 2})
    assert code == 404, answer


def test_unknown_model_is_404(api, model):
    code, answer = refused(api, "PUT", "serving", "other", body={"model_uri": "models:/no-such-model/1"})
    assert code == 404 and "registered model 'no-such-model' does not exist" in answer["message"]
    code, answer = refused(api, "PUT", "serving", "other", body={"model_uri": f"models:/{model.name}@prod"})
    assert code == 404
    assert f"model {model.name!r} has no alias 'prod'; its aliases: @champion → version 1" in answer["message"]
    code, answer = refused(api, "GET", "serving", "other")
    assert code == 404 and "no serving application 'other'" in answer["message"]


def test_put_deploys_and_get_shows_it_running(deployed, api, model):
    app = deployed["app"]
    code, put = deployed["put"]
    assert code == 202 and put["name"] == app and put["state"] in ("submitted", "starting", "deploying", "running")
    assert deployed["states"][-1] == "running"
    status = send(api, "GET", "serving", app)
    assert status["state"] == "running" and status["model_version"] == model.version
    assert status["model_uri"] == f"models:/{model.name}@champion"
    assert status["url"] == f"http://127.0.0.1:{RAY_PORT + 2}/{app}"
    assert status["replicas"] == {"running": 1, "target": 1} and status["request"]["cpus"] == 0.5
    listed = {d["name"]: d["state"] for d in send(api, "GET", "serving")["deployments"]}
    assert listed[app] == "running"


def test_predict_over_rest(deployed, api):
    app = deployed["app"]
    assert send(api, "POST", "serving", app, "predict", body={"rows": SAMPLE_ROWS}) == {"predictions": [0, 1]}
    split = {"columns": ["x1", "x2"], "data": [[r["x1"], r["x2"]] for r in SAMPLE_ROWS]}
    assert send(api, "POST", "serving", app, "predict", body={"rows": split}) == {"predictions": [0, 1]}
    # The endpoint's own refusals come through with their status and message.
    code, answer = refused(api, "POST", "serving", app, "predict", body={"rows": [{"x1": 0.1}]})
    assert code == 400 and "Model is missing inputs ['x2']" in answer["message"]
    code, answer = refused(api, "POST", "serving", app, "generate", body={"prompt": "hi", "max_tokens": 4})
    assert code == 404 and "/generate is for text-generation models" in answer["message"]
    # And the REST API's own.
    code, answer = refused(api, "POST", "serving", app, "predict", body=SAMPLE_ROWS)
    assert code == 400 and "the request body is a JSON list, not an object" in answer["message"]
    code, answer = refused(api, "POST", "serving", app, "generate", body={"prompt": {"text": "hi"}})
    assert code == 400 and answer["message"] == "prompt: {'text': 'hi'} is not a text; allowed: a string or a " \
                                                "list of strings"


def test_a_bad_redeploy_changes_nothing(deployed, api, model):
    app = deployed["app"]
    code, answer = refused(api, "PUT", "serving", app, body={"model_uri": f"models:/{model.name}@champion",
                                                             "replicas": -1})
    assert code == 400 and "replicas: -1 is out of range" in answer["message"]
    status = send(api, "GET", "serving", app)
    assert status["state"] == "running" and status["request"]["replicas"] == 1
    assert send(api, "POST", "serving", app, "predict", body={"rows": SAMPLE_ROWS}) == {"predictions": [0, 1]}


def test_delete_removes_the_deployment(deployed, api):
    app = deployed["app"]
    assert send(api, "DELETE", "serving", app) == {"name": app, "backend": "local", "state": "deleted"}
    deployed["put"] = None  # a later test would deploy again
    code, answer = refused(api, "GET", "serving", app)
    assert code == 404 and f"no serving application {app!r}" in answer["message"]
    assert app not in [d["name"] for d in send(api, "GET", "serving")["deployments"]]
    code, answer = refused(api, "POST", "serving", app, "predict", body={"rows": SAMPLE_ROWS})
    assert code == 404 and f"no serving application {app!r} answers" in answer["message"]
    code, answer = refused(api, "DELETE", "serving", app)
    assert code == 404
