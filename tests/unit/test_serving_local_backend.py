"""The local backend without starting Ray: its configuration, the head's command line and
environment, its private directories, bookkeeping, team scoping, name checks, capacity checks and
states; and which backend the API picks."""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlplatform_core.contract import PlatformEnvironment

from mlplatform import serving
from mlplatform.serving.errors import (BackendUnavailable, DeploymentNotFound, InvalidServingRequest,
                                       PredictionFailed, ServingConflict)
from mlplatform.serving.local import LocalRayConfig, LocalRayHead, LocalServing
from mlplatform.serving.spec import serving_request

# Nothing listens here during these tests: the head counts as not running.
PORT = int(os.environ.get("MLPLATFORM_TEST_PORT_BASE", "25800")) + 900
VISION = PlatformEnvironment(user="alice", team="team-vision")
NLP = PlatformEnvironment(user="bob", team="team-nlp")


def backend_of(root, environment=VISION) -> LocalServing:
    return LocalServing(LocalRayConfig(port=PORT, root=root, num_cpus=4, num_gpus=0), environment=environment)


@pytest.fixture
def local(tmp_path):
    """The backend of a team-vision server."""
    return backend_of(tmp_path / "ray")


def record(backend: LocalServing, name: str, team: str = "team-vision", phase: str = "applied", **request):
    """The record a deploy by alice of `team` leaves."""
    backend.root.mkdir(mode=0o700, exist_ok=True)
    backend.apps.mkdir(exist_ok=True)
    req = serving_request(name=name, model_uri=f"models:/{name}/1", **request)
    (backend.apps / f"{name}.json").write_text(json.dumps({
        "name": name, "request": req.to_dict(), "model_version": "1", "application": {}, "phase": phase,
        "owner": {"user": "alice", "team": team}, "submitted_at": "2026-11-22T20:00:00+00:00"}))


def test_config_from_environment():
    c = LocalRayConfig.from_environ({"MLPLATFORM_RAY_PORT": "26600", "MLPLATFORM_RAY_NUM_CPUS": "6",
                                     "MLPLATFORM_RAY_FAST_INGRESS": "0"})
    assert (c.port, c.dashboard_port, c.http_port, c.cpus, c.fast_ingress) == (26600, 26601, 26602, 6, False)
    assert str(c.directory) == str(c.runtime_directory) == "/tmp/mlp-ray-26600"
    assert (str(c.ray_directory), str(c.haproxy_directory)) == ("/tmp/mlp-ray-26600/ray", "/tmp/mlp-ray-26600/hap")
    assert c.http_url == "http://127.0.0.1:26602"
    default = LocalRayConfig.from_environ({})
    assert (default.port, default.cpus, default.fast_ingress) == (18600, 4 * os.cpu_count(), True)
    # Unix socket paths are limited: a long root (the local platform's `<data dir>/ray`) keeps the
    # records, Ray's and HAProxy's files go to a short directory.
    deep = LocalRayConfig.from_environ({"MLPLATFORM_RAY_PORT": "26600",
                                        "MLPLATFORM_RAY_DIR": "/tmp/pytest-of-root/pytest-1/platform0/ray"})
    assert str(deep.directory) == "/tmp/pytest-of-root/pytest-1/platform0/ray"
    assert str(deep.runtime_directory) == "/tmp/mlp-ray-26600"
    assert (str(deep.ray_directory), str(deep.haproxy_directory)) == ("/tmp/mlp-ray-26600/ray", "/tmp/mlp-ray-26600/hap")
    short = LocalRayConfig(port=26600, root="/srv/mlplatform/ray-head")  # 25 characters: short enough
    assert short.runtime_directory == short.directory


def options(cmd: list[str]) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in cmd if arg.startswith("--") and "=" in arg)


