"""The platform service as the hub runs it, end to end: real hub, provider, MLflow with its auth app, S3.

A notebook's `mlplatform.registry` calls the service with its server's token; the service acts in MLflow
as the platform. Users' own MLflow tokens cannot move a protected alias, nor delete or rename what holds
one, nor write the platform's tags: MLflow itself refuses them. The audit log is for admins.
"""

from __future__ import annotations

import re
import time
from datetime import datetime

import requests

import pytest
from mlflow import MlflowClient

from mlplatform import registry
from mlplatform.widgets.budget import BudgetLine

from ..support.as_server import act_as
from ..support.authz import authorization_matrix
from ..support.mlflow_access import s3_admin, workspace
from ..support.mlflow_models import register_model, unique_name

TEAM = "team-vision"
CARD = {"version_tags": {"intended_use": "service tests"}, "model_tags": {"owner": "team-vision"}}


@pytest.fixture(scope="module")
def authz(request):
    yield from authorization_matrix(request)


def register_in_team(platform, name, accuracy, **kwargs):
    """A version in team-vision's workspace, its artifacts under the team's S3 prefix (as its members log them)."""
    with workspace(TEAM), s3_admin(platform):
        return register_model(platform.mlflow_url, name, metrics={"accuracy": accuracy}, experiment=TEAM,
                              **{**CARD, **kwargs})


def mlflow_as(env: dict, platform):
    """A requests session to MLflow with the server's own MLflow token (what its notebooks hold)."""
    token = requests.get(env["MLPLATFORM_MLFLOW_TOKEN_URL"], timeout=30,
                         headers={"Authorization": f"token {env['JUPYTERHUB_API_TOKEN']}"}).json()["token"]
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {token}", "X-MLFLOW-WORKSPACE": TEAM})
    return session


def champion(platform, name):
    with workspace(TEAM):
        return MlflowClient(platform.mlflow_url).get_registered_model(name).aliases.get("champion")


def test_a_notebook_promotes_through_the_service_and_cannot_move_the_alias_itself(hub, platform, monkeypatch, authz):
    _, env = hub.start_server("alice")
    assert env["MLPLATFORM_SERVICE_URL"] == f"http://127.0.0.1:{platform.ports.service}/services/mlplatform"
    name = unique_name("service")
    for accuracy in (0.95, 0.96):
        register_in_team(platform, name, accuracy)
    act_as(monkeypatch, env)

    budget = BudgetLine()  # above ServeModel and SubmitSparkJob: the team's budget as the service counts it
    assert budget.wait(30) and re.fullmatch(r"<span style=\"color:#555\">Budget: team-vision: [0-9.]+ of 500 "
                                            r"GPU-hours and \$[0-9.,]+ of \$2,000 used in \w+</span>", budget.value)

    report = registry.evaluate(name, 1)  # the signature gate read the MLmodel with alice's own S3 credentials
    failed = [g["message"] for g in report["gates"] if not g["passed"]]
    assert (report["passed"], failed) == (True, [])
    done = registry.promote(name, 1)
    assert (done["event"]["user"], done["team"], champion(platform, name)) == ("alice", TEAM, "1")
    assert registry.card_text(done["card"]).startswith(f"# Model card: {name} version 1")

    mlflow = mlflow_as(env, platform)
    api = f"{platform.mlflow_url}/api/2.0/mlflow"
    attempts = {
        "move @champion": lambda: mlflow.post(f"{api}/registered-models/alias",
                                              json={"name": name, "alias": "champion", "version": "2"}),
        "delete @champion": lambda: mlflow.delete(f"{api}/registered-models/alias",
                                                  json={"name": name, "alias": "champion"}),
        "delete the version @champion points to": lambda: mlflow.delete(f"{api}/model-versions/delete",
                                                                        json={"name": name, "version": "1"}),
        "delete the model holding @champion": lambda: mlflow.delete(f"{api}/registered-models/delete",
                                                                    json={"name": name}),
        "rename the model holding @champion": lambda: mlflow.post(f"{api}/registered-models/rename",
                                                                  json={"name": name, "new_name": f"{name}-x"}),
        "write a platform tag": lambda: mlflow.post(f"{api}/model-versions/set-tag", json={
            "name": name, "version": "2", "key": "mlplatform.audit.000009", "value": "{}"}),
        "create a version with a platform tag": lambda: mlflow.post(f"{api}/model-versions/create", json={
            "name": name, "source": "s3://platform/teams/team-vision/x",
            "tags": [{"key": "mlplatform.audit.000010", "value": "{}"}]}),
    }
    for action, attempt in attempts.items():
        r = attempt()
        authz.check("alice's MLflow token (team-vision member)", action, r, allowed=False)
        assert "protected alias" in r.text or "platform's own" in r.text, r.text
    allowed = mlflow.post(f"{api}/registered-models/alias", json={"name": name, "alias": "staging", "version": "2"})
    authz.check("alice's MLflow token (team-vision member)", "move @staging (not protected)", allowed, allowed=True)
    assert champion(platform, name) == "1"

    registry.promote(name, 2)
    rolled = registry.rollback(name)
    assert (rolled["version"], rolled["event"]["user"], champion(platform, name)) == ("1", "alice", "1")
    assert [(e["action"], e["version"]) for e in registry.history(name)] == [
        ("promote", "1"), ("promote", "2"), ("rollback", "1")]


