"""Local workloads in the audit log, with the session's real hub and platform service: a server reports what
its local backend did (`POST api/activity`, with its own hub token), the service records it as the token's
user, for one of that user's teams only (printed as an authorization matrix); a Spark job submitted and
cancelled through the notebook API from alice's server leaves both records."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import datetime

import pytest
import requests
from mlplatform import platform_service

from ..support.authz import authorization_matrix
from ..support.mlflow_models import unique_name

TEAM = "team-vision"
SOURCE = {"via": "local", "reported_by": "server"}


@pytest.fixture(scope="module")
def authz(request):
    yield from authorization_matrix(request)


def audit(service_url: str, admin_token: str, **filters) -> list[dict]:
    r = requests.get(f"{service_url}/api/audit", params=filters, timeout=30,
                     headers={"Authorization": f"token {admin_token}"})
    assert r.status_code == 200, r.text
    return r.json()["records"]


def test_a_servers_report_is_recorded_as_its_user_for_its_own_team(hub, platform, authz):
    _, alice = hub.start_server("alice")
    _, bob = hub.start_server("bob")
    admin = hub.login("admin").new_token()
    service = alice["MLPLATFORM_SERVICE_URL"]
    name = unique_name("activity")

    record = platform_service.report("deploy", "model", name, details={"model_version": "1"}, environ=alice)
    assert record is not None
    assert (record["actor"], record["team"], record["target"], record["outcome"], record["details"]) == (
        "alice", TEAM, f"model:{TEAM}/{name}", "succeeded", {"model_version": "1", **SOURCE})

    body = {"action": "delete", "kind": "model", "name": name, "team": TEAM}
    actors = {"alice's server (team-vision)": alice["JUPYTERHUB_API_TOKEN"],
              "bob's server (team-nlp)": bob["JUPYTERHUB_API_TOKEN"],
              "admin (platform admin, team-nlp)": admin, "no token": None}
    for actor, token in actors.items():
        r = requests.post(f"{service}/api/activity", json=body, timeout=30,
                          headers={"Authorization": f"token {token}"} if token else {})
        authz.check(actor, "report a local delete for team-vision", r, allowed=actor.startswith("alice"))
    forged = requests.post(f"{service}/api/activity", json={**body, "actor": "bob"}, timeout=30,
                           headers={"Authorization": f"token {alice['JUPYTERHUB_API_TOKEN']}"})
    authz.check("alice's server (team-vision)", "report with an actor in the body", forged, allowed=False, status=400)
    assert forged.json()["message"].startswith("actor: 'bob' is not allowed; allowed: no actor field: the actor is "
                                               "the user the hub authenticated for this request (alice)")

    assert [(r["actor"], r["action"], r["outcome"]) for r in audit(service, admin, target=f"/{name}")] == [
        ("alice", "deploy", "succeeded"), ("alice", "delete", "succeeded"),
        ("bob", "delete", "refused"), ("admin", "delete", "refused")]


SUBMIT_AND_CANCEL = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from mlplatform import spark
    from mlplatform.spark import api
    stand_in, main = Path(sys.argv[1]), Path(sys.argv[2])
    stand_in.write_text("#!/bin/sh\\nsleep 600\\n"); stand_in.chmod(0o755)
    main.write_text("print('hello')\\n")
    api.backend().spark_submit = stand_in  # the cached local backend of this environment, as spark.* uses it
    app = spark.submit("audited", str(main))
    print(json.dumps(spark.cancel(app["app_id"])))
""")


def test_a_local_spark_submit_and_cancel_from_a_server_are_in_the_audit_log(hub, platform, tmp_path):
    """Through the notebook's Python API, in a process with the server's environment (as a kernel has)."""
    _, env = hub.start_server("alice")
    started = datetime.now().astimezone()
    done = subprocess.run([sys.executable, "-c", SUBMIT_AND_CANCEL, str(tmp_path / "spark-submit"),
                           str(tmp_path / "job.py")], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    cancelled = json.loads(done.stdout.splitlines()[-1])
    assert cancelled["state"] == "CANCELLED"
    assert "did not record" not in done.stderr  # no audit gap
    records = audit(env["MLPLATFORM_SERVICE_URL"], hub.login("admin").new_token(),
                    target=f"spark:{TEAM}/{cancelled['app_id']}")
    # The local catalog is in GitOps mode: each action is first the platform service's commit (via gitops), then
    # the server's report of what its local backend did (via local).
    assert [(r["actor"], r["action"], r["team"], r["outcome"], r["details"]["via"]) for r in records] == [
        ("alice", "submit", TEAM, "succeeded", "gitops"), ("alice", "submit", TEAM, "succeeded", "local"),
        ("alice", "cancel", TEAM, "succeeded", "gitops"), ("alice", "cancel", TEAM, "succeeded", "local")]
    assert all(datetime.fromisoformat(r["time"]) >= started.replace(microsecond=0)
               for r in records)
    assert records[1]["details"] == {"job": "audited", "master": "local[1]", "executors": 1, "executor_cores": 1,
                                     "driver_memory": "1g", "server": "", **SOURCE}
    path = f"teams/{TEAM}/spark/{cancelled['app_id']}.yaml"
    assert (records[0]["details"]["path"], records[2]["details"]["change"]) == (path, "removed")
    assert cancelled["commit"]["sha"] == records[2]["details"]["commit"]
