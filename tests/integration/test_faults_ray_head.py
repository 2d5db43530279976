"""The local Ray head killed (every process of it, SIGKILL) under a running application: `status` says
the head is down and what to do (no traceback), `mlplatform-ray-head status` says stopped, the
application's record is intact and no start lock is left held; the next deploy starts the head again
and the application answers. Its rollout gateway killed alone: the next deploy starts it again, with the endpoints
as they were (any later change of the applications starts it). On the session's shared head (conftest.py), which it leaves running for the modules after it: a head
start takes about 20 s here."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

import pytest

from mlplatform import serving
from mlplatform.localhost import wait_until

from ..conftest import SHARED_RAY_PORT
from ..support.mlflow_models import SAMPLE_ROWS, register_model, unique_name
from ..support.ray_head import local_backend_environ, module_on_shared_head

RAY_PORT = SHARED_RAY_PORT
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # MLflow's hints when logging models


def head_cli(action: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlplatform.serving.head_cli", action, "--port", str(RAY_PORT)],
                          capture_output=True, text=True, timeout=120)


def test_a_killed_head_is_reported_and_the_next_deploy_brings_the_application_back(platform, shared_ray_head):
    with module_on_shared_head(shared_ray_head, local_backend_environ(RAY_PORT, platform.mlflow_url)) as head:
        mv = register_model(platform.mlflow_url, unique_name("headless"))
        assert serving.deploy("headless", mv.uri, wait=True, timeout=240)["state"] == "running"
        record = json.loads((head.root / "apps" / "headless.json").read_text())
        # The deploy took over the warm spare, and the next one starts in the background: killed once it runs
        # (a process Ray is spawning at the kill may linger until it finds its raylet gone).
        assert wait_until(lambda: (serving.backend().spare() or {}).get("status") == "RUNNING", 240)

        for pid in head.processes():
            with contextlib.suppress(ProcessLookupError):  # gone with its parent (the gateway's HAProxy worker)
                os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: not head.processes() and not head.running(), 30)

        status = serving.status("headless")
        assert (status["state"], status["message"]) == (
            "failed", "the local Ray head is not running (stopped, or the machine restarted); deploy again to "
                      "start it and bring back every application")
        stopped = head_cli("status")
        assert (stopped.returncode, stopped.stdout, stopped.stderr) == (3, f"Ray head on port {RAY_PORT}: stopped\n", "")
        assert not head.starting()  # no start lock left held
        assert json.loads((head.root / "apps" / "headless.json").read_text()) == record  # intact, not half-written

        again = serving.deploy("headless", mv.uri, wait=True, timeout=240)
        assert (again["state"], again["model_version"]) == ("running", mv.version)
        assert serving.predict("headless", SAMPLE_ROWS) == [0, 1]
        assert head_cli("status").stdout == f"Ray head on port {RAY_PORT}: running\n"


def test_a_killed_gateway_is_started_again_by_the_next_deploy(platform, shared_ray_head):
    with module_on_shared_head(shared_ray_head, local_backend_environ(RAY_PORT, platform.mlflow_url)) as head:
        mv = register_model(platform.mlflow_url, unique_name("gatewayless"))
        assert serving.deploy("gatewayless", mv.uri, wait=True, timeout=240)["state"] == "running"
        gateway = head.gateway()
        worker = int(gateway.command("show info").split("Pid: ")[1].split()[0])
        os.killpg(os.getpgid(worker), signal.SIGKILL)  # HAProxy's master and worker: a session of their own
        assert wait_until(lambda: not gateway.running(), 30)
        with pytest.raises(serving.ServingError):
            serving.predict("gatewayless", SAMPLE_ROWS)  # nothing listens on the endpoints' port
        assert serving.deploy("gatewayless", mv.uri, wait=True, timeout=240)["state"] == "running"
        assert gateway.running() and serving.predict("gatewayless", SAMPLE_ROWS) == [0, 1]
        # Any change of the applications (here a delete) starts it again too.
        os.killpg(os.getpgid(int(gateway.command("show info").split("Pid: ")[1].split()[0])), signal.SIGKILL)
        assert wait_until(lambda: not gateway.running(), 30)
        serving.delete("gatewayless")
        assert gateway.running() and "gatewayless" not in serving.backend().names()
