"""The local platform's idle memory: no process that only waits for another, and none of Ray's dashboard
modules that serving does not use (README's memory figures; bench/startup.py --sections memory).

The Ray head starts with `ray start` (no --block: it exits once the head runs) and only Serve's dashboard
module; no Ray Client server. Its processes are found even where Ray's setproctitle overwrote the marker
in their environment (the agents', the dashboard modules'), and stop() leaves none of them. MLflow is the
one uvicorn process, not `mlflow server` waiting on it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import psutil

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


def test_the_head_runs_no_waiting_ray_start_no_client_server_and_only_serves_dashboard_module(tmp_path):
    with fresh_ray_head(PORT, root=tmp_path / "ray") as head:
        assert head.ensure()
        config = head.config
        r = head.session().put(f"{config.dashboard_url}/api/serve/applications/", timeout=60,
                               json=serve_config([], http_host="127.0.0.1", http_port=config.http_port))
        assert r.ok, r.text
        assert localhost.wait_until(lambda: "ServeController" in " ".join(map(cmdline, head.processes())), 60)
        info = localhost.read_json(head.root / "head.json")
        # `ray start` (the group's first process) has exited; the head is its process group (GCS, raylet,
        # dashboard, agents), and head.json's pid its GCS server.
        assert not localhost.running(info["pgid"]) and localhost.group_alive(info["pgid"])
        assert psutil.Process(info["pid"]).name() == "gcs_server" and _pgid(info["pid"]) == info["pgid"]
        group = {p.pid for p in psutil.process_iter() if _pgid(p.pid) == info["pgid"]}
        raylet = next(pid for pid in group if cmdline(pid).startswith(str(_ray_binary("raylet"))))
        below = {c.pid for c in psutil.Process(raylet).children(recursive=True)}  # agents, workers
        pids = head.processes()
        commands = {pid: cmdline(pid) for pid in pids}
        assert not [c for c in commands.values() if "ray start" in c or "scripts.scripts" in c or "--block" in c]
        assert not [c for c in commands.values() if "ray.util.client.server" in c]
        modules = sorted(c.split()[0] for c in commands.values() if c.startswith("ray-dashboard-"))
        assert modules == ["ray-dashboard-ServeHead-0"], modules
        # Every process of the group and below the raylet is the head's, though setproctitle overwrote the
        # marker in the environment of the agents and the dashboard's module.
        assert {pid for pid in group | below if localhost.running(pid)} <= set(pids)
        assert {"ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= {c.strip() for c in commands.values()}
        assert head.running()  # Serve's module answers its version route (/api/version is the job module's)
        head.stop()
        assert [pid for pid in pids if localhost.running(pid)] == []
        assert not localhost.group_alive(info["pgid"])


def test_all_of_rays_dashboard_modules_when_asked():
    config = LocalRayConfig.from_environ({"MLPLATFORM_RAY_PORT": str(PORT), "MLPLATFORM_RAY_DASHBOARD_MODULES": "all"})
    assert config.dashboard_modules == "all"
    assert "modules = ''" in LocalRayHead(config).command()[2]


def test_mlflow_is_one_process(platform):
    mlflow = platform.processes["mlflow"]
    proc = psutil.Process(mlflow.pid)
    assert proc.children(recursive=True) == []
    assert "uvicorn" in " ".join(proc.cmdline()) and "mlflow.server" in " ".join(proc.cmdline())


def _ray_binary(name: str) -> Path:
    return Path(importlib.util.find_spec("ray").origin).parent / "core" / "src" / "ray" / name / name


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