def test_head_command_uses_its_own_ports_and_directory():
    head = LocalRayHead(LocalRayConfig(port=26600, num_cpus=4))
    cmd = head.command()
    # `ray start` exits once the head runs (no --block, no waiting process); the launcher starts no dashboard
    # (Serve's controller serves Serve's REST API, serve_api.py) and no Ray Client server (ray_head.LAUNCHER).
    assert cmd[1] == "-c" and cmd[3:6] == ["start", "--head", "--disable-usage-stats"] and "--block" not in cmd
    assert "dashboard, modules = False, ''" in cmd[2] and "start_ray_client_server = lambda self: None" in cmd[2]
    assert "--include-dashboard=false" in cmd and not any(arg.startswith("--dashboard-port") for arg in cmd)
    # Ray's dashboard when asked for: the modules named, and Serve's, whose REST API local.py uses.
    with_jobs = LocalRayHead(LocalRayConfig(port=26600, dashboard_modules="JobHead")).command()
    assert "dashboard, modules = True, 'JobHead,ServeHead'" in with_jobs[2]
    assert options(with_jobs)["dashboard-host"] == "127.0.0.1" and options(with_jobs)["dashboard-port"] == "26601"
    found = options(cmd)
    assert found["temp-dir"] == "/tmp/mlp-ray-26600/ray" and found["num-cpus"] == "4"
    assert found["node-ip-address"] == "127.0.0.1"
    ports = [int(v) for k, v in found.items() if k.endswith("port")]
    assert len(ports) == 10 and all(26600 <= p < 26800 for p in ports)
    # Lean: only what serving needs (no autoscaler monitor or log monitor).
    assert found["include-log-monitor"] == "false" and "--no-monitor" in cmd
    deep = LocalRayHead(LocalRayConfig(port=26600, root="/tmp/pytest-of-root/pytest-1/platform0/ray"))
    assert options(deep.command())["temp-dir"] == "/tmp/mlp-ray-26600/ray"


