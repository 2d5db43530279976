"""Rollouts of a GPU endpoint on the local platform (issue 12), through the platform service, against the real
hub, its GPU pool and usage ledger, and Ray Serve: the candidate gets devices of its own from the pool (its
replicas see them as CUDA_VISIBLE_DEVICES, the champion's keep theirs), taken from the spawn form and charged in
the ledger; abort gives them back, promotion makes them the champion's and frees the old ones; beyond the
team's quota the start is a 409 with the numbers and leaves nothing behind. The hub endpoint the service uses
(rollout-gpus) is the service's alone (authorization matrix), and its bad input is a 400 naming the field.

The pool's devices are the catalog's (a100: "0".."5"); the head is told it has GPUs, none need exist.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time

import psutil
import pytest
import requests
from mlflow import MlflowClient
from mlplatform import localhost, registry, serving
from mlplatform.registry.reference import log_reference_data
from mlplatform.serving import rollouts
from mlplatform.serving.spec import CANDIDATE_SUFFIX
from mlplatform_service.database import connect
from mlplatform_service.usage import UsageLedger

from ..support.authz import authorization_matrix
from ..support.hub import HubClient
from ..support.mlflow_access import s3_admin, workspace
from ..support.mlflow_models import register_model, unique_name
from ..support.ray_head import fresh_ray_head
from .test_rollout_local import register_candidate
from .test_rollouts_service import CARD, ordinary_rows, send

TEAM = "team-vision"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def authz(request):
    yield from authorization_matrix(request)


@pytest.fixture(scope="module")
def alice(platform):
    """alice's A100 server for the module (device "0"): the endpoint's GPU type is her server's."""
    hub = HubClient(platform)
    _, env = hub.start_server("alice", profile="gpu-a100", gpu_type="a100", gpu_count=1)
    assert env["CUDA_VISIBLE_DEVICES"] == "0"
    yield env
    hub.stop_all()


@pytest.fixture(scope="module")
def endpoint(platform, alice, tmp_path_factory):
    """@champion (version 1) served with one A100 by alice's notebook on the platform's Ray head (told it has
    8 GPUs); version 2 registered with its metrics, card fields and reference data."""
    name = unique_name("gro")
    with workspace(TEAM), s3_admin(platform):
        register_model(platform.mlflow_url, name, metrics={"accuracy": 0.95}, experiment=TEAM, **CARD)
        version = register_candidate(platform.mlflow_url, name, tmp_path_factory.mktemp("candidate"), experiment=TEAM)
        client = MlflowClient(platform.mlflow_url)
        mv = client.get_model_version(name, version)
        client.log_metric(mv.run_id, "accuracy", 0.96)
        client.set_model_version_tag(name, version, "intended_use", "rollout tests")
        log_reference_data(ordinary_rows(2000, seed=1), run_id=mv.run_id, client=client)
    server = {k: v for k, v in alice.items() if k.startswith(("MLPLATFORM_", "MLFLOW_", "AWS_", "JUPYTERHUB_"))}
    saved = dict(os.environ)
    os.environ.pop("MLFLOW_TRACKING_TOKEN", None)  # alice's notebook holds her own MLflow identity only
    os.environ.update(server, MLPLATFORM_RAY_NUM_GPUS="8")
    app = f"gro-{name.rsplit('-', 1)[1]}"
    try:
        with fresh_ray_head(platform.ports.ray, root=platform.ray_dir):
            registry.promote(name, 1)
            status = serving.deploy(app, f"models:/{name}@champion", cpus=0.5, gpus=1, wait=True, timeout=240)
            assert status["state"] == "running", status
            try:
                yield {"app": app, "name": name, "candidate": version, "url": status["predict_url"]}
            finally:  # what a failed test left gives its GPUs back (the next modules spawn on them)
                for leftover in (rollouts.abort, serving.delete):
                    with contextlib.suppress(Exception):
                        leftover(app)
    finally:
        os.environ.clear()
        os.environ.update(saved)


# --- what the test looks at -------------------------------------------------------------------------
def reserved(platform) -> dict[str, list[str]]:
    """The hub's durable reservations (its state file): key → devices."""
    state = json.loads((platform.data_dir / "gpu-reservations.json").read_text())
    return {key: r["devices"] for key, r in state["reservations"].items()}


