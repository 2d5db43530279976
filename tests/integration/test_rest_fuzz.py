"""A bounded schemathesis run over the REST API's own OpenAPI document, against a real notebook server
(`jupyter server` with the extension, the local backends, the session platform's MLflow).

Every response must be one the document lists for its route (so no 500 or 502 ever: none is listed),
and the document must list no 500. Fixed seed and example count: the same few hundred requests on
every run, about a minute.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from hub_config.catalog import DEFAULT_CATALOG
from mlplatform.localhost import wait_until

from ..conftest import ARTIFACTS, BASE
from ..support.openapi import promised_server_errors

PORT = BASE + 1900
RAY_PORT = BASE + 1700  # never started: no request the fuzzer makes deploys a model that exists
OPENAPI = Path(__file__).resolve().parents[2] / "extensions" / "mlplatform" / "openapi.yaml"
EXAMPLES = 25
SEED = 1


@pytest.fixture(scope="module")
def notebook_server(platform, tmp_path_factory):
    """A notebook server of alice (team-vision) on the local backend, as the hub would start it."""
    home = tmp_path_factory.mktemp("fuzz-home")
    (home / "work").mkdir()
    token = secrets.token_hex(16)
    env = {**os.environ, "HOME": str(home), "MLPLATFORM_BACKEND": "local", "MLPLATFORM_USER": "alice",
           "MLPLATFORM_TEAM": "team-vision", "MLFLOW_TRACKING_URI": platform.mlflow_url,
           "MLPLATFORM_CATALOG": str(DEFAULT_CATALOG),
           "MLPLATFORM_RAY_PORT": str(RAY_PORT), "MLPLATFORM_RAY_DIR": str(home / "ray")}
    log = open(home / "server.log", "wb")  # noqa: SIM115 (written by the server until the module ends)
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "jupyter"), "server", "--no-browser", f"--port={PORT}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={home / 'work'}",
         "--ServerApp.allow_root=True"],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{PORT}/mlplatform/api"

    def answers() -> bool:
        try:
            return requests.get(f"{url}/openapi.json", headers={"Authorization": f"token {token}"}, timeout=2).ok
        except requests.RequestException:
            return False

    try:
        assert wait_until(answers, 60, interval=0.5), (home / "server.log").read_text()[-3000:]
        yield url, token, home
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        log.close()


def test_the_document_promises_no_server_error():
    assert promised_server_errors(OPENAPI) == set()


def test_fuzzed_requests_get_only_documented_answers(notebook_server):
    url, token, home = notebook_server
    report = home / "schemathesis.xml"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "st"), "run", f"{url}/openapi.json", "--header",
         f"Authorization: token {token}", "--checks", "status_code_conformance", "--max-examples", str(EXAMPLES),
         "--seed", str(SEED), "--generation-deterministic", "--request-timeout", "60", "--report", "junit",
         "--report-junit-path", str(report), "--no-color"],
        cwd=home, capture_output=True, text=True, timeout=900, check=False)  # cwd: schemathesis keeps state there
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "schemathesis.log").write_text(result.stdout + result.stderr)
    summary = result.stdout[result.stdout.find("=== FAILURES"):] if "FAILURES" in result.stdout else result.stdout
    assert result.returncode == 0, summary[-6000:].replace(token, "[token]")