def test_head_environment_carries_no_user_credentials(monkeypatch):
    for name in ("JUPYTERHUB_API_TOKEN", "AWS_SECRET_ACCESS_KEY", "MLPLATFORM_USER", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.setenv(name, "x")
    env = LocalRayHead(LocalRayConfig(port=26600)).environment()
    assert not {"JUPYTERHUB_API_TOKEN", "AWS_SECRET_ACCESS_KEY", "MLPLATFORM_USER", "CUDA_VISIBLE_DEVICES"} & set(env)
    assert env["MLPLATFORM_RAY_HEAD"] == "/tmp/mlp-ray-26600"
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN_PATH"] == "/tmp/mlp-ray-26600/auth_token"
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    # Serve's controller serves the REST API on Ray + 1 (serve_api.serve_from_controller).
    assert env["RAY_SERVE_CONTROLLER_CALLBACK_IMPORT_PATH"] == "mlplatform.serving.serve_api.serve_from_controller"
    assert env["MLPLATFORM_SERVE_API_PORT"] == "26601"
    assert env["RAY_SERVE_HAPROXY_SOCKET_PATH"].startswith("/tmp/mlp-ray-26600/hap/")
    ports = [int(v) for k, v in env.items() if k.startswith("RAY_SERVE") and k.endswith("PORT")]
    assert ports and all(26600 <= p < 26800 for p in ports)
    plain = LocalRayHead(LocalRayConfig(port=26600, fast_ingress=False)).environment()
    assert not any(k.startswith("RAY_SERVE_HAPROXY") or k == "RAY_SERVE_ENABLE_HA_PROXY" for k in plain)


def test_status_of_an_unknown_application(local):
    record(local, "other")
    with pytest.raises(DeploymentNotFound, match="no serving application 'iris' on the local Ray head; "
                                                 "applications of team team-vision: other") as info:
        local.status("iris")
    assert info.value.status_code == 404
    with pytest.raises(DeploymentNotFound):
        local.delete("iris")


def test_status_while_the_head_is_down(local):
    record(local, "iris", phase="submitted")
    status = local.status("iris")
    assert (status["state"], status["message"]) == ("submitted", "waiting for the local Ray head")
    assert status["url"] == f"http://127.0.0.1:{PORT + 2}/iris" and status["model_version"] == "1"
    record(local, "iris", phase="applied")
    status = local.status("iris")
    assert status["state"] == "failed" and "deploy again to start it" in status["message"]
    json.dumps(status)


def test_delete_without_a_head_forgets_the_application(local):
    record(local, "iris")
    assert local.delete("iris") == {"name": "iris", "backend": "local", "state": "deleted"}
    assert local.names() == []


def test_capacity_is_checked_before_anything_starts(local):
    record(local, "big", cpus=3)
    with pytest.raises(ServingConflict) as info:
        local.deploy(serving_request(name="iris", model_uri="models:/iris/1", replicas=2), model_version="1", env={})
    assert str(info.value) == ("'iris' needs 2 CPUs (2 replica(s)); the local Ray head has 4, 3 taken by big. "
                               "Ask for fewer CPUs per replica or fewer replicas, or delete an application")
    with pytest.raises(ServingConflict, match="needs 1 GPUs .* the local Ray head has 0"):
        local.deploy(serving_request(name="iris", model_uri="models:/iris/1", gpus=1), model_version="1", env={})
    assert local.names() == ["big"]
    assert not LocalRayHead(local.config).processes()


def test_another_teams_application_is_not_replaced(local):
    record(local, "iris", team="team-nlp")
    with pytest.raises(ServingConflict, match="'iris' is served for team team-nlp; choose another name"):
        local.deploy(serving_request(name="iris", model_uri="models:/iris/2"), model_version="2", env={},
                     owner={"user": "alice", "team": "team-vision"})


@pytest.mark.parametrize("name", ["../victim", "../../etc/victim", "..", "iris\n", "Iris", "iris.json", "-iris",
                                  "a" * 64, "", "iris/predict"])
def test_a_name_is_checked_before_it_becomes_a_path(local, name):
    victim = local.root / "victim.json"  # a file just outside the apps folder, readable as a record
    record(local, "iris")
    victim.write_text((local.apps / "iris.json").read_text())
    for call in (local.status, local.delete, local.url):
        with pytest.raises(InvalidServingRequest) as info:
            call(name)
        assert info.value.status_code == 400 and [f for f, _ in info.value.problems] == ["name"]
        assert str(info.value).endswith(f"name: {name!r} is not a serving application's name; allowed: a DNS label "
                                        "of at most 63 lowercase letters, digits and '-', starting with a letter "
                                        "and ending with a letter or digit")
    assert victim.exists() and local.names() == ["iris"]


def test_a_team_sees_and_deletes_only_its_own_applications(tmp_path):
    vision, nlp = backend_of(tmp_path / "ray", VISION), backend_of(tmp_path / "ray", NLP)
    record(vision, "iris", team="team-vision")
    record(vision, "qa-bot", team="team-nlp")
    assert vision.names() == ["iris"] and nlp.names() == ["qa-bot"]
    assert vision.status("iris")["owner"] == {"user": "alice", "team": "team-vision"}
    for call in (nlp.status, nlp.delete):
        with pytest.raises(DeploymentNotFound) as info:
            call("iris")
        assert info.value.status_code == 404
        assert str(info.value) == "no serving application 'iris' on the local Ray head; applications of team " \
                                  "team-nlp: qa-bot"
    assert (vision.apps / "iris.json").exists()
    # Outside the platform (no team) only applications recorded without a team are seen.
    outside = backend_of(tmp_path / "ray", PlatformEnvironment())
    assert outside.names() == []
    with pytest.raises(DeploymentNotFound, match="'qa-bot' on the local Ray head; applications: none"):
        outside.delete("qa-bot")
    assert nlp.delete("qa-bot")["state"] == "deleted" and vision.names() == ["iris"]


def test_another_teams_application_counts_but_is_not_named(local):
    record(local, "big", cpus=2)
    record(local, "secret-project", team="team-nlp", cpus=1)
    with pytest.raises(ServingConflict) as info:
        local.deploy(serving_request(name="iris", model_uri="models:/iris/1", replicas=2), model_version="1", env={})
    assert str(info.value) == ("'iris' needs 2 CPUs (2 replica(s)); the local Ray head has 4, 3 taken by big, "
                               "1 application(s) of other teams. Ask for fewer CPUs per replica or fewer replicas, "
                               "or delete an application")


def test_a_team_does_not_take_over_an_application_without_a_team(local):
    record(local, "iris", team="")
    with pytest.raises(ServingConflict, match=r"^'iris' is served for no team \(outside the platform\); choose "
                                              "another name$"):
        local.deploy(serving_request(name="iris", model_uri="models:/iris/2"), model_version="2", env={})


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o701])
def test_a_ray_root_open_to_others_is_refused(tmp_path, mode):
    root = tmp_path / "ray"
    root.mkdir()
    root.chmod(mode)
    local = backend_of(root)
    message = (f"the local Ray head's directory: refusing to use {root}: its mode is {mode:04o} (the group or others "
               f"may use it); allowed: 0700 (only you). Run `chmod 700 {root}` if what it holds is yours alone, or "
               "choose another directory (MLPLATFORM_RAY_DIR sets the root)")
    for call in (local.names, lambda: local.status("iris"), lambda: local.delete("iris"),
                 lambda: local.deploy(serving_request(name="iris", model_uri="models:/iris/1"), model_version="1",
                                      env={})):
        with pytest.raises(BackendUnavailable) as info:
            call()
        assert str(info.value) == message and info.value.status_code == 503
    assert list(root.iterdir()) == []  # nothing written there


