"""Served models' GPUs in the hub's pool (local backend), against the real hub, provider and servers:
who may reserve (printed as an authorization matrix), bad input, a deploy beyond the team's quota
refused with nothing deployed, served GPUs taken from what the spawn form offers and given back by
delete, a failed deploy giving back what it took; and a server's local Spark jobs stopped with it."""

import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests
import yaml
from mlplatform import localhost
from mlplatform.gitops import GitOps
from mlplatform.serving.errors import BackendUnavailable, ServingConflict
from mlplatform.serving.gpu_reservations import HubGpuReservations
from mlplatform.serving.local import LocalRayConfig, LocalRayHead, LocalServing
from mlplatform.serving.spec import serving_request
from mlplatform.spark.spec import APP_ID_VARIABLE
from mlplatform_core.contract import PlatformEnvironment

from ..conftest import BASE, MEMBERSHIP_MAX_AGE
from ..support.authz import authorization_matrix
from ..support.hub import RealmUsers
from ..support.ray_head import fresh_ray_head

SCOPE = "custom:mlplatform:gpu-reservations"
RAY_PORT = BASE + 3000
T4_FREE = '<option value="t4:1">T4 ×1 — 1 of 2 team-vision T4 free</option>'
T4_TAKEN = '<option value="t4:1" disabled>T4 ×1 — only 0 of 2 team-vision T4 free</option>'


@pytest.fixture(scope="module")
def authz(request):
    yield from authorization_matrix(request)


def start(hub, name, **options):
    """Log `name` in, start their default server, return the session and the server's environment."""
    session = hub.login(name)
    r = session.start(**{"profile": "cpu", **options})
    assert r.status_code in (201, 202), r.text
    session.wait_ready()
    return session, hub.server_env(name)


def url(platform, user, app, server=""):
    return f"{platform.hub_url}/hub/api/mlplatform/gpu-reservations/{user}/{app}?server={server}"


def call(method, target, token=None, **kwargs):
    headers = {"Authorization": f"token {token}"} if token else {}
    return requests.request(method, target, headers=headers, timeout=60, **kwargs)


def spawn_form(hub) -> str:
    """What the spawn form offers team-vision now (dana is in both teams and has no server)."""
    return hub.login("dana").spawn_page().text


def test_only_the_users_own_server_and_session_reserve_for_them(hub, platform, authz):
    alice, alice_env = start(hub, "alice")
    bob, bob_env = start(hub, "bob")
    admin = hub.login("admin")
    tokens = {
        "alice's server token": alice_env["JUPYTERHUB_API_TOKEN"],
        "alice's token limited to read:users:name": alice.new_token(["read:users:name!user"]),
        "bob's server token": bob_env["JUPYTERHUB_API_TOKEN"],
        "admin's API token (all their scopes)": admin.new_token(),
        "admin's token for alice's server (access:servers!server=alice/)": admin.new_token(
            ["access:servers!server=alice/"]),
    }
    sessions = {"alice's login session": alice, "admin's login session": admin}
    may = {"alice's server token": {"alice"}, "alice's login session": {"alice"}, "bob's server token": {"bob"}}
    for actor in [*tokens, *sessions, "no credentials"]:
        for target in ("alice", "bob"):
            allowed = target in may.get(actor, ())
            for method, body in (("PUT", {"count": 1, "gpu_type": "t4"}), ("DELETE", None)):
                action = f"{method} gpu-reservations/{target}/iris"
                if actor in sessions:
                    r = sessions[actor].api(method, f"/mlplatform/gpu-reservations/{target}/iris", json=body)
                else:
                    r = call(method, url(platform, target, "iris"), tokens.get(actor), json=body)
                authz.check(actor, action, r, allowed=allowed)
                if allowed and method == "PUT":
                    team = "team-vision" if target == "alice" else "team-nlp"
                    assert r.json() == {"key": f"serving:{team}/iris", "team": team, "gpu_type": "t4", "count": 1,
                                        "devices": [r.json()["devices"][0]]}
                elif actor == "no credentials":
                    assert "need authentication" in r.json()["message"]
                elif not allowed:
                    assert r.json()["message"] == (
                        f"only {target}'s own servers may reserve GPUs for {target}'s served models "
                        f"(scope {SCOPE}!user={target}); this token or session lacks it")
    assert T4_FREE.replace("1 of 2", "2 of 2") in spawn_form(hub)  # every reservation given back

    alice.stop()
    r = call("PUT", url(platform, "alice", "iris"), alice.new_token(), json={"count": 1})
    authz.check("alice's API token, no server running", "PUT gpu-reservations/alice/iris", r, allowed=False,
                status=409)
    assert r.json()["message"] == ("alice has no running server: GPUs for served models are reserved for the team "
                                   "of a running server; start one from the hub")


