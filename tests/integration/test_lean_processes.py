"""The local platform's idle memory: no process that only waits for another, and none of Ray's dashboard
(README's memory figures; bench/startup.py --sections memory).

The Ray head starts with `ray start` (no --block: it exits once the head runs), without Ray's dashboard and
without a Ray Client server; Serve's REST API is served by Serve's controller (serve_api.py), answers only with
the head's token and refuses a bad config naming the field. The head's processes are found even where Ray's setproctitle
overwrote the marker in their environment (the agents', the actors'), and stop() leaves none of them. MLflow
is the one uvicorn process, not `mlflow server` waiting on it.
"""

from __future__ import annotations

import dataclasses
import http.client
import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlplatform import localhost
from mlplatform.serving.local import LocalRayConfig, LocalRayHead
from mlplatform.serving.spec import serve_config

from ..support.ray_head import fresh_ray_head

PORT = int(os.environ.get("MLPLATFORM_TEST_PORT_BASE", "25800")) + 6700  # … + 6899


def cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def test_the_head_runs_no_waiting_ray_start_no_client_server_and_no_dashboard(tmp_path):
    with fresh_ray_head(PORT, root=tmp_path / "ray") as head:
        assert head.ensure()
        config = head.config
        applications = f"{config.dashboard_url}/api/serve/applications/"
        r = head.session().put(applications, timeout=60,
                               json=serve_config([], http_host="127.0.0.1", http_port=config.serve_port))
        assert r.ok, r.text
        info = localhost.read_json(head.root / "head.json")
        # `ray start` (the group's first process) has exited; the head is its process group (GCS, raylet,
        # agents), and head.json's pid its GCS server.
        assert not localhost.running(info["pgid"]) and localhost.group_alive(info["pgid"])
        assert psutil.Process(info["pid"]).name() == "gcs_server" and _pgid(info["pid"]) == info["pgid"]
        group = {p.pid for p in psutil.process_iter() if _pgid(p.pid) == info["pgid"]}
        raylet = next(pid for pid in group if cmdline(pid).startswith(str(_ray_binary("raylet"))))
        below = {c.pid for c in psutil.Process(raylet).children(recursive=True)}  # agents, workers
        pids = head.processes()
        commands = {pid: cmdline(pid) for pid in pids}
        assert not [c for c in commands.values() if "ray start" in c or "scripts.scripts" in c or "--block" in c]
        assert not [c for c in commands.values() if "ray.util.client.server" in c]
        assert not [c for c in commands.values() if "dashboard.py" in c or c.startswith("ray-dashboard-")]
        # Every process of the group and below the raylet is the head's, though setproctitle overwrote the
        # marker in the environment of the agents and the actors.
        assert {pid for pid in group | below if localhost.running(pid)} <= set(pids)
        names = {c.strip() for c in commands.values()}
        assert {"ray::DashboardAgent", "ray::RuntimeEnvAgent", "ray::ServeController"} <= names
        assert head.running()  # the API's version route

        # Serve's REST API: in Serve's controller, on loopback only, the head's token or nothing.
        api = next(pid for pid, c in commands.items() if c.strip() == "ray::ServeController")
        assert [c.laddr.ip for c in psutil.Process(api).net_connections("tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr.port == config.dashboard_port] == ["127.0.0.1"]
        assert requests.get(applications, timeout=10).status_code == 401
        assert requests.get(applications, headers={"Authorization": "Bearer " + "0" * 64}, timeout=10).status_code == 401
        assert head.session().get(f"{config.dashboard_url}/api/jobs/", timeout=10).status_code == 404
        # A bad config is refused naming the field, and changes nothing.
        refused = head.session().put(applications, timeout=60, json={"applications": [{"name": "x", "route_prefix": 5}]})
        assert refused.status_code == 400 and "applications.0.import_path" in refused.text, refused.text
        assert head.session().put(applications, data="{", timeout=10).status_code == 400
        assert head.session().put(applications, json=[], timeout=10).status_code == 400
        assert _put_with_length(config.dashboard_port, head.session().headers["Authorization"], "x") == 400
        assert head.session().get(applications, timeout=30).json()["applications"] == {}

        fuzz_the_api(head)

        # Ray's Serve CLI works against it: `serve deploy`, `serve status`, `serve shutdown` (every application
        # goes; Serve's own actors stay, the API among them).
        cli = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(head.token_path)}
        config_file = tmp_path / "serve.yaml"
        broken = {"name": "broken", "route_prefix": "/broken", "import_path": "no_such_module:app"}
        config_file.write_text(json.dumps(serve_config([broken], http_host="127.0.0.1", http_port=config.serve_port)))
        for command in (["deploy", str(config_file)], ["status"], ["shutdown", "-y"]):
            done = subprocess.run([str(Path(sys.executable).parent / "serve"), *command, "-a", config.dashboard_url],
                                  env=cli, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, (command, done.stdout, done.stderr[-3000:])
            if command == ["status"]:
                assert "broken:" in done.stdout, done.stdout
        def deployed() -> dict:
            return head.session().get(applications, timeout=30).json()["applications"]

        assert localhost.wait_until(lambda: deployed() == {}, 60)
        assert head.session().put(applications, timeout=120, json=serve_config(
            [], http_host="127.0.0.1", http_port=config.serve_port)).ok
        assert localhost.running(api)

        # Ray restarts Serve's controller if it dies, and the API with it.
        os.kill(api, signal.SIGKILL)
        assert localhost.wait_until(head.running, 60)
        assert head.session().get(applications, timeout=30).json()["applications"] == {}
        head.stop()
        assert [pid for pid in pids if localhost.running(pid)] == []
        assert not localhost.group_alive(info["pgid"])


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                    max_leaves=12)
# Bodies that get past JSON and reach Serve's schema: its own field names with any values.
FIELDS = st.sampled_from(["name", "route_prefix", "import_path", "args", "deployments", "runtime_env",
                          "http_options", "proxy_location", "applications", "logging_config", "num_replicas"])
CONFIGS = st.fixed_dictionaries({"applications": st.lists(st.dictionaries(FIELDS, JSON, max_size=4), max_size=2)},
                                optional={"proxy_location": JSON, "http_options": JSON, "logging_config": JSON})
PATHS = st.sampled_from(["/api/serve/applications/", "/api/serve/applications", "/api/ray/version", "/",
                         "/api/serve/applications/?api_type=x", "/api/jobs/"]) | st.text(max_size=20).map(lambda t: "/" + t)


def fuzz_the_api(head: LocalRayHead) -> None:
    """Any method, path, token and body: an answer the API documents (200, 400, 401, 404), never a server error,
    and the API still up. A config that is valid (an empty set) is applied; the set is empty again after."""
    url, token = head.config.dashboard_url, head.session().headers["Authorization"]

    @settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(method=st.sampled_from(["GET", "PUT", "POST", "PATCH"]), path=PATHS,  # DELETE: `serve shutdown`, below
           authorization=st.sampled_from([token, "", "Bearer", "Bearer x", token.lower(), token + "0"]),
           body=st.one_of(CONFIGS, JSON.map(json.dumps), st.binary(max_size=40)))
    def answers(method, path, authorization, body):
        headers = {"Authorization": authorization} if authorization else {}
        data = body if isinstance(body, (str, bytes)) else json.dumps(body)
        r = requests.request(method, url + path, headers=headers, data=data, timeout=60)
        allowed = {200, 400, 401, 404} if method in ("GET", "PUT") else {501}  # http.server: 501 for other methods
        assert r.status_code in allowed, (method, path, r.status_code, r.text[:500])
        if authorization != token:
            assert r.status_code in (401, 501)

    answers()
    assert head.running()
    applications = f"{url}/api/serve/applications/"
    assert head.session().put(applications, timeout=60, json=serve_config(
        [], http_host="127.0.0.1", http_port=head.config.serve_port)).ok
    assert head.session().get(applications, timeout=30).json()["applications"] == {}


def test_rays_dashboard_serves_the_api_when_asked(tmp_path):
    """MLPLATFORM_RAY_DASHBOARD_MODULES: Ray's dashboard (for its UI) with the modules named and Serve's."""
    config = LocalRayConfig.from_environ({"MLPLATFORM_RAY_PORT": str(PORT), "MLPLATFORM_RAY_DASHBOARD_MODULES": "all"})
    assert config.dashboard_modules == "all" and "dashboard, modules = True, ''" in LocalRayHead(config).command()[2]
    with fresh_ray_head(PORT, root=tmp_path / "ray") as fresh:
        head = LocalRayHead(dataclasses.replace(fresh.config, dashboard_modules="ServeHead"))
        assert head.ensure()
        r = head.session().put(f"{head.config.dashboard_url}/api/serve/applications/", timeout=60,
                               json=serve_config([], http_host="127.0.0.1", http_port=head.config.serve_port))
        assert r.ok, r.text
        commands = [cmdline(pid) for pid in head.processes()]
        assert [c.split()[0] for c in commands if c.startswith("ray-dashboard-")] == ["ray-dashboard-ServeHead-0"]
        assert head.running()
        assert "RAY_SERVE_CONTROLLER_CALLBACK_IMPORT_PATH" not in head.environment()


def test_mlflow_is_one_process(platform):
    mlflow = platform.processes["mlflow"]
    proc = psutil.Process(mlflow.pid)
    assert proc.children(recursive=True) == []
    assert "uvicorn" in " ".join(proc.cmdline()) and "mlflow.server" in " ".join(proc.cmdline())


def _put_with_length(port: int, authorization: str, length: str) -> int:
    """The status of a PUT whose Content-Length header is `length` (requests always sets its own)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("PUT", "/api/serve/applications/")
        connection.putheader("Authorization", authorization)
        connection.putheader("Content-Length", length)
        connection.endheaders(b"{}")
        return connection.getresponse().status
    finally:
        connection.close()


def _ray_binary(name: str) -> Path:
    return Path(importlib.util.find_spec("ray").origin).parent / "core" / "src" / "ray" / name / name


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