def test_a_ray_root_is_created_private_by_a_deploy_and_a_symlink_is_refused(tmp_path):
    local = backend_of(tmp_path / "ray")
    assert local.names() == [] and not (tmp_path / "ray").exists()  # reading creates nothing
    old = os.umask(0)  # even with a permissive umask
    try:
        with pytest.raises(ServingConflict):  # refused (no GPU here) once the root is there
            local.deploy(serving_request(name="iris", model_uri="models:/iris/1", gpus=1), model_version="1", env={})
    finally:
        os.umask(old)
    assert (tmp_path / "ray").stat().st_mode & 0o777 == 0o700
    (tmp_path / "link").symlink_to(tmp_path / "ray")
    with pytest.raises(BackendUnavailable, match=f"refusing to use {tmp_path / 'link'}: it is a symbolic link"):
        backend_of(tmp_path / "link").names()


@pytest.mark.skipif(os.geteuid() != 0, reason="making a directory another user's needs root")
def test_a_ray_root_of_another_user_is_refused(tmp_path):
    root = tmp_path / "ray"
    root.mkdir(mode=0o700)
    os.chown(root, 65534, 65534)
    with pytest.raises(BackendUnavailable, match=f"refusing to use {root}: it belongs to uid 65534, not to this user "
                                                 r"\(uid 0\); allowed: a directory of your own with mode 0700"):
        backend_of(root).names()


def test_stop_does_not_signal_what_an_open_directory_names(tmp_path):
    """A head.json someone else could have written is not trusted with a process group to kill."""
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        root = tmp_path / "ray"
        root.mkdir(mode=0o777)
        root.chmod(0o777)
        (root / "head.json").write_text(json.dumps({"pid": bystander.pid, "pgid": bystander.pid}))
        with pytest.raises(BackendUnavailable, match="its mode is 0777"):
            LocalRayHead(LocalRayConfig(port=PORT, root=root)).stop()
        time.sleep(0.2)
        assert bystander.poll() is None
    finally:
        bystander.send_signal(signal.SIGKILL)
        bystander.wait()


def test_backend_choice(monkeypatch):
    monkeypatch.setenv("MLPLATFORM_RAY_PORT", str(PORT))
    monkeypatch.delenv("MLPLATFORM_BACKEND", raising=False)
    assert isinstance(serving.backend(), LocalServing) and serving.backend().config.port == PORT
    assert serving.backend() is serving.backend()
    with pytest.raises(BackendUnavailable, match="MLPLATFORM_NAMESPACE, MLPLATFORM_TEAM, MLPLATFORM_USER not set") as info:
        serving.backend({"MLPLATFORM_BACKEND": "kubernetes"})
    assert info.value.status_code == 503
    with pytest.raises(BackendUnavailable, match="MLPLATFORM_BACKEND is 'docker'; allowed: 'local', 'kubernetes'"):
        serving.backend({"MLPLATFORM_BACKEND": "docker"})
    monkeypatch.setenv("MLPLATFORM_BACKEND", "kubernetes")
    with pytest.raises(BackendUnavailable):
        serving.status("iris")


