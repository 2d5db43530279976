"""Safe rollout on the real local backend: a Ray head, Ray Serve answering HTTP, MLflow, S3 (issue 12).

An endpoint serves the champion; a candidate version is started beside it, as an application of its own behind the
head's rollout gateway, in shadow mode (callers get the champion's answers, both sides land in the gateway's
evidence under one request id, under the platform's prefix, and the replicas write nothing), moved to canary (the
share answered by the candidate, a routing key pinning a caller to one side), turned off and promoted, all while a
client keeps sending requests: none fails, and mode changes restart no replica (the gateway's map, changed at
runtime).
"""

from __future__ import annotations

import json
import os
import textwrap
import threading
import time
import uuid
import warnings
from collections import Counter
from datetime import UTC, datetime, timedelta

import mlflow
import pytest
import requests
from mlflow import MlflowClient
from mlflow.tracking._tracking_service.utils import _use_tracking_uri

from hub_config.local import seaweedfs
from mlplatform import serving
from mlplatform.serving.inference_log import InferenceLog, S3Writer, read_window
from mlplatform.serving.ray_head import LocalRayConfig
from mlplatform.serving.rollout import KEY_HEADER, SIDE_HEADER, rollout
from mlplatform.serving.spec import serve_applications, serving_request
from mlplatform_service.evidence import EvidenceShipper, evidence_prefix

from ..conftest import BASE, SHARED_RAY_PORT
from ..support.mlflow_models import SAMPLE_ROWS, register_model, unique_name
from ..support.ray_head import local_backend_environ, module_on_shared_head
from ..support.seaweedfs_server import seaweedfs_server

RAY_PORT = SHARED_RAY_PORT  # the session's shared head (conftest.py)
S3_BASE = BASE + 3800
BUCKET, PREFIX, REGION, TEAM = "platform", "teams/team-vision/", "us-east-1", "team-vision"
EVIDENCE = evidence_prefix("platform", TEAM)
LOG = {"flush_seconds": 0.3, "batch_rows": 100}
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with seaweedfs_server(tmp_path_factory.mktemp("seaweedfs"), S3_BASE, REGION, BUCKET) as (url, keys):
        yield url, keys, seaweedfs.admin_client(url, REGION, keys)


@pytest.fixture(scope="module")
def evidence(s3):
    """The platform service's part: the evidence shipper on the shared head's socket, writing with the platform's
    S3 identity under the platform's prefix."""
    def open_log(team: str) -> InferenceLog:
        return InferenceLog.from_settings(S3Writer(s3[2], BUCKET, evidence_prefix("platform", team)), LOG)

    shipper = EvidenceShipper(LocalRayConfig(port=RAY_PORT).evidence_socket, open_log)
    shipper.start()
    yield shipper
    shipper.close(timeout=10)


@pytest.fixture(scope="module")
def endpoint(platform, s3, evidence, shared_ray_head, tmp_path_factory):
    """Version 1 (the champion) of a registered model served as an application of team-vision, its
    replicas writing to the team's S3 prefix; version 2 (the candidate) registered, not served."""
    url, keys, _ = s3
    name = unique_name("iris")
    v1 = register_model(platform.mlflow_url, name)
    v2 = register_candidate(platform.mlflow_url, name, tmp_path_factory.mktemp("candidate"))
    app = f"ro-{name.rsplit('-', 1)[1]}"
    with module_on_shared_head(shared_ray_head,
                               {**local_backend_environ(RAY_PORT, platform.mlflow_url), "MLPLATFORM_TEAM": TEAM}):
        backend = serving.backend()
        env = {"MLFLOW_TRACKING_URI": platform.mlflow_url, "MLPLATFORM_TEAM": TEAM, "MLPLATFORM_S3_ENDPOINT": url,
               "AWS_REGION": REGION, "MLPLATFORM_S3_BUCKET": BUCKET, "MLPLATFORM_S3_TEAM_PREFIX": PREFIX}
        secrets = {"AWS_ACCESS_KEY_ID": keys["s3_access_key"], "AWS_SECRET_ACCESS_KEY": keys["s3_secret_key"],
                   "MLFLOW_TRACKING_TOKEN": os.environ["MLFLOW_TRACKING_TOKEN"]}
        backend.deploy(serving_request(name=app, model_uri=v1.uri, cpus=0.5), model_version=v1.version, env=env,
                       secrets=secrets, owner={"user": "alice", "team": TEAM})
        status = serving.wait_until_settled(app, timeout=240, interval=0.3)
        assert status["state"] == "running", status
        yield {"app": app, "name": name, "v1": v1.version, "v2": v2, "backend": backend, "url": status["predict_url"]}


