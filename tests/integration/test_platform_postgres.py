"""The whole platform service on PostgreSQL through a hub run: a local platform whose hub and service share a
database on the real PostgreSQL server the tests start (MLPLATFORM_SERVICE_DATABASE_URL, as production would set
`platform_service.database_url`). A user logs in, spawns, promotes a model through the service, stops; the
audit log in PostgreSQL holds each action, and `mlplatform audit verify` finds its chain intact."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from hub_config.local.platform import LocalPlatform, Ports
from mlplatform_service.audit_log import AuditLog
from mlplatform_service.database import connect

from ..conftest import BASE
from ..support.hub import HubClient
from ..support.mlflow_access import platform_token, s3_admin, workspace
from ..support.mlflow_models import register_model, unique_name
from ..support.postgres import create_database

TEAM = "team-vision"
# Its own block of ports: the session's platform may run alongside (BASE .. BASE + 800).
PORTS = Ports(hub=BASE + 5000, sso=BASE + 5080, mlflow=BASE + 5500, s3=BASE + 5300, ray=BASE + 5600)
MLPLATFORM = str(Path(sys.executable).parent / "mlplatform")


@pytest.fixture(scope="module")
def on_postgres(postgres_server, tmp_path_factory):
    """(the platform, its service's database URL)."""
    url = create_database(postgres_server, f"hub_run_{os.getpid()}")
    local = LocalPlatform(data_dir=tmp_path_factory.mktemp("platform-postgres"), ports=PORTS,
                          extra_env={"MLPLATFORM_SERVICE_DATABASE_URL": url})
    local.start()
    try:
        yield local, url
    finally:
        local.stop()


def test_login_spawn_promote_and_stop_are_audited_in_postgresql_and_verify(on_postgres, monkeypatch):
    local, url = on_postgres
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", platform_token(local))  # this platform's MLflow, as the platform
    hub = HubClient(local)
    name = unique_name("postgres")
    try:
        alice, env = hub.start_server("alice")  # the hub makes team-vision's MLflow workspace before it starts
        headers = {"Authorization": f"token {env['JUPYTERHUB_API_TOKEN']}"}
        service = f"{env['MLPLATFORM_SERVICE_URL']}/api"
        with workspace(TEAM), s3_admin(local):
            register_model(local.mlflow_url, name, metrics={"accuracy": 0.95}, experiment=TEAM,
                           version_tags={"intended_use": "postgres tests"}, model_tags={"owner": TEAM})
        promoted = requests.post(f"{service}/models/{name}/versions/1/promote", json={"team": TEAM, "server": ""},
                                 headers=headers, timeout=120)
        assert promoted.status_code == 200, promoted.text
        budget = requests.get(f"{service}/budgets/{TEAM}", headers=headers, timeout=30)  # the ledger, in PostgreSQL
        assert budget.status_code == 200 and budget.json()["budget_gpu_hours"] == 500, budget.text
        alice.stop()
    finally:
        hub.stop_all()

    verify = subprocess.run([MLPLATFORM, "audit", "verify", "--database-url", url], capture_output=True, text=True,
                            timeout=120, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.startswith("audit log intact: ") and "head hash: " in verify.stdout

    records = [(r["actor"], r["action"], r["target"], r["team"], r["outcome"]) for r in AuditLog(connect(url)).query()]
    expected = [("alice", "login", "user:alice", None, "succeeded"),
                ("alice", "spawn", "server:alice/", TEAM, "succeeded"),
                ("alice", "promote", f"model {TEAM}/{name}", TEAM, "intent"),
                ("alice", "promote", f"model {TEAM}/{name}", TEAM, "succeeded"),
                ("alice", "stop", "server:alice/", TEAM, "succeeded")]  # one (each poll finding it gone wrote one)
    assert [r for r in records if r[1] in ("login", "spawn", "promote", "stop")] == expected, records
    # Nothing went to the SQLite database the local platform uses by default.
    assert not (local.data_dir / "platform.sqlite").exists()
