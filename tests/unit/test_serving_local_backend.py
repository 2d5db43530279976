"""The local backend without starting Ray: its configuration, the head's command line and
environment, bookkeeping, capacity checks and states; and which backend the API picks."""

import json
import os

import pytest

from mlplatform import serving
from mlplatform.serving.errors import (BackendUnavailable, DeploymentNotFound, InvalidServingRequest,
                                       PredictionFailed, ServingConflict)
from mlplatform.serving.local import LocalRayConfig, LocalRayHead, LocalServing
from mlplatform.serving.spec import serving_request

# Nothing listens here during these tests: the head counts as not running.
PORT = int(os.environ.get("MLPLATFORM_TEST_PORT_BASE", "28000")) + 900


@pytest.fixture
def local(tmp_path):
    return LocalServing(LocalRayConfig(port=PORT, root=tmp_path / "ray", num_cpus=4, num_gpus=0))


def record(backend: LocalServing, name: str, team: str = "team-vision", phase: str = "applied", **request):
    backend.apps.mkdir(parents=True, exist_ok=True)
    req = serving_request(name=name, model_uri=f"models:/{name}/1", **request)
    (backend.apps / f"{name}.json").write_text(json.dumps({
        "name": name, "request": req.to_dict(), "model_version": "1", "application": {}, "phase": phase,
        "owner": {"user": "alice", "team": team}, "submitted_at": "2026-11-22T20:00:00+00:00"}))


def test_config_from_environment():
    c = LocalRayConfig.from_environ({"MLPLATFORM_RAY_PORT": "26600", "MLPLATFORM_RAY_NUM_CPUS": "6",
                                     "MLPLATFORM_RAY_FAST_INGRESS": "0"})
    assert (c.port, c.dashboard_port, c.http_port, c.cpus, c.fast_ingress) == (26600, 26601, 26602, 6, False)
    assert str(c.directory) == "/tmp/mlp-ray-26600" and str(c.haproxy_directory) == "/tmp/mlp-ray-26600/hap"
    assert c.http_url == "http://127.0.0.1:26602"
    default = LocalRayConfig.from_environ({})
    assert (default.port, default.cpus, default.fast_ingress) == (18600, 4 * os.cpu_count(), True)
    # HAProxy's socket paths are limited: a long root puts its files in a short directory.
    deep = LocalRayConfig(port=26600, root="/tmp/some/rather/long/directory")
    assert str(deep.haproxy_directory) == "/tmp/mlp-hap-26600"


def test_head_command_uses_its_own_ports_and_directory():
    head = LocalRayHead(LocalRayConfig(port=26600, num_cpus=4))
    cmd = head.command()
    assert cmd[1:5] == ["start", "--head", "--block", "--disable-usage-stats"]
    options = dict(arg[2:].split("=", 1) for arg in cmd if arg.startswith("--") and "=" in arg)
    assert options["temp-dir"] == "/tmp/mlp-ray-26600" and options["num-cpus"] == "4"
    assert options["dashboard-host"] == options["node-ip-address"] == "127.0.0.1"
    ports = [int(v) for k, v in options.items() if k.endswith("port")]
    assert len(ports) == 11 and all(26600 <= p < 26800 for p in ports)


def test_head_environment_carries_no_user_credentials(monkeypatch):
    for name in ("JUPYTERHUB_API_TOKEN", "AWS_SECRET_ACCESS_KEY", "MLPLATFORM_USER", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.setenv(name, "x")
    env = LocalRayHead(LocalRayConfig(port=26600)).environment()
    assert not {"JUPYTERHUB_API_TOKEN", "AWS_SECRET_ACCESS_KEY", "MLPLATFORM_USER", "CUDA_VISIBLE_DEVICES"} & set(env)
    assert env["MLPLATFORM_RAY_HEAD"] == "/tmp/mlp-ray-26600"
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN_PATH"] == "/tmp/mlp-ray-26600/auth_token"
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert env["RAY_SERVE_HAPROXY_SOCKET_PATH"].startswith("/tmp/mlp-ray-26600/hap/")
    ports = [int(v) for k, v in env.items() if k.startswith("RAY_SERVE") and k.endswith("PORT")]
    assert ports and all(26600 <= p < 26800 for p in ports)
    plain = LocalRayHead(LocalRayConfig(port=26600, fast_ingress=False)).environment()
    assert not any(k.startswith("RAY_SERVE_HAPROXY") or k == "RAY_SERVE_ENABLE_HA_PROXY" for k in plain)


def test_status_of_an_unknown_application(local):
    record(local, "other")
    with pytest.raises(DeploymentNotFound, match="no serving application 'iris' on the local Ray head; "
                                                 "applications: other") as info:
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


def test_predict_without_an_endpoint(monkeypatch):
    monkeypatch.setenv("MLPLATFORM_RAY_PORT", str(PORT))
    with pytest.raises(PredictionFailed, match=f"cannot reach http://127.0.0.1:{PORT + 2}/iris/predict") as info:
        serving.predict("iris", [{"x1": 1.0}], timeout=5)
    assert info.value.status_code == 503
