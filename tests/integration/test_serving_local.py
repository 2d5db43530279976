"""Serving on the real local backend: a Ray head, Ray Serve and a real MLflow server.

A registered scikit-learn model is deployed (the head is started by another process, as by a notebook
kernel that has gone since), answers /predict over HTTP with records and split orient, answers 4xx
with a message to bad bodies; a new version that cannot load ends `failed` with its error while the
old one keeps answering; a good new version replaces it while a client keeps sending requests (none
fails); delete removes the endpoint. A text-generation model answers /generate. The module serves on the
session's shared head (conftest.py), stopped first so that its deploy starts it; the session's fixture
stops it at the end and checks that no Ray process is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections import Counter
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow import MlflowClient
from mlflow.tracking._tracking_service.utils import _use_tracking_uri

from mlplatform import localhost, serving

from ..conftest import SHARED_RAY_PORT
from ..support.mlflow_models import SAMPLE_ROWS, register_model, unique_name
from ..support.ray_head import local_backend_environ, module_on_shared_head

RAY_PORT = SHARED_RAY_PORT  # the session's shared head (conftest.py)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # MLflow's hints when logging models from code
ORDER = ["submitted", "starting", "deploying", "running"]


@pytest.fixture(scope="module")
def local_serving(shared_ray_head, platform):
    """The API's environment for the local backend on the session's shared head."""
    with module_on_shared_head(shared_ray_head, local_backend_environ(RAY_PORT, platform.mlflow_url),
                               restart=True) as head:
        yield head


@pytest.fixture(scope="module")
def iris(local_serving, platform):
    """Version 1 of a registered model, @champion, deployed by a separate process (like a notebook
    kernel); the test process watches the states meanwhile."""
    name = unique_name("iris")
    v1 = register_model(platform.mlflow_url, name)
    MlflowClient(platform.mlflow_url).set_registered_model_alias(name, "champion", v1.version)
    app = f"iris-{name.rsplit('-', 1)[1]}"
    script = f"import json; from mlplatform import serving; print(json.dumps(serving.deploy({app!r}, " \
             f"'models:/{name}@champion')))"
    states: list[str] = []
    # The kernel's MLflow credential (here the platform identity's token the test process holds).
    kernel = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=dict(os.environ))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            state = serving.status(app)["state"]
        except serving.DeploymentNotFound:
            state = None
        if state and (not states or states[-1] != state):
            states.append(state)
        if state in ("running", "failed") and kernel.poll() is not None:
            break
        time.sleep(0.3)
    out, err = kernel.communicate(timeout=60)
    assert kernel.returncode == 0, err
    return {"app": app, "name": name, "v1": v1, "states": states, "deployed": json.loads(out.splitlines()[-1])}


def test_deploy_goes_through_the_states_and_outlives_the_deploying_process(iris, local_serving):
    states = iris["states"]
    assert states[-1] == "running", states
    assert states == sorted(states, key=ORDER.index), f"states out of order: {states}"
    assert "starting" in states  # this deploy started the head
    # The process that deployed has exited; the head it started still runs (its own process group).
    status = serving.status(iris["app"])
    assert status["state"] == "running" and status["model_version"] == iris["v1"].version
    assert status["model_uri"] == f"models:/{iris['name']}@champion"
    assert status["url"] == f"http://127.0.0.1:{RAY_PORT + 2}/{iris['app']}"
    assert status["replicas"] == {"running": 1, "target": 1}
    assert iris["deployed"]["state"] in ("deploying", "running")
    info = json.loads((local_serving.root / "head.json").read_text())
    assert os.getpgid(info["pid"]) == info["pgid"] != os.getpgid(0)


def test_credentials_reach_replicas_only_through_a_private_file(iris, local_serving):
    secrets = local_serving.root / "apps" / f"{iris['app']}.secrets"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    token = os.environ["MLFLOW_TRACKING_TOKEN"]
    assert json.loads(secrets.read_text()) == {"MLFLOW_TRACKING_TOKEN": token}
    assert token not in (local_serving.root / "apps" / f"{iris['app']}.json").read_text()
    # The Serve config, which the dashboard shows, names the file but holds no credential.
    config = local_serving.session().get(f"{local_serving.config.dashboard_url}/api/serve/applications/").text
    assert str(secrets) in config and token not in config
    # The head's APIs want its token (Ray listens on every interface for some ports).
    assert requests.get(f"{local_serving.config.dashboard_url}/api/serve/applications/", timeout=10).status_code == 401
    assert stat.S_IMODE((local_serving.root / "auth_token").stat().st_mode) == 0o600


def test_predict_with_records_and_split_orient(iris):
    url = serving.status(iris["app"])["predict_url"]
    columns = list(SAMPLE_ROWS[0])
    split = {"columns": columns, "data": [[row[c] for c in columns] for row in SAMPLE_ROWS]}
    by_column = {c: [row[c] for row in SAMPLE_ROWS] for c in columns}
    # ... and the TF-serving bodies `mlflow models serve` takes: a client of MLflow works here unchanged.
    for body in (SAMPLE_ROWS, {"dataframe_records": SAMPLE_ROWS}, split, {"dataframe_split": split},
                 {"inputs": by_column}, {"instances": by_column}, {"instances": SAMPLE_ROWS}):
        r = requests.post(url, json=body, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json() == {"predictions": [0, 1]}
        assert r.headers["X-Model-Version"] == iris["v1"].version
    assert serving.predict(iris["app"], SAMPLE_ROWS) == [0, 1]
    # Integers for the float columns, as `mlflow models serve` takes them: cast, not refused.
    whole = [{"x1": 0, "x2": 1}, {"x1": 1, "x2": 0}]
    r = requests.post(url, json={"dataframe_records": whole}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == serving.predict(iris["app"], [{k: float(v) for k, v in row.items()}
                                                                    for row in whole])
    health = requests.get(f"{serving.status(iris['app'])['url']}/health", timeout=30).json()
    assert health == {"status": "ok", "model_uri": f"models:/{iris['name']}@champion",
                      "served_uri": iris["v1"].uri, "model_version": iris["v1"].version, "task": "predict",
                      "input_columns": ["x1", "x2"]}


@pytest.mark.parametrize("method,route,body,status,message", [
    ("POST", "predict", b"{not json", 400, "the request body is not valid JSON"),
    ("POST", "predict", b'[{"x1": 0.1}]', 400, "Model is missing inputs ['x2']"),
    ("POST", "predict", b'{"columns": ["x1", "x2"], "data": [[0.1]]}', 400, "data[0] has 1 values"),
    ("POST", "predict", b'[{"x1": "a lot", "x2": 1.0}]', 400,
     """column 'x1', row 0: "a lot" is not a double (the model's signature); allowed: a number"""),
    # Unnamed rows: MLflow's scoring server takes the body and the signature refuses it, as here.
    ("POST", "predict", b'{"instances": [[1, 2]]}', 400, "Model is missing inputs ['x1', 'x2']"),
    ("POST", "predict", b'{"inputs": 3}', 400, "inputs is a number"),
    ("POST", "predict", b'{"inputs": {"x1": [0.1], "x2": [1.0]}, "params": "fast"}', 400, "params is a string"),
    ("GET", "predict", None, 405, "/predict takes POST with a JSON body"),
    ("POST", "generate", b'{"prompt": "hi"}', 404, "/generate is for text-generation models"),
    ("GET", "nothing-here", None, 404, "no route GET /nothing-here"),
])
def test_bad_requests_get_a_4xx_with_a_message(iris, method, route, body, status, message):
    url = f"{serving.status(iris['app'])['url']}/{route}"
    r = requests.request(method, url, data=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == status, r.text
    assert message in r.json()["message"]


def test_predict_raises_the_endpoints_error(iris):
    with pytest.raises(serving.PredictionFailed) as info:
        serving.predict(iris["app"], [{"x1": 0.1}])
    assert info.value.status_code == 400 and "Model is missing inputs ['x2']" in str(info.value)


def test_unknown_model_is_refused_before_anything_is_deployed(iris):
    before = serving.backend().names()
    with pytest.raises(serving.ModelNotFound, match=f"model {iris['name']!r} has no alias 'prod'; its aliases: "
                                                    rf"@champion → version {iris['v1'].version}"):
        serving.deploy("other", f"models:/{iris['name']}@prod")
    with pytest.raises(serving.ModelNotFound, match="registered model 'no-such-model' does not exist"):
        serving.deploy("other", "models:/no-such-model/1")
    with pytest.raises(serving.ModelNotFound, match=f"model {iris['name']!r} has no version 99; its versions: 1"):
        serving.deploy("other", f"models:/{iris['name']}/99")
    assert serving.backend().names() == before


class Client(threading.Thread):
    """Sends SAMPLE_ROWS to `url` again and again until stopped; `answers`: (status, X-Model-Version)."""

    def __init__(self, url: str):
        super().__init__()
        self.url, self.answers, self.halt = url, [], threading.Event()

    def run(self):
        with requests.Session() as http:
            while not self.halt.is_set():
                try:
                    r = http.post(self.url, json=SAMPLE_ROWS, timeout=30)
                    self.answers.append((r.status_code, r.headers.get("X-Model-Version")))
                except requests.RequestException as e:
                    self.answers.append((type(e).__name__, None))

    def __enter__(self):
        self.start()
        time.sleep(1)
        return self

    def __exit__(self, *exc):
        self.halt.set()
        self.join(60)

    def wait_for(self, version: str, n: int = 20, timeout: float = 30) -> None:
        """Until the last `n` answers came from `version`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and [v for _, v in self.answers[-n:]] != [version] * n:
            time.sleep(0.2)


def test_a_new_version_that_cannot_load_fails_and_leaves_the_old_one_answering(iris, platform, tmp_path):
    broken = unique_name("broken")
    register_code_model(platform.mlflow_url, broken, tmp_path, BROKEN_MODEL)
    with Client(serving.status(iris["app"])["predict_url"]) as client:
        serving.deploy(iris["app"], f"models:/{broken}/1")
        status = serving.wait_until_settled(iris["app"], timeout=240, interval=0.5)
        time.sleep(1)
    assert status["state"] == "failed", status
    assert "weights file is corrupt (test model)" in status["detail"]
    assert status["message"].endswith(f"(version {iris['v1'].version} keeps answering)"), status["message"]
    assert set(client.answers) == {(200, iris["v1"].version)}, Counter(client.answers)


def test_redeploy_a_new_version_while_a_client_sends_requests(iris, platform):
    v2 = register_model(platform.mlflow_url, iris["name"])
    with Client(serving.status(iris["app"])["predict_url"]) as client:
        serving.deploy(iris["app"], v2.uri)
        status = serving.wait_until_settled(iris["app"], timeout=180, interval=0.3)
        assert status["state"] == "running" and status["model_version"] == v2.version, status
        client.wait_for(v2.version)
    counts = Counter(client.answers)
    assert set(counts) == {(200, iris["v1"].version), (200, v2.version)}, counts
    assert client.answers[-1] == (200, v2.version)
    assert serving.predict(iris["app"], SAMPLE_ROWS) == [0, 1]


def test_text_generation_model_answers_generate(local_serving, platform, tmp_path):
    name = unique_name("echo")
    register_code_model(platform.mlflow_url, name, tmp_path, ECHO_MODEL, task="text-generation")
    app = f"echo-{name.rsplit('-', 1)[1]}"
    try:
        status = serving.deploy(app, f"models:/{name}/1", cpus=0.5, wait=True, timeout=180)
        assert status["state"] == "running", status
        assert serving.generate(app, "one two three four", max_tokens=2) == ["four three"]
        r = requests.post(f"{status['url']}/generate", json={"prompts": ["a b", "c d e"], "max_tokens": 5}, timeout=30)
        assert r.json() == {"generations": ["b a", "e d c"]}
        r = requests.post(f"{status['url']}/generate", json={"prompt": "a", "max_tokens": 0}, timeout=30)
        assert r.status_code == 400 and "max_tokens is 0; allowed: an integer from 1 to 4096" in r.json()["message"]
    finally:
        if app in serving.backend().names():
            serving.delete(app)


def serve_replicas(local_serving, serve_name: str) -> list[int]:
    """Pids of the replicas Serve runs for its application `serve_name`."""
    apps = local_serving.session().get(f"{local_serving.config.dashboard_url}/api/serve/applications/",
                                       timeout=30).json()["applications"]
    deployment = ((apps.get(serve_name) or {}).get("deployments") or {}).get("Model") or {}
    return [r["pid"] for r in deployment.get("replicas") or [] if r.get("state") == "RUNNING"]


def test_a_new_endpoint_takes_over_the_warm_spare(iris, local_serving, platform, tmp_path):
    """A deploy of a new name runs on the warm spare's replica, a process started before the deploy with
    Serve, MLflow and scikit-learn imported; the next spare follows once it runs. A new version of that
    endpoint goes the usual way (new replicas, surge); a model that cannot load fails as on a new replica."""
    backend = serving.backend()
    assert localhost.wait_until(lambda: (backend.spare() or {}).get("status") == "RUNNING", 240), backend.spare()
    spare = backend.spare()
    assert len(spare["pids"]) == 1
    app = f"warm-{iris['app'].rsplit('-', 1)[1]}"
    started = time.monotonic()
    status = serving.deploy(app, iris["v1"].uri, wait=True, timeout=120)
    took = time.monotonic() - started
    assert status["state"] == "running", status
    assert serving.predict(app, SAMPLE_ROWS) == [0, 1]
    serve_name = spare["application"]["name"]
    record = json.loads((local_serving.root / "apps" / f"{app}.json").read_text())
    assert record["application"]["name"] == serve_name and record["application"]["route_prefix"] == f"/{app}"
    assert serve_replicas(local_serving, serve_name) == spare["pids"]  # the process existed before the deploy
    assert took < 30, f"a deploy on the warm spare took {took:.1f} s"
    assert requests.get(f"{status['url'].rsplit('/', 1)[0]}/{serve_name}/health", timeout=30).status_code == 404
    # The next spare, in the background.
    assert localhost.wait_until(lambda: (backend.spare() or {}).get("status") == "RUNNING", 240), backend.spare()
    assert backend.spare()["application"]["name"] != serve_name

    v2 = register_model(platform.mlflow_url, iris["name"])
    with Client(status["predict_url"]) as client:
        status = serving.deploy(app, v2.uri, wait=True, timeout=180)
        client.wait_for(v2.version)
    assert status["state"] == "running" and status["model_version"] == v2.version, status
    assert {s for s, _ in client.answers} == {200}, Counter(client.answers)
    record = json.loads((local_serving.root / "apps" / f"{app}.json").read_text())
    assert record["application"]["name"] == serve_name and record["application"]["args"]["model_version"] == v2.version
    assert serve_replicas(local_serving, serve_name) != spare["pids"]
    serving.delete(app)
    assert serve_name not in local_serving.session().get(
        f"{local_serving.config.dashboard_url}/api/serve/applications/", timeout=30).json()["applications"]

    broken = unique_name("broken")
    register_code_model(platform.mlflow_url, broken, tmp_path, BROKEN_MODEL)
    assert localhost.wait_until(lambda: (backend.spare() or {}).get("status") == "RUNNING", 240), backend.spare()
    bad = f"bad-{iris['app'].rsplit('-', 1)[1]}"
    serving.deploy(bad, f"models:/{broken}/1")
    status = serving.wait_until_settled(bad, timeout=240, interval=0.5)
    assert status["state"] == "failed" and "weights file is corrupt (test model)" in status["detail"], status
    serving.delete(bad)
    assert bad not in serving.backend().names()


def test_deploys_of_other_endpoints_drop_no_request(iris):
    """Each deploy and delete on the head changes Serve's routes (the ingress reloads its config): an endpoint
    under load meanwhile answers every request — through a spare's take-over, the next spare's start, a delete."""
    backend = serving.backend()
    assert localhost.wait_until(lambda: (backend.spare() or {}).get("status") == "RUNNING", 240), backend.spare()
    other = f"other-{iris['app'].rsplit('-', 1)[1]}"
    clients = [Client(serving.status(iris["app"])["predict_url"]) for _ in range(4)]
    with contextlib.ExitStack() as loaded:
        for client in clients:
            loaded.enter_context(client)
        assert serving.deploy(other, iris["v1"].uri, wait=True, timeout=120)["state"] == "running"
        assert localhost.wait_until(lambda: (backend.spare() or {}).get("status") == "RUNNING", 240), backend.spare()
        serving.delete(other)
        time.sleep(2)
    answers = Counter(status for client in clients for status, _ in client.answers)
    assert set(answers) == {200}, answers


def test_delete_removes_the_endpoint(iris):
    url = serving.status(iris["app"])["predict_url"]
    assert serving.delete(iris["app"]) == {"name": iris["app"], "backend": "local", "state": "deleted"}
    with pytest.raises(serving.DeploymentNotFound):
        serving.status(iris["app"])
    r = requests.post(url, json=SAMPLE_ROWS, timeout=30)
    assert r.status_code == 404
    with pytest.raises(serving.PredictionFailed, match=f"no serving application {iris['app']!r} answers"):
        serving.predict(iris["app"], SAMPLE_ROWS)


ECHO_MODEL = """
import mlflow
from mlflow.pyfunc import PythonModel


class Echo(PythonModel):
    # A stand-in text generator: the prompt's words backwards, at most max_tokens of them.
    def predict(self, context, model_input, params=None):
        limit = (params or {}).get("max_tokens", 16)
        return [" ".join(str(p).split()[::-1][:limit]) for p in model_input["prompt"]]


mlflow.models.set_model(Echo())
"""

BROKEN_MODEL = """
import mlflow
from mlflow.pyfunc import PythonModel


class Broken(PythonModel):
    def load_context(self, context):
        raise RuntimeError("weights file is corrupt (test model)")

    def predict(self, context, model_input, params=None):
        return model_input


mlflow.models.set_model(Broken())
"""


def register_code_model(tracking_uri: str, name: str, tmp_path: Path, code: str, task: str | None = None) -> None:
    """Register a pyfunc model written as code (MLflow's models from code: no pickled class)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(code))
    signature = ModelSignature(inputs=Schema([ColSpec("string", "prompt")]), outputs=Schema([ColSpec("string")]),
                               params=ParamSchema([ParamSpec("max_tokens", "long", 16)]))
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name("mlplatform-tests")
    experiment_id = found.experiment_id if found else client.create_experiment("mlplatform-tests")
    try:
        with _use_tracking_uri(tracking_uri), mlflow.start_run(experiment_id=experiment_id), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # hints about type hints and input examples
            mlflow.pyfunc.log_model(name="model", python_model=str(path), signature=signature,
                                    metadata={"task": task} if task else None, registered_model_name=name,
                                    pip_requirements=["mlflow"])
    finally:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