def ledger(platform) -> dict[str, tuple[str, int]]:
    """The usage ledger's open model allocations of the team: key → (user, GPUs)."""
    usage = UsageLedger(connect(f"sqlite:///{platform.data_dir / 'platform.sqlite'}"), platform.load_catalog)
    return {a.key: (a.user, a.gpus) for a in usage.open_allocations(TEAM) if a.kind == "model"}


def a100_line(hub) -> str:
    """The A100 ×1 choice of team-vision on the spawn form (dana is in both teams and has no server)."""
    page = hub.login("dana").spawn_page().text
    return next(line.strip() for line in page.splitlines() if 'value="a100:1"' in line and "team-vision" in line)


def replica_devices(app: str) -> dict[str, set[str]]:
    """CUDA_VISIBLE_DEVICES of the running replicas of `app` (their processes' environment): the champion's under
    "Model", the candidate's (an application of its own in a rollout) under "Candidate"."""
    found: dict[str, set[str]] = {}
    sides = {f"ray::ServeReplica:{app}:": "Model", f"ray::ServeReplica:{app}{CANDIDATE_SUFFIX}:": "Candidate"}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            title = " ".join(proc.info["cmdline"] or [])
            side = next((side for prefix, side in sides.items() if title.startswith(prefix)), None)
            if side and proc.status() != psutil.STATUS_ZOMBIE:
                found.setdefault(side, set()).add(proc.environ().get("CUDA_VISIBLE_DEVICES", "(unset)"))
        except psutil.Error:
            pass
    return found


def until(predicate, timeout: float, what) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what()}"
        time.sleep(0.5)


def settled(app: str, devices: dict[str, set[str]]) -> None:
    """Until the endpoint runs with exactly these deployments, their replicas seeing these devices."""
    until(lambda: serving.status(app)["state"] == "running" and replica_devices(app) == devices, 240,
          lambda: (serving.status(app)["state"], replica_devices(app)))


def candidate_key(app: str) -> str:
    return f"serving:{TEAM}/{app}/candidate"


# --- the tests ---------------------------------------------------------------------------------------
def test_the_candidate_gets_devices_of_its_own_and_abort_gives_them_back(endpoint, hub, platform):
    app, champion = endpoint["app"], f"serving:{TEAM}/{endpoint['app']}"
    settled(app, {"Model": {"1"}})
    free = a100_line(hub)
    assert reserved(platform)[champion] == ["1"] and ledger(platform)[champion] == ("alice", 1)

    status = rollouts.start(app, endpoint["candidate"], mode="shadow")
    assert status["rollout"]["model_version"] == endpoint["candidate"]
    assert reserved(platform)[candidate_key(app)] == ["2"]
    assert ledger(platform)[candidate_key(app)] == ("alice", 1)
    assert a100_line(hub) != free, a100_line(hub)
    settled(app, {"Model": {"1"}, "Candidate": {"2"}})
    send(endpoint["url"], 5)
    # Traffic off (as a rollback does): the candidate's replicas stay for inspection, and so do their devices.
    rollouts.change(app, "off")
    assert reserved(platform)[candidate_key(app)] == ["2"] and replica_devices(app)["Candidate"] == {"2"}

    rollouts.abort(app)
    assert candidate_key(app) not in reserved(platform) and candidate_key(app) not in ledger(platform)
    assert reserved(platform)[champion] == ["1"] and a100_line(hub) == free
    settled(app, {"Model": {"1"}})


def test_a_candidate_beyond_the_quota_is_refused_with_the_numbers_and_leaves_nothing(endpoint, hub, platform):
    app = endpoint["app"]
    dana = HubClient(platform)
    dana.start_server("dana", team=TEAM, profile="gpu-a100", gpu_type="a100", gpu_count=2)  # the team's last two
    try:
        before = (reserved(platform), ledger(platform), localhost.read_json(platform.ray_dir / "apps" / f"{app}.json"))
        with pytest.raises(serving.ServingConflict) as e:
            rollouts.start(app, endpoint["candidate"], mode="shadow")
        assert e.value.status_code == 409
        assert str(e.value) == (
            f"the hub refused to reserve GPUs for the candidate of {app!r} (409): GPUs for the candidate of served "
            f"model {app!r} of {TEAM}: cannot start with 1 A100 GPU: only 0 of 4 team-vision A100 free; counts you can "
            "take now: (none)")
        after = (reserved(platform), ledger(platform), localhost.read_json(platform.ray_dir / "apps" / f"{app}.json"))
        assert after == before and serving.status(app)["rollout"] is None
        assert set(serving.backend()._serve_status()[app]["deployments"]) == {"Model"}
        assert f"{app}{CANDIDATE_SUFFIX}" not in serving.backend()._serve_status()
    finally:
        dana.stop_all()