def test_a_user_removed_from_the_team_reserves_nothing(hub, platform, authz):
    _, env = start(hub, "dana", team="team-vision")
    realm = RealmUsers(platform)
    realm.change("dana", groups=["/team-nlp"])
    try:
        deadline = time.monotonic() + MEMBERSHIP_MAX_AGE + 30
        while True:  # at once, unless another test read dana's groups within the membership bound
            r = call("PUT", url(platform, "dana", "iris"), env["JUPYTERHUB_API_TOKEN"], json={"count": 1})
            if r.status_code != 200 or time.monotonic() > deadline:
                break
            call("DELETE", url(platform, "dana", "iris"), env["JUPYTERHUB_API_TOKEN"])
            time.sleep(2)
    finally:
        realm.reset()
    authz.check("dana's server (team-vision) after she left it", "PUT gpu-reservations/dana/iris", r,
                allowed=False, status=403)
    assert r.json()["message"] == (
        "dana is no longer a member of team team-vision: GPUs are reserved for team members only. Ask a platform "
        "administrator to add dana back, or deploy from a server of another team")


BAD_INPUT = [  # app name, body, the field the message starts with, what it says is allowed
    ("Bad_Name", {"count": 1}, "app", "a DNS label of at most 63"),
    ("a" * 64, {"count": 1}, "app", "a DNS label of at most 63"),
    ("..%2F..%2Fx", {"count": 1}, "app", "a DNS label"),
    ("iris", {"count": -1}, "count", "a whole number of GPUs, at least 1"),
    ("iris", {"count": "x"}, "count", "a whole number of GPUs, at least 1"),
    ("iris", {"count": True}, "count", "a whole number of GPUs, at least 1"),
    ("iris", {"count": 1.5}, "count", "a whole number of GPUs, at least 1"),
    ("iris", {}, "count", "a whole number of GPUs, at least 1"),
    ("iris", '{"count": 1' + "0" * 400 + "}", "count", "from 1 to 128"),
    ("iris", {"count": 1, "gpu_type": "h100"}, "gpu_type", "allowed: a100, t4"),
    ("iris", {"count": 1, "gpu_type": ["t4"]}, "gpu_type", "the name of a GPU type"),
    ("iris", {"count": 1, "devices": ["0"]}, "body", "the fields count, gpu_type"),
    ("iris", [1], "body", "a JSON object"),
    ("iris", "not json", "the body is not JSON", "send an object"),
    ("iris", "[" * 2000 + "]" * 2000, "the body is not JSON", "send an object"),
]


def test_bad_input_is_400_naming_the_field_and_what_is_allowed(hub, platform):
    _, env = start(hub, "alice")
    for app, body, field, allowed in BAD_INPUT:
        data = body if isinstance(body, str) else json.dumps(body)
        r = call("PUT", url(platform, "alice", app), env["JUPYTERHUB_API_TOKEN"], data=data)
        assert r.status_code == 400, (app, body, r.status_code, r.text[:300])
        message = r.json()["message"]
        assert message.startswith(field) and allowed in message, (body, message)
    r = call("DELETE", url(platform, "alice", "Bad_Name"), env["JUPYTERHUB_API_TOKEN"])
    assert r.status_code == 400 and r.json()["message"].startswith("app: 'Bad_Name' is not allowed")
    assert T4_FREE.replace("1 of 2", "2 of 2") in spawn_form(hub)  # nothing reserved by any of them


