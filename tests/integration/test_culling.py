"""Idle culling on the real local platform: the hub's jupyterhub-idle-culler service stops a server idle for
its profile's timeout and leaves a server of a profile with a longer timeout running.

The catalog's timeouts are at least 60 s (schema minimum), so the test waits about a minute and a half:
GPU profiles 60 s, CPU 3600 s, a cull round every 10 s (also the schema minimum).
"""

from __future__ import annotations

import copy
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil
import pytest
import yaml

from hub_config.catalog import DEFAULT_CATALOG
from hub_config.local.platform import LocalPlatform, Ports

from ..support.hub import HubClient

GPU_TIMEOUT = 60
EVERY = 10
# Ports of a platform of its own (its catalog differs from the session's), clear of the session's.
PORTS = Ports(hub=25000, sso=25080, mlflow=25500)


def culler_processes(platform: LocalPlatform) -> list[psutil.Process]:
    """The idle cullers serving this platform's hub (they run in sessions of their own); one that has
    exited but was not reaped yet (a zombie: its parent, the hub, is gone) is not running."""
    api_url = f"http://127.0.0.1:{platform.ports.hub_api}/hub/api"
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "jupyterhub_idle_culler" in (proc.info["cmdline"] or []) and proc.status() != psutil.STATUS_ZOMBIE \
                    and proc.environ().get("JUPYTERHUB_API_URL", "").rstrip("/") == api_url:
                found.append(proc)
        except psutil.Error:
            pass
    return found


@pytest.fixture(scope="module")
def culling_platform(tmp_path_factory):
    data = copy.deepcopy(yaml.safe_load(DEFAULT_CATALOG.read_text()))
    data["culling"] = {"enabled": True, "timeout_seconds": 3600, "gpu_timeout_seconds": GPU_TIMEOUT,
                       "every_seconds": EVERY}
    catalog = tmp_path_factory.mktemp("culling") / "platform.yaml"
    catalog.write_text(yaml.safe_dump(data))
    local = LocalPlatform(data_dir=tmp_path_factory.mktemp("culling-platform"), ports=PORTS, catalog=catalog)
    local.start()
    try:
        yield local
    finally:
        local.stop()
        left = culler_processes(local)
        for proc in left:
            proc.kill()
        assert left == [], "the idle culler outlived the hub"


def idle_seconds(server: dict) -> float:
    return (datetime.now(timezone.utc) - datetime.fromisoformat(server["last_activity"])).total_seconds()


def test_an_idle_gpu_server_is_culled_at_its_profiles_timeout_and_a_cpu_server_is_kept(culling_platform):
    hub = HubClient(culling_platform)
    try:
        # bob's CPU server starts first, so it has been idle longer than alice's GPU server throughout.
        bob = hub.login("bob")
        assert bob.start(profile="cpu").status_code in (201, 202)
        bob.wait_ready()
        alice = hub.login("alice")
        assert alice.start(profile="gpu-t4", gpu_type="t4", gpu_count=1).status_code in (201, 202)
        alice.wait_ready()
        assert len(culler_processes(culling_platform)) == 1

        last_seen = alice.model()["servers"][""]
        deadline = time.monotonic() + GPU_TIMEOUT + 2 * EVERY + 60
        while time.monotonic() < deadline:
            # One read per round: the server may be culled between two reads.
            server = alice.model()["servers"].get("")
            if server is None:
                break
            last_seen = server
            time.sleep(1)
        assert "" not in alice.model()["servers"], "alice's idle GPU server was not culled"
        # Not before its timeout: idle at least 60 s when last seen running.
        assert idle_seconds(last_seen) >= GPU_TIMEOUT - 2, last_seen

        # bob's server, idle longer than alice's was, runs on: its profile's timeout is an hour.
        server = bob.model()["servers"][""]
        assert server["ready"] and idle_seconds(server) > GPU_TIMEOUT, server
        with pytest.raises(LookupError):
            hub.server_env("alice")  # the process is gone, not only the hub's record
        assert hub.server_env("bob")

        log = (Path(culling_platform.logs) / "hub.log").read_text(errors="replace")
        assert "Culling server alice (inactive for" in log
        assert "Culling server bob" not in log
    finally:
        hub.stop_all()