def test_promotion_makes_the_candidates_devices_the_champions_and_frees_the_old_ones(endpoint, hub, platform):
    app, champion = endpoint["app"], f"serving:{TEAM}/{endpoint['app']}"
    free = a100_line(hub)
    rollouts.start(app, endpoint["candidate"], mode="shadow")
    settled(app, {"Model": {"1"}, "Candidate": {"2"}})
    send(endpoint["url"], 260, seed=7)  # ordinary traffic: the live gates pass
    until(lambda: rollouts.report(app)["live"]["candidate"]["requests"] >= 260, 60,
          lambda: rollouts.report(app)["live"]["candidate"])

    done = rollouts.promote(app)
    assert done["status"]["model_version"] == endpoint["candidate"]
    assert reserved(platform)[champion] == ["2"] and candidate_key(app) not in reserved(platform)
    assert ledger(platform)[champion] == ("alice", 1) and candidate_key(app) not in ledger(platform)
    assert a100_line(hub) == free  # device "1" is free again
    settled(app, {"Model": {"2"}})
    r = requests.post(endpoint["url"], json=[{"x1": 0.1, "x2": 1.0}], timeout=30)
    assert (r.status_code, r.headers["X-Model-Version"]) == (200, endpoint["candidate"])

    serving.delete(app)
    assert champion not in reserved(platform) and champion not in ledger(platform)


# --- the hub endpoint itself -------------------------------------------------------------------------
def service_token(platform) -> str:
    """The platform service's own hub token, from its process's environment (it runs as this OS user)."""
    api_url = f"http://127.0.0.1:{platform.ports.hub_api}/hub/api"
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
            if env.get("JUPYTERHUB_SERVICE_NAME") == "mlplatform" and env.get("JUPYTERHUB_API_URL", "").rstrip("/") \
                    == api_url:
                return env["JUPYTERHUB_API_TOKEN"]
        except psutil.Error:
            pass
    raise AssertionError("the platform service's process was not found")


def url(platform, app: str, action: str = "", team: str = TEAM) -> str:
    return f"{platform.hub_url}/hub/api/mlplatform/rollout-gpus/{team}/{app}{'/' + action if action else ''}"


def call(method, target, token=None, **kwargs):
    headers = {"Authorization": f"token {token}"} if token else {}
    return requests.request(method, target, headers=headers, timeout=60, **kwargs)


def test_only_the_platform_service_reserves_candidates(alice, hub, platform, authz):
    token = service_token(platform)
    admin = hub.login("admin")
    # Not through `hub`, which stops the servers of whom it logged in at teardown: alice's server (the module's)
    # holds the token the endpoint fixture deletes its endpoint with.
    alice_session = HubClient(platform).login("alice")
    others = {"alice's server token": alice["JUPYTERHUB_API_TOKEN"], "admin's API token (all their scopes)":
              admin.new_token(), "no credentials": None}
    # A champion of alice's (the gpu-reservations endpoint of her server) to size a candidate by.
    champion = f"{platform.hub_url}/hub/api/mlplatform/gpu-reservations/alice/matrix"
    assert call("PUT", champion, alice["JUPYTERHUB_API_TOKEN"], json={"count": 1}).status_code == 200
    try:
        steps = (("PUT", "", {"user": "alice"}, "reserve a candidate's GPUs"),
                 ("POST", "promote", {"user": "alice"}, "promote a candidate's GPUs"),
                 ("DELETE", "", None, "release a candidate's GPUs"))
        for method, action, body, what in steps:
            for actor, other in others.items():
                r = call(method, url(platform, "matrix", action), other, json=body)
                authz.check(actor, what, r, allowed=False)
            r = alice_session.api(method, f"/mlplatform/rollout-gpus/{TEAM}/matrix{'/' + action if action else ''}",
                                  json=body)
            authz.check("alice's login session", what, r, allowed=False)
            r = call(method, url(platform, "matrix", action), token, json=body)
            authz.check("the platform service", what, r, allowed=True)
            if method == "PUT":
                assert r.json()["key"] == candidate_key("matrix") and r.json()["count"] == 1
                assert reserved(platform)[candidate_key("matrix")] == r.json()["devices"]
            if method == "POST":  # the candidate's devices are the champion's now
                assert reserved(platform)[f"serving:{TEAM}/matrix"] == r.json()["devices"]
                assert candidate_key("matrix") not in reserved(platform)
        message = call("PUT", url(platform, "matrix"), alice["JUPYTERHUB_API_TOKEN"], json={"user": "alice"}).json()
        assert message["message"] == ("only the platform service reserves the GPUs of rollout candidates (scope "
                                      "custom:mlplatform:rollout-gpus); this token or session lacks it")
        r = call("POST", url(platform, "matrix", "promote"), token, json={"user": "alice"})
        assert (r.status_code, r.json()["message"]) == (
            409, f"served model 'matrix' of {TEAM} has no candidate GPUs to promote")
    finally:
        call("DELETE", champion, alice["JUPYTERHUB_API_TOKEN"])
    assert f"serving:{TEAM}/matrix" not in reserved(platform) and f"serving:{TEAM}/matrix" not in ledger(platform)