def test_another_team_cannot_promote_and_the_audit_log_is_for_admins(hub, platform, monkeypatch, authz):
    name = unique_name("service-teams")
    register_in_team(platform, name, 0.95)
    _, bob = hub.start_server("bob")
    act_as(monkeypatch, {**bob, "MLFLOW_WORKSPACE": TEAM})
    with pytest.raises(registry.Forbidden) as refused:
        registry.promote(name, 1)
    assert str(refused.value).startswith(f"bob may not promote {name!r}: it belongs to team team-vision")
    assert champion(platform, name) is None

    service = f"{bob['MLPLATFORM_SERVICE_URL']}/api"
    admin = hub.login("admin")
    tokens = {"bob's server": bob["JUPYTERHUB_API_TOKEN"], "admin (platform admin)": admin.new_token()}
    for who, token in tokens.items():
        r = requests.get(f"{service}/audit", params={"target": name}, headers={"Authorization": f"token {token}"},
                         timeout=30)
        authz.check(who, "read the audit log", r, allowed=who.startswith("admin"))
        if r.status_code == 200:
            assert [(x["actor"], x["action"], x["outcome"]) for x in r.json()["records"]] == [
                ("bob", "promote", "refused")]
    export = requests.get(f"{service}/audit/export", params={"format": "csv", "target": name}, timeout=30,
                          headers={"Authorization": f"token {tokens['admin (platform admin)']}"})
    assert export.status_code == 200 and export.headers["Content-Type"].startswith("text/csv")
    assert export.text.splitlines()[0].startswith("seq,") and len(export.text.splitlines()) == 2
    nobody = requests.get(f"{service}/audit", timeout=30)
    authz.check("no token", "read the audit log", nobody, allowed=False)


def test_the_hub_audits_login_spawn_credentials_and_stop_and_shows_the_budget(hub, platform):
    alice = hub.login("alice")
    page = alice.spawn_page().text
    month = time.strftime("%B", time.gmtime())
    assert re.search(r"Budget: team-vision: [0-9.]+ of 500 GPU-hours and \$[0-9.,]+ of \$2,000 used in " + month, page)
    assert "Budget: team-nlp" not in page  # alice is not in team-nlp
    started = time.time()
    _, env = hub.start_server("alice")
    s3 = requests.get(env["MLPLATFORM_CREDENTIALS_URL"], headers={"Authorization": f"token {env['JUPYTERHUB_API_TOKEN']}"},
                      timeout=30)
    assert s3.status_code == 200
    hub.sessions[-1].stop()

    admin = hub.login("admin")
    records = requests.get(f"{env['MLPLATFORM_SERVICE_URL']}/api/audit", params={"actor": "alice"}, timeout=30,
                           headers={"Authorization": f"token {admin.new_token()}"}).json()["records"]
    recent = [(r["action"], r["target"], r["outcome"]) for r in records
              if datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp() >= started - 1]
    # From this test's spawn on (the window may hold the stop of a server of alice's that a test before stopped).
    spawned = recent[max(i for i, r in enumerate(recent) if r == ("spawn", "server:alice/", "succeeded")):]
    assert ("credentials", "server:alice/", "succeeded") in spawned
    assert spawned.count(("stop", "server:alice/", "succeeded")) == 1  # one stop, however often the hub polled
    assert any(r["action"] == "login" and r["outcome"] == "succeeded" for r in records)
    # No secret in the log: the credential record names when they expire, not what they are.
    credentials = next(r for r in records if r["action"] == "credentials")
    assert set(credentials["details"]) == {"credentials", "expires"} and s3.json()["SecretAccessKey"] not in str(records)