def register_candidate(tracking_uri: str, name: str, tmp_path, experiment: str = "mlplatform-tests") -> str:
    """Version 2: the same answers as version 1 on the usual inputs, 40× slower on a rare one (x1 > 5),
    the regression offline evaluation never sees."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    path = tmp_path / "slow_on_rare.py"
    path.write_text(textwrap.dedent("""
        import time
        import mlflow
        from mlflow.pyfunc import PythonModel

        class SlowOnRare(PythonModel):
            def predict(self, context, model_input, params=None):
                if (model_input["x1"] > 5).any():
                    time.sleep(0.2)
                return [int(x > 0.5) for x in model_input["x1"]]

        mlflow.models.set_model(SlowOnRare())
    """))
    signature = ModelSignature(inputs=Schema([ColSpec("double", "x1"), ColSpec("double", "x2")]),
                               outputs=Schema([ColSpec("long")]))
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    try:
        with _use_tracking_uri(tracking_uri), warnings.catch_warnings(), mlflow.start_run(experiment_id=experiment_id):
            warnings.simplefilter("ignore", UserWarning)
            info = mlflow.pyfunc.log_model(name="model", python_model=str(path), signature=signature,
                                           registered_model_name=name, pip_requirements=["mlflow"])
    finally:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri  # _use_tracking_uri unsets it (support/mlflow_models.py)
    return str(info.registered_model_version)


class Client(threading.Thread):
    """Sends SAMPLE_ROWS to `url` until stopped; `answers`: (status, side, version)."""

    def __init__(self, url: str):
        super().__init__()
        self.url, self.answers, self.halt = url, [], threading.Event()

    def run(self):
        with requests.Session() as http:
            while not self.halt.is_set():
                try:
                    r = http.post(self.url, json=SAMPLE_ROWS, timeout=30)
                    self.answers.append((r.status_code, r.headers.get(SIDE_HEADER), r.headers.get("X-Model-Version")))
                except requests.RequestException as e:
                    self.answers.append((type(e).__name__, None, None))

    def __enter__(self):
        self.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        self.halt.set()
        self.join(60)


def serve_names(app: str) -> list[str]:
    """Serve's applications of the endpoint: the champion's, and in a rollout the candidate's."""
    return [a["name"] for a in serve_applications(serving.backend()._own_record(app)["application"])]


def replica_ids(app: str) -> set[str]:
    """The ids of the endpoint's running replicas, both sides (a restart makes new ones)."""
    applications = serving.backend()._serve_status()
    return {r["replica_id"] for name in serve_names(app) for d in applications[name]["deployments"].values()
            for r in d["replicas"] if r["state"] == "RUNNING"}


def settle(app: str, applications: int) -> dict:
    """Until the endpoint runs with each of its Serve applications' replicas up."""
    def ready():
        state, names = serving.status(app), serve_names(app)
        found = serving.backend()._serve_status()
        return state["state"] == "running" and len(names) == applications and all(
            d["status"] == "HEALTHY" for name in names for d in found[name]["deployments"].values())
    deadline = time.monotonic() + 240
    while not ready():
        assert time.monotonic() < deadline, serving.status(app)
        time.sleep(0.3)
    return serving.status(app)


def post(url: str, rows=SAMPLE_ROWS, headers=None) -> requests.Response:
    r = requests.post(url, json=rows, headers=headers or {}, timeout=30)
    assert r.status_code == 200, r.text
    return r


def window(s3_client, app: str, since: datetime, enough):
    """The inference log's records of `app` since `since`, once `enough(records)` (or 30 s passed)."""
    deadline = time.monotonic() + 30
    while True:
        df = read_window(s3_client, BUCKET, EVIDENCE, app, since, datetime.now(UTC) + timedelta(seconds=5))
        if enough(df) or time.monotonic() > deadline:
            return df
        time.sleep(0.3)