BAD_INPUT = [  # team, app, action, body, the field the message starts with, what it says is allowed
    ("team-nowhere", "iris", "", {"user": "alice"}, "team", "team-vision, team-nlp"),
    (TEAM, "Bad_Name", "", {"user": "alice"}, "app", "a DNS label of at most 63"),
    (TEAM, "..%2F..%2Fx", "", {"user": "alice"}, "app", "a DNS label"),
    (TEAM, "iris", "", {}, "user", "the name of a user of this hub"),
    (TEAM, "iris", "", {"user": 1}, "user", "the name of a user of this hub"),
    (TEAM, "iris", "", {"user": "nobody-here"}, "user", "the name of a user of this hub"),
    (TEAM, "iris", "", {"user": "a" * 300}, "user", "the name of a user of this hub"),
    (TEAM, "iris", "", {"user": "alice", "count": 4}, "body", "the field user"),
    (TEAM, "iris", "", [1], "body", "a JSON object"),
    (TEAM, "iris", "", "not json", "the body is not JSON", "send an object"),
    (TEAM, "iris", "", "[" * 2000 + "]" * 2000, "the body is not JSON", "send an object"),
    (TEAM, "iris", "promote", {"user": None}, "user", "the name of a user of this hub"),
]


def test_bad_input_is_400_naming_the_field_and_fuzzed_input_never_reserves(platform, alice):
    token, before = service_token(platform), reserved(platform)
    for team, app, action, body, field, allowed in BAD_INPUT:
        data = body if isinstance(body, str) else json.dumps(body)
        r = call("POST" if action else "PUT", url(platform, app, action, team), token, data=data)
        assert r.status_code == 400, (team, app, body, r.status_code, r.text[:300])
        message = r.json()["message"]
        assert message.startswith(field) and allowed in message, (body, message)
    r = call("POST", url(platform, "iris", "demote"), token, json={"user": "alice"})
    assert (r.status_code, r.json()["message"]) == (404, "no action 'demote' of rollout GPUs for POST; allowed: promote")
    r = call("DELETE", url(platform, "iris", "promote"), token)
    assert r.status_code == 404 and r.json()["message"].startswith("no action 'promote' of rollout GPUs for DELETE")
    r = call("PUT", url(platform, "iris"), token, data=" " * 5000)
    assert (r.status_code, r.json()["message"]) == (413, "the body has 5000 bytes; allowed: at most 4096")

    # Seeded fuzzing of the body and the names: a 4xx, never a server error, never a reservation.
    rng = random.Random(12)
    values = [None, True, 0, -1, 1.5, "", "alice", "ALICE", "a\x00b", "é" * 3, [], {}, ["alice"], {"user": "alice"}]
    names = ["iris", "x" * 70, "a-", "-a", "0", "a.b", "%00", "a%2Fb", TEAM]
    for _ in range(60):
        body = {rng.choice(["user", "count", "gpu_type", ""]): rng.choice(values) for _ in range(rng.randint(0, 3))}
        method, action = rng.choice([("PUT", ""), ("POST", "promote"), ("DELETE", "")])
        r = call(method, url(platform, rng.choice(names), action, rng.choice([TEAM, "team-nlp", "x"])), token,
                 json=rng.choice([body, rng.choice(values)]))
        assert r.status_code in (204, 400, 404, 409), (method, body, r.status_code, r.text[:300])
    assert reserved(platform) == before