def test_a_body_over_the_limit_is_413(hub, platform):
    _, env = start(hub, "alice")
    r = call("PUT", url(platform, "alice", "iris"), env["JUPYTERHUB_API_TOKEN"], data=" " * 5000)
    assert (r.status_code, r.json()["message"]) == (413, "the body has 5000 bytes; allowed: at most 4096")


def serving_of(env, root, gitops: bool = False, **config) -> LocalServing:
    """The local serving backend as alice's server builds it: her environment, her hub (and with `gitops`, the
    platform service's GitOps changes, as serving.backend() gives it in the local catalog's GitOps mode)."""
    environment = PlatformEnvironment.from_environ(env)
    return LocalServing(LocalRayConfig(port=RAY_PORT, root=root, num_cpus=4, num_gpus=2, **config),
                        environment=environment, hub=HubGpuReservations.from_environ(env, env["MLPLATFORM_USER"]),
                        gitops=GitOps.for_environment(environment, env) if gitops else None)


def test_a_gpu_deploy_beyond_the_quota_is_refused_and_deploys_nothing(hub, tmp_path):
    _, env = start(hub, "alice", profile="gpu-t4", gpu_type="t4", gpu_count=1)  # one of team-vision's two T4
    local = serving_of(env, tmp_path / "ray")
    with pytest.raises(ServingConflict) as e:
        local.deploy(serving_request(name="iris", model_uri="models:/iris/1", gpus=1, replicas=2),
                     model_version="1", env={})
    assert e.value.status_code == 409
    assert str(e.value) == ("the hub refused to reserve GPUs for 'iris' (409): GPUs for served model 'iris' of "
                            "team-vision: cannot start with 2 T4 GPUs: only 1 of 2 team-vision T4 free; counts you "
                            "can take now: 1")
    assert local.names() == [] and not list(local.apps.glob("iris*"))
    assert not LocalRayHead(local.config).processes()
    assert T4_FREE in spawn_form(hub)


def test_a_failed_deploy_gives_its_gpus_back(hub, tmp_path):
    _, env = start(hub, "alice", profile="gpu-t4", gpu_type="t4", gpu_count=1)
    local = serving_of(env, tmp_path / "ray")
    with socket.socket() as taken:  # the head's GCS port is in use: the head cannot start
        taken.bind(("127.0.0.1", RAY_PORT))
        with pytest.raises(BackendUnavailable, match=f"port {RAY_PORT} .* is in use"):
            local.deploy(serving_request(name="iris", model_uri="models:/iris/1", gpus=1), model_version="1", env={})
    assert local.names() == []
    assert T4_FREE in spawn_form(hub)