def test_shadow_mirrors_every_request_and_callers_get_the_champions_answer(endpoint, s3):
    app, backend = endpoint["app"], endpoint["backend"]
    with Client(endpoint["url"]) as client:
        status = backend.start_rollout(app, model_version=endpoint["v2"], requested_uri=f"models:/{endpoint['name']}/2",
                                       rollout=rollout(mode="shadow"), inference_log=LOG)
        assert status["rollout"]["model_version"] == endpoint["v2"] and status["rollout"]["rollout"]["mode"] == "shadow"
        settle(app, applications=2)
        since = datetime.now(UTC)
        forged = [uuid.uuid4().hex for _ in range(30)]
        sent = [post(endpoint["url"], headers={"X-Request-Id": i}) for i in forged]
        ids = [r.headers["X-Request-Id"] for r in sent]  # the gateway's: the callers' are not trusted
    assert {a[0] for a in client.answers} == {200}, Counter(client.answers)
    assert {(r.headers[SIDE_HEADER], r.headers["X-Model-Version"]) for r in sent} == {("champion", endpoint["v1"])}
    assert all(r.json() == {"predictions": [0, 1]} for r in sent)

    df = window(s3[2], app, since, lambda df: df[df.request_id.isin(ids)].shape[0] >= 60)
    df = df[df.request_id.isin(ids)]
    sides = df.groupby("request_id")["side"].apply(frozenset)
    assert len(sides) == 30 and set(sides) == {frozenset({"champion", "candidate"})}, Counter(sides)
    candidate = df[df.side == "candidate"]
    assert set(candidate.model_version) == {endpoint["v2"]} and set(candidate["mode"]) == {"shadow"}
    assert set(candidate.status) == {200} and {tuple(json.loads(o)) for o in candidate.outputs} == {(0, 1)}
    assert not set(forged) & set(ids)
    # The team's own prefix has no log: the replicas wrote none.
    assert read_window(s3[2], BUCKET, PREFIX, app, since, datetime.now(UTC) + timedelta(seconds=5)).empty


def test_canary_sends_the_share_to_the_candidate_and_a_key_pins_a_caller(endpoint):
    app, backend = endpoint["app"], endpoint["backend"]
    before = replica_ids(app)
    backend.set_rollout(app, rollout(mode="canary", share=0.3))
    settle(app, applications=2)
    assert replica_ids(app) == before  # in place: no replica restarted
    sides = Counter(post(endpoint["url"]).headers[SIDE_HEADER] for _ in range(200))
    assert 30 <= sides["candidate"] <= 90, sides  # 60 expected (p of leaving this range < 1e-5)
    for key in ("alice", "bob", "carol", "dave"):
        answers = {(r.headers[SIDE_HEADER], r.headers["X-Model-Version"])
                   for r in (post(endpoint["url"], headers={KEY_HEADER: key}) for _ in range(8))}
        assert answers in ({("champion", endpoint["v1"])}, {("candidate", endpoint["v2"])}), (key, answers)
    assert backend.head.gateway().traffic()[app] == f"{TEAM}|canary|3000|0|{endpoint['v1']}|{endpoint['v2']}|10000"
    assert backend.head.gateway().candidates()[app] is True


def test_mode_changes_under_load_drop_no_request_and_promotion_ends_on_the_candidate(endpoint):
    app, backend = endpoint["app"], endpoint["backend"]
    expected = {"canary": {"champion", "candidate"}, "off": {"champion"}, "shadow": {"champion"}}
    with Client(endpoint["url"]) as client:
        for change in (rollout(mode="canary", share=0.5), rollout(mode="off", reason="test: back to the champion"),
                       rollout(mode="shadow", mirror_rate=0.5)):
            backend.set_rollout(app, change)
            settle(app, applications=2)
            sides = {post(endpoint["url"]).headers[SIDE_HEADER] for _ in range(40)}
            assert sides == expected[change.mode], (change, sides)
        backend.end_rollout(app, promote=True)
        status = settle(app, applications=1)
        deadline = time.monotonic() + 30
        while client.answers[-1][2] != endpoint["v2"] and time.monotonic() < deadline:
            time.sleep(0.2)
    assert {a[0] for a in client.answers} == {200}, Counter(client.answers)
    assert status["model_version"] == endpoint["v2"] and status["rollout"] is None
    assert client.answers[-1] == (200, None, endpoint["v2"])  # one model again: through the gateway, no side
    assert app not in backend.head.gateway().traffic()
    with pytest.raises(serving.ServingConflict, match="has no rollout"):
        backend.set_rollout(app, rollout(mode="shadow"))
