"""A bounded schemathesis run over the platform service's OpenAPI document, against the service the
session's hub runs, as a platform admin (who may reach every route) and as alice (a member of one team).

Every response must be one the document lists for its route (so no 500 or 502: none is listed). Fixed
seed and example count: the same requests on every run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import ARTIFACTS
from ..support.openapi import promised_server_errors

OPENAPI = Path(__file__).resolve().parents[2] / "extensions" / "mlplatform_service" / "openapi.yaml"
EXAMPLES = 12
SEED = 1


def test_the_document_promises_no_server_error():
    assert promised_server_errors(OPENAPI) == set()


@pytest.mark.parametrize("user", ["admin", "alice"])
def test_fuzzed_requests_get_only_documented_answers(hub, platform, tmp_path, user):
    token = hub.login(user).new_token()
    report = tmp_path / "schemathesis.xml"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "st"), "run", str(OPENAPI), "--url",
         f"http://127.0.0.1:{platform.ports.service}/services/mlplatform", "--header", f"Authorization: token {token}",
         "--checks", "status_code_conformance", "--max-examples", str(EXAMPLES), "--seed", str(SEED),
         "--generation-deterministic", "--request-timeout", "60", "--report", "junit", "--report-junit-path",
         str(report), "--no-color"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"schemathesis-service-{user}.log").write_text(result.stdout.replace(token, "[token]") + result.stderr)
    summary = result.stdout[result.stdout.find("=== FAILURES"):] if "FAILURES" in result.stdout else result.stdout
    assert result.returncode == 0, summary[-6000:].replace(token, "[token]")