def test_bad_input_is_refused_before_mlflow_or_ray(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing there
    monkeypatch.setenv("MLPLATFORM_RAY_PORT", str(PORT))
    with pytest.raises(InvalidServingRequest) as info:
        serving.deploy("Iris", "models:/iris@champion", replicas=0)
    assert [field for field, _ in info.value.problems] == ["name", "replicas"]


def test_predict_without_an_endpoint(monkeypatch, tmp_path):
    monkeypatch.setenv("MLPLATFORM_RAY_PORT", str(PORT))
    monkeypatch.setenv("MLPLATFORM_RAY_DIR", str(tmp_path / "ray"))
    monkeypatch.delenv("MLPLATFORM_TEAM", raising=False)
    record(backend_of(tmp_path / "ray"), "iris", team="")  # recorded, but the head is down
    with pytest.raises(PredictionFailed, match=f"cannot reach http://127.0.0.1:{PORT + 2}/iris/predict") as info:
        serving.predict("iris", [{"x1": 1.0}], timeout=5)
    assert info.value.status_code == 503


def test_a_stale_runtime_directory_is_made_afresh_and_stop_removes_it(tmp_path):
    """The short runtime directory in /tmp lives as long as the head: stop removes it; one a crashed run
    left (this user's, no head in it; any mode) does not block the next start; a link is still refused."""
    root = tmp_path / ("long-data-directory-" * 2) / "ray"
    root.mkdir(parents=True, mode=0o700)
    head = LocalRayHead(LocalRayConfig(port=PORT, root=root))
    runtime = head.config.runtime_directory
    assert runtime == Path(f"/tmp/mlp-ray-{PORT}")
    shutil.rmtree(runtime, ignore_errors=True)
    try:
        (runtime / "ray" / "session_latest").mkdir(parents=True)
        runtime.chmod(0o755)  # as a crashed run of an older version left it
        head.private()
        assert not runtime.exists()  # gone: the head's start makes it afresh, 0700

        (runtime / "hap").mkdir(parents=True, mode=0o700)
        head.stop()
        assert not runtime.exists() and root.is_dir()  # the root keeps the applications' records

        runtime.symlink_to(tmp_path)
        with pytest.raises(BackendUnavailable, match=f"refusing to use {runtime}: it is a symbolic link"):
            head.private()
        assert runtime.is_symlink() and tmp_path.is_dir()
    finally:
        if runtime.is_symlink():
            runtime.unlink()
        shutil.rmtree(runtime, ignore_errors=True)


def test_running_once_the_ingress_routes_the_prefix(local, monkeypatch):
    """Serve reports an application RUNNING before its HTTP ingress (HAProxy, reloaded after) routes the prefix,
    when a request would get the ingress's 404 (CI saw it after a spare's take-over): deploying until then."""
    import http.server
    import threading

    from mlplatform.serving.spec import DEPLOYMENT, serve_application

    record(local, "iris")
    saved = json.loads((local.apps / "iris.json").read_text())
    app = serve_application(serving_request(name="iris", model_uri="models:/iris/1"), model_version="1")
    (local.apps / "iris.json").write_text(json.dumps({**saved, "application": app}))
    monkeypatch.setattr(local.head, "running", lambda: True)
    monkeypatch.setattr(local, "_serve_status", lambda: {app["name"]: {
        "status": "RUNNING", "deployed_app_config": {"args": app["args"]},
        "deployments": {DEPLOYMENT: {"replicas": [{"state": "RUNNING"}], "target_num_replicas": 1}}}})
    routes = {"/other": "other"}

    class Ingress(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(routes if self.path == "/-/routes" else {}).encode()
            self.send_response(200 if self.path == "/-/routes" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    ingress = http.server.ThreadingHTTPServer(("127.0.0.1", local.config.serve_port), Ingress)
    threading.Thread(target=ingress.serve_forever, daemon=True).start()
    try:
        status = local.status("iris")
        assert (status["state"], status["message"]) == (
            "deploying", "waiting for Ray Serve's HTTP ingress to route /iris")
        routes["/iris"] = app["name"]
        assert local.status("iris")["state"] == "running"
    finally:
        ingress.shutdown()
        ingress.server_close()
    assert local.status("iris")["state"] == "deploying"  # no ingress answering