def test_in_gitops_mode_a_failed_gpu_deploy_puts_git_back(hub, platform, tmp_path):
    """The commit names the GPU type the hub's pool reserved (the service's admission needs it); the local start
    fails after it, so a second commit removes the file again, and the GPUs go back."""
    _, env = start(hub, "alice", profile="gpu-t4", gpu_type="t4", gpu_count=1)
    local = serving_of(env, tmp_path / "ray", gitops=True)
    path = "teams/team-vision/serving/iris-gitops.yaml"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", RAY_PORT))
        with pytest.raises(BackendUnavailable, match=f"port {RAY_PORT} .* is in use"):
            local.deploy(serving_request(name="iris-gitops", model_uri="models:/iris/1", gpus=1), model_version="1",
                         env={})
    log = git(platform, "log", "--format=%an|%s", "-2", "main", "--", path).splitlines()
    assert log == ["alice|Delete RayService team-vision/iris-gitops", "alice|Deploy RayService team-vision/iris-gitops"]
    first = git(platform, "log", "-1", "--skip=1", "--format=%H", "main", "--", path).strip()
    deployed = yaml.safe_load(git(platform, "show", f"{first}:{path}"))
    worker = deployed["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]
    assert worker["metadata"]["labels"]["mlplatform.io/gpu-type"] == "t4"
    assert "the local deploy of" in git(platform, "log", "-1", "--format=%B", "main", "--", path)
    assert local.names() == [] and T4_FREE in spawn_form(hub)


def git(platform, *args: str) -> str:
    bare = platform.data_dir / "git" / "platform" / "gitops.git"
    return subprocess.run(["git", f"--git-dir={bare}", *args], capture_output=True, text=True, check=True).stdout


def test_served_gpus_leave_the_spawn_form_until_the_model_is_deleted(hub, platform, tmp_path):
    """A real head: the deploy is handed to Serve with the reserved device; a bigger replacement is refused
    and keeps what the model holds; delete gives it back."""
    _, env = start(hub, "alice", profile="gpu-t4", gpu_type="t4", gpu_count=1)
    assert env["CUDA_VISIBLE_DEVICES"] == "6"
    with fresh_ray_head(RAY_PORT, root=tmp_path / "ray"):
        local = serving_of(env, tmp_path / "ray")
        local.deploy(serving_request(name="iris", model_uri="models:/iris/1", gpus=1), model_version="1", env={})
        record = localhost.read_json(local.apps / "iris.json")
        assert record["gpu_reservation"] == {"gpu_type": "t4", "devices": ["7"]}
        assert record["application"]["deployments"][0]["ray_actor_options"]["runtime_env"]["env_vars"][
            "CUDA_VISIBLE_DEVICES"] == "7"
        form = spawn_form(hub)
        assert T4_TAKEN in form
        assert ('<option value="a100:4" disabled>A100 ×4 — only 2 of 4 team-vision GPUs free in total</option>'
                in form)

        # Two T4s for two replicas: the model's own device counts as free for it, alice's server holds the other.
        with pytest.raises(ServingConflict, match=r"cannot start with 2 T4 GPUs: only 1 of 2 team-vision T4 free"):
            local.deploy(serving_request(name="iris", model_uri="models:/iris/2", gpus=1, replicas=2),
                         model_version="2", env={})
        assert localhost.read_json(local.apps / "iris.json")["model_version"] == "1"
        assert T4_TAKEN in spawn_form(hub)

        local.delete("iris")
        assert T4_FREE in spawn_form(hub)
        assert json.loads((platform.data_dir / "gpu-reservations.json").read_text()) == {"reservations": {}}


SLEEPER = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    from mlplatform.spark import LocalSparkBackend, SparkJob
    stand_in = Path(sys.argv[1])
    stand_in.write_text("#!/bin/sh\\nsleep 600\\n"); stand_in.chmod(0o755)
    main = Path.home() / "job.py"; main.write_text("print('hello')\\n")
    print(json.dumps(LocalSparkBackend(spark_submit=stand_in).submit(SparkJob(name="etl", main_file=str(main)))))
""")


def test_a_spark_job_started_from_a_server_is_gone_once_the_server_stops(hub, tmp_path):
    """The job runs in a session of its own (it outlives the kernel that submitted it), until the hub
    stops the server."""
    alice, env = start(hub, "alice")
    submitted = subprocess.run([sys.executable, "-c", SLEEPER, str(tmp_path / "spark-submit")], env=env,
                               capture_output=True, text=True, timeout=120, check=False)
    assert submitted.returncode == 0, submitted.stderr
    app_id = json.loads(submitted.stdout.splitlines()[-1])["app_id"]
    assert localhost.tagged(APP_ID_VARIABLE, app_id) != {}
    alice.stop()
    assert localhost.tagged(APP_ID_VARIABLE, app_id) == {}
    cancelled = json.loads((Path(env["HOME"]) / ".mlplatform" / "spark" / app_id / "cancel.json").read_text())
    assert cancelled["reason"] == "stopped with its notebook server"
