"""A real local Ray head with the local platform's kind of Ray root: `<data dir>/ray`, as long as the
test platforms' (pytest's temporary paths), too long for Ray's and HAProxy's unix sockets, which go to
the short runtime directory. Every directory is this user's alone, Ray's own 0777 temporary directory
included (it is inside one); a runtime directory a crashed run left (this user's, open to others) is
made afresh rather than refused. Started and stopped with `mlplatform-ray-head`, as the local platform
does; no process and no runtime directory in /tmp is left.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from mlplatform import localhost
from mlplatform.serving.local import LocalRayConfig, LocalRayHead
from mlplatform.serving.spec import serve_config

PORT = int(os.environ.get("MLPLATFORM_TEST_PORT_BASE", "25800")) + 4200  # … + 4399


def head_cli(action: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlplatform.serving.head_cli", action], env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_a_head_under_a_long_root_keeps_its_sockets_short_and_its_directories_private(tmp_path):
    root = tmp_path / "platform-data" / "ray"
    root.parent.mkdir(mode=0o700)
    env = {**os.environ, "MLPLATFORM_RAY_PORT": str(PORT), "MLPLATFORM_RAY_DIR": str(root),
           "MLPLATFORM_RAY_NUM_CPUS": "2"}
    config = LocalRayConfig.from_environ(env)
    runtime = config.runtime_directory
    assert len(str(root)) > 50 and runtime == Path(f"/tmp/mlp-ray-{PORT}")
    shutil.rmtree(runtime, ignore_errors=True)  # left by an interrupted run
    head = LocalRayHead(config)
    try:
        (runtime / "ray" / "session_2026-01-01_00-00-00_000000_1").mkdir(parents=True)
        runtime.chmod(0o755)  # left by a crashed run of an older version: this user's, no head in it
        started = head_cli("start", env)
        assert started.returncode == 0, f"{started.stderr}\n{localhost.tail_text(root / 'head.log')}"
        # Serve's proxy, with HAProxy in front, starts with the first set of applications (empty here).
        r = head.session().put(f"{config.dashboard_url}/api/serve/applications/", timeout=60,
                               json=serve_config([], http_host="127.0.0.1", http_port=config.serve_port))
        assert r.ok, r.text
        assert localhost.wait_until(lambda: list(config.haproxy_directory.glob("*/admin.sock")), 120), \
            localhost.tail_text(config.ray_directory / "session_latest" / "logs" / "serve" / "controller.log")
        sockets = [p for p in runtime.rglob("*") if p.is_socket()]
        assert {p.name for p in sockets} >= {"plasma_store", "raylet", "admin.sock"}
        assert max(len(str(p)) for p in sockets) <= 107
        # Ray makes its temporary directory 0777; nobody else can reach it through the runtime directory.
        assert (mode(root), mode(runtime), mode(config.haproxy_directory)) == (0o700, 0o700, 0o700)
        assert mode(config.ray_directory) == 0o777 and (root / "auth_token").stat().st_mode & 0o777 == 0o600
        assert not (config.ray_directory / "session_2026-01-01_00-00-00_000000_1").exists()  # made afresh
        assert head_cli("start", env).returncode == 0  # found running, its directories still accepted
    finally:
        stopped = head_cli("stop", env)
        left, runtime_left = head.processes(), runtime.exists()
        shutil.rmtree(runtime, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr
    assert left == [] and not runtime_left  # the head's sockets and session files went with it