def test_an_admin_grants_and_revokes_a_budget_override_audited(hub, platform, authz):
    service = f"http://127.0.0.1:{platform.ports.service}/services/mlplatform/api/budgets"
    tokens = {name: {"Authorization": f"token {hub.login(name).new_token()}"} for name in ("admin", "alice", "bob")}
    until = "2999-01-01T00:00:00Z"
    for who in ("alice", "bob"):
        r = requests.post(f"{service}/team-vision/override", json={"until": until, "reason": "deadline"},
                          headers=tokens[who], timeout=30)
        authz.check(who, "grant a budget override", r, allowed=False)
    bad = requests.post(f"{service}/team-vision/override", json={"until": "tomorrow", "reason": "x"},
                        headers=tokens["admin"], timeout=30)
    assert bad.status_code == 400 and bad.json()["message"].startswith("until: 'tomorrow' is not allowed: an RFC 3339")
    past = requests.post(f"{service}/team-vision/override", json={"until": "2001-01-01T00:00:00Z", "reason": "x"},
                         headers=tokens["admin"], timeout=30)
    assert past.status_code == 400 and "it must be in the future" in past.json()["message"]
    granted = requests.post(f"{service}/team-vision/override", json={"until": until, "reason": "deadline"},
                            headers=tokens["admin"], timeout=30)
    authz.check("admin (platform admin)", "grant a budget override", granted, allowed=True)
    assert granted.status_code == 201 and granted.json()["override"]["granted_by"] == "admin"
    for who, allowed in (("alice", True), ("bob", False)):
        r = requests.get(f"{service}/team-vision/override", headers=tokens[who], timeout=30)
        authz.check(who, "read team-vision's budget override", r, allowed=allowed)
    assert requests.get(f"{service}/team-vision/override", headers=tokens["alice"],
                        timeout=30).json()["override"]["reason"] == "deadline"
    revoked = requests.delete(f"{service}/team-vision/override", headers=tokens["admin"], timeout=30)
    assert revoked.json() == {"revoked": 1}
    assert requests.get(f"{service}/team-vision/override", headers=tokens["alice"], timeout=30).json() == {
        "override": None}
    audit = requests.get(f"{service.rsplit('/budgets', 1)[0]}/audit", params={"target": "budget:team-vision"},
                         headers=tokens["admin"], timeout=30).json()["records"]
    assert [(r["actor"], r["action"], sorted(r["details"])) for r in audit][-2:] == [
        ("admin", "budget-override", ["granted"]), ("admin", "budget-override", ["revoked"])]


def test_who_may_use_the_promotion_endpoints(hub, platform, authz):
    """Each promotion endpoint of the service, for a member of the model's team, a member of another team
    (the bundled catalog lets other teams read), a platform admin and nobody."""
    _, alice = hub.start_server("alice")  # the hub makes team-vision's MLflow workspace before it starts
    _, bob = hub.start_server("bob")
    name = unique_name("service-authz")
    for accuracy in (0.95, 0.96):
        register_in_team(platform, name, accuracy)
    admin = hub.login("admin").new_token()
    api = f"{alice['MLPLATFORM_SERVICE_URL']}/api/models/{name}"
    actors = {"alice's server (team-vision)": (alice["JUPYTERHUB_API_TOKEN"], ""),
              "bob's server (team-nlp)": (bob["JUPYTERHUB_API_TOKEN"], ""),
              "admin (platform admin)": (admin, None), "no token": (None, None)}
    # (action, request, who may): reads are the team's, other teams' where the catalog lets them read, admins'.
    actions = [
        ("evaluate the gates", lambda h, s: requests.get(f"{api}/versions/1/gates", headers=h, timeout=60,
                                                         params={"team": TEAM, **({"server": s} if s is not None else {})}),
         {"alice's server (team-vision)", "admin (platform admin)"}),
        ("read the history", lambda h, s: requests.get(f"{api}/history", params={"team": TEAM}, headers=h, timeout=60),
         {"alice's server (team-vision)", "bob's server (team-nlp)", "admin (platform admin)"}),
        ("promote", lambda h, s: requests.post(f"{api}/versions/1/promote", headers=h, timeout=60,
                                               json={"team": TEAM, **({"server": s} if s is not None else {})}),
         {"alice's server (team-vision)"}),
        ("roll back", lambda h, s: requests.post(f"{api}/rollback", json={"team": TEAM}, headers=h, timeout=60),
         set()),  # refused to members and admins too: nothing to roll back to (409); to the others first (403)
    ]
    for action, call, allowed in actions:
        for actor, (token, server) in actors.items():
            if action == "promote" and actor == "admin (platform admin)":
                continue  # an admin may promote any team's model (test_promotion.py); not twice here
            r = call({"Authorization": f"token {token}"} if token else {}, server)
            status = 409 if action == "roll back" and actor.startswith(("alice", "admin")) else None
            authz.check(actor, action, r, allowed=actor in allowed, status=status)
    assert champion(platform, name) == "1"  # alice's promotion, and only hers
