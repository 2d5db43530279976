"""The local spawner's start: it returns as soon as the server listens (JupyterHub's own check backs off with
jitter, up to seconds late), fails at once when the server's process exits while starting, and the team's
MLflow experiment is made while the server starts, not before."""

from __future__ import annotations

import http.server
import logging
import socket
import sys
import textwrap
import threading
import time

import pytest
import yaml
from jupyterhub.objects import Hub
from traitlets.config import Config

from hub_config.catalog import DEFAULT_CATALOG
from hub_config.mlflow_access.tokens import generate_key_pair
from hub_config.spawners.local import LocalPlatformSpawner

from ..support.hub_user import User

# A stand-in for jupyterhub-singleuser: starts (sleeps), then listens where the hub told it to.
LATE_SERVER = """
    import http.server, os, sys, time
    from urllib.parse import urlparse
    time.sleep(float(sys.argv[1]))
    url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    http.server.HTTPServer((url.hostname, url.port), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def spawner(tmp_path, *cmd: str) -> LocalPlatformSpawner:
    return LocalPlatformSpawner(user=User("alice"), hub=Hub(ip="127.0.0.1", port=8081, base_url="/hub/"),
                                catalog_file=str(DEFAULT_CATALOG), data_dir=str(tmp_path), cmd=list(cmd),
                                args=[], start_timeout=30)


@pytest.fixture
def late_server(tmp_path):
    path = tmp_path / "late_server.py"
    path.write_text(textwrap.dedent(LATE_SERVER))
    return str(path)


async def test_start_returns_once_the_server_listens(tmp_path, late_server):
    alice = spawner(tmp_path, sys.executable, late_server, "1.5")
    started = time.monotonic()
    try:
        ip, port = await alice.start()
        took = time.monotonic() - started
        assert await alice.poll() is None
        # Not before it listens (the hub's first check finds it up), and promptly after.
        assert 1.5 <= took < 3.5, took
        socket.create_connection((ip, port), timeout=2).close()
    finally:
        await alice.stop(now=True)


async def test_a_server_that_exits_while_starting_fails_the_start_at_once(tmp_path):
    alice = spawner(tmp_path, sys.executable, "-c", "import sys, time; time.sleep(0.5); sys.exit(3)")
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="exited with code 3 while starting"):
        await alice.start()
    assert time.monotonic() - started < 5  # not the hub's http_timeout


class SlowMlflow(http.server.BaseHTTPRequestHandler):
    """An MLflow that answers each request after DELAY seconds, with 503: provisioning fails after one request."""

    DELAY = 2.0

    def do_GET(self):
        time.sleep(self.DELAY)
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def catalog_with_slow_mlflow(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowMlflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    data = yaml.safe_load(DEFAULT_CATALOG.read_text())
    data["mlflow"]["tracking_uri"] = f"http://127.0.0.1:{server.server_address[1]}"
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(data))
    key = tmp_path / "signing.pem"  # the hub's MLflow signing key: provisioning gets as far as calling MLflow
    generate_key_pair(key, key.with_suffix(".pub.pem"))
    yield str(path), Config({"MlflowAccess": {"signing_key_file": str(key)}})
    server.shutdown()


async def test_the_server_starts_while_the_team_experiment_is_made(tmp_path, late_server, catalog_with_slow_mlflow,
                                                                   caplog):
    catalog_file, config = catalog_with_slow_mlflow
    alice = spawner(tmp_path, sys.executable, late_server, "1.5")
    alice.catalog_file, alice.config, alice.log = catalog_file, config, logging.getLogger("test-spawner")
    await alice._run_apply_user_options({"team": "team-vision", "profile": "cpu"})
    started = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, "test-spawner"):
            await alice.run_pre_spawn_hook()
            assert time.monotonic() - started < 1  # MLflow answers after 2 s: not waited for here
            await alice.start()
        took = time.monotonic() - started
        # Both at once (2 s of MLflow, 1.5 s of the server's start), and the experiment's outcome came first.
        assert SlowMlflow.DELAY <= took < SlowMlflow.DELAY + 1.2, took
        assert [r.getMessage()[:40] for r in caplog.records if r.name == "test-spawner"] == [
            "No MLflow workspace or experiment for te"]
    finally:
        await alice.stop(now=True)
