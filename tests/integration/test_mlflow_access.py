"""MLflow's own access control with the hub's tokens, against the real hub, provider and MLflow server.

Each actor is a real notebook server's environment (MLflow's `mlplatform` auth plugin asks the hub for
tokens with the server's own token), or the platform identity, or nobody; what each may do with team
team-vision's experiments and models is printed as an authorization matrix. The bundled catalog lets
other teams read.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import jwt
import pytest
import requests

from hub_config.mlflow_access.tokens import AUDIENCE, ISSUER, PLATFORM_IDENTITY

from ..support.authz import authorization_matrix
from ..support.mlflow_access import admin_api, provision, s3_admin, user_token, workspace
from ..support.mlflow_models import register_model, unique_name

TEAM = "team-vision"
TOKEN_SCOPE = "custom:mlplatform:mlflow-token"

# Runs in an actor's environment: each action on team-vision's resources, its HTTP status (200 = done).
ACTIONS = r"""
import json, sys
import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

team, model, version, own_model, actor = sys.argv[1:6]
mlflow.set_workspace(team)
client = MlflowClient()
results = {}

def attempt(action, fn):
    try:
        fn()
        results[action] = 200
    except MlflowException as e:
        results[action] = e.get_http_status_code()

experiment = {}
attempt("read the team's experiment", lambda: experiment.update(id=client.get_experiment_by_name(team).experiment_id))
attempt("read a model version", lambda: client.get_model_version(model, version))
attempt("search the team's models", lambda: client.search_registered_models() and None)
attempt("log a run to the team's experiment", lambda: client.create_run(experiment.get("id") or "1"))
attempt("create an experiment", lambda: client.create_experiment(f"{actor}-experiment"))
attempt("register a model", lambda: client.create_registered_model(f"{model}-by-{actor}"))
attempt("set alias @staging", lambda: client.set_registered_model_alias(model, "staging", version))
attempt("tag a model", lambda: client.set_registered_model_tag(model, "reviewed-by", actor))
attempt("delete alice's model", lambda: client.delete_registered_model(own_model))
print("RESULTS " + json.dumps(results))
"""


class Outcome:
    """An action's result in the shape authz.check reads."""

    def __init__(self, status: int, message: str = ""):
        self.status_code, self.text = status, message

    def json(self):
        return {"message": self.text}


@pytest.fixture(scope="module")
def authz(request):
    yield from authorization_matrix(request)


def start(hub, name, **options):
    session = hub.login(name)
    assert session.start(**{"profile": "cpu", **options}).status_code in (201, 202)
    session.wait_ready()
    return session, hub.server_env(name)


def act(env: dict, *args: str) -> dict[str, int]:
    out = subprocess.run([sys.executable, "-c", ACTIONS, TEAM, *args], env=env, capture_output=True, text=True,
                         timeout=240)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULTS ")), None)
    assert line, f"the actor's script failed:\n{out.stderr[-3000:]}"
    return json.loads(line.removeprefix("RESULTS "))


def test_the_server_environment_names_the_plugin_the_token_url_and_the_team_workspace(hub, platform):
    _, env = start(hub, "alice")
    assert env["MLFLOW_TRACKING_AUTH"] == "mlplatform"
    assert env["MLFLOW_WORKSPACE"] == TEAM
    assert env["MLPLATFORM_MLFLOW_TOKEN_URL"] == env["JUPYTERHUB_API_URL"] + "/mlplatform/mlflow-token/alice"
    assert not {"MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD"} & set(env)
    token = requests.get(env["MLPLATFORM_MLFLOW_TOKEN_URL"], timeout=30,
                         headers={"Authorization": f"token {env['JUPYTERHUB_API_TOKEN']}"})
    assert token.status_code == 200 and token.headers["Cache-Control"] == "no-store"
    claims = jwt.decode(token.json()["token"], options={"verify_signature": False})
    assert (claims["iss"], claims["aud"], claims["sub"], claims["team"]) == (ISSUER, AUDIENCE, "alice", TEAM)
    # alice is in team-vision only; the catalog lets every team read the others'.
    assert claims["roles"] == ["team-nlp/mlplatform-readers", "team-vision/mlplatform-members"]
    lifetime = platform.load_catalog().mlflow.access.token_lifetime_seconds
    assert abs(claims["exp"] - time.time() - lifetime) < 30 and token.json()["expires_at"] == claims["exp"]


def test_who_may_read_and_change_a_teams_experiments_and_models(hub, platform, authz):
    servers = {"alice (team-vision)": start(hub, "alice")[1], "bob (team-nlp)": start(hub, "bob")[1],
               "dana (both teams, team-nlp server)": start(hub, "dana", team="team-nlp")[1],
               "admin (hub admin, team-nlp)": start(hub, "admin")[1]}
    nobody = {k: v for k, v in servers["alice (team-vision)"].items()
              if k not in ("MLFLOW_TRACKING_AUTH", "MLFLOW_TRACKING_TOKEN")}
    with workspace(TEAM), s3_admin(platform):  # as the platform identity (the test process)
        shared = register_model(platform.mlflow_url, unique_name("shared"), experiment=TEAM)
    # alice's own model: only she (MANAGE, as its creator) and the platform may delete it.
    alices = unique_name("alices")
    register_as(servers["alice (team-vision)"], alices)

    allowed = {
        "alice (team-vision)": "all",
        "dana (both teams, team-nlp server)": "all but delete",
        "bob (team-nlp)": "read", "admin (hub admin, team-nlp)": "read", "no token": "none",
    }
    reads = {"read the team's experiment", "read a model version", "search the team's models"}
    # alice last: her delete must come after everyone else's attempts.
    for actor in [a for a in allowed if a != "alice (team-vision)"] + ["alice (team-vision)"]:
        env = nobody if actor == "no token" else servers[actor]
        results = act(env, shared.name, shared.version, alices, actor.split()[0])
        for action, status in results.items():
            may = {"all": True, "all but delete": action != "delete alice's model", "read": action in reads,
                   "none": False}[allowed[actor]]
            authz.check(actor, action, Outcome(status), allowed=may, status=401 if actor == "no token" else 403)


def register_as(env: dict, name: str) -> None:
    script = ("import sys, mlflow; mlflow.set_workspace(sys.argv[1]); "
              "mlflow.MlflowClient().create_registered_model(sys.argv[2])")
    out = subprocess.run([sys.executable, "-c", script, TEAM, name], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_a_team_that_keeps_its_models_to_itself_is_invisible_to_others(platform):
    """Membership comes from the token: a user with no role in a workspace sees nothing of it."""
    catalog_roles = ["team-vision/mlplatform-members"]  # a team whose catalog says `mlflow_other_teams: none`
    provision(platform, "team-nlp")
    with workspace("team-nlp"), s3_admin(platform):
        secret = register_model(platform.mlflow_url, unique_name("secret"), experiment="team-nlp")
    alice = requests.Session()
    alice.headers.update({"Authorization": f"Bearer {user_token(platform, 'alice', catalog_roles)}",
                          "X-MLFLOW-WORKSPACE": "team-nlp"})
    api = f"{platform.mlflow_url}/api/2.0/mlflow"
    assert alice.get(f"{api}/registered-models/get", params={"name": secret.name}).status_code == 403
    found = alice.get(f"{api}/registered-models/search", params={"max_results": 100})
    assert found.status_code in (200, 403)
    assert secret.name not in found.text


def test_nobody_can_squat_a_teams_experiment_name(hub, platform, authz):
    bob = requests.Session()
    bob.headers["Authorization"] = f"Bearer {user_token(platform, 'bob', ['team-nlp/mlplatform-members'])}"
    api = f"{platform.mlflow_url}/api/2.0/mlflow/experiments/create"
    authz.check("bob (team-nlp)", "create experiment 'team-vision' in team-vision's workspace",
                bob.post(api, json={"name": "team-vision"}, headers={"X-MLFLOW-WORKSPACE": TEAM}), allowed=False)
    authz.check("bob (team-nlp)", "create experiment 'team-vision' in the default workspace",
                bob.post(api, json={"name": "team-vision"}), allowed=False)
    # In his own workspace the name is his team's business: team-vision's experiment is elsewhere.
    start(hub, "alice")  # the hub provisions team-vision before her server starts
    found = admin_api(platform, TEAM).get(f"{platform.mlflow_url}/api/2.0/mlflow/experiments/get-by-name",
                                          params={"experiment_name": TEAM})
    assert found.status_code == 200 and found.json()["experiment"]["artifact_location"].startswith(
        "s3://platform/teams/team-vision/mlflow/")


def test_roles_follow_the_newest_token(platform):
    """Removed from a team (the hub's next token lacks the role): writes there stop, reads follow the catalog."""
    api = f"{platform.mlflow_url}/api/2.0/mlflow"
    name = unique_name("carol")

    def create(roles):
        headers = {"Authorization": f"Bearer {user_token(platform, 'carol', roles)}", "X-MLFLOW-WORKSPACE": TEAM}
        return requests.post(f"{api}/registered-models/create", json={"name": f"{name}-{len(roles)}"},
                             headers=headers, timeout=30)

    assert create(["team-vision/mlplatform-members", "team-nlp/mlplatform-members"]).status_code == 200
    time.sleep(1.1)  # a newer `iat`
    assert create(["team-vision/mlplatform-readers", "team-nlp/mlplatform-members", "x/y", "z"]).status_code == 403


@pytest.mark.parametrize("case", ["expired", "signed with a guessed secret", "a user token naming the platform",
                                  "another audience", "not a JWT"])
def test_forged_and_expired_tokens_are_refused(platform, case, authz):
    key = platform.mlflow_signing_key().read_bytes()
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 600, "typ": "user",
              "roles": ["team-vision/mlplatform-members"]}
    token = {
        "expired": lambda: jwt.encode({**claims, "iat": now - 700, "exp": now - 60}, key, algorithm="RS256"),
        "signed with a guessed secret": lambda: jwt.encode(claims, "secret", algorithm="HS256"),
        "a user token naming the platform": lambda: jwt.encode({**claims, "sub": PLATFORM_IDENTITY}, key,
                                                               algorithm="RS256"),
        "another audience": lambda: jwt.encode({**claims, "aud": "jupyterhub"}, key, algorithm="RS256"),
        "not a JWT": lambda: "abc123",
    }[case]()
    r = requests.get(f"{platform.mlflow_url}/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                     headers={"Authorization": f"Bearer {token}"}, timeout=30)
    authz.check(f"a token: {case}", "search experiments", r, allowed=False, status=401)
    assert r.text.startswith("invalid MLflow token") and token not in r.text


def test_permissions_come_from_the_catalog_not_from_a_creator(platform):
    alice = {"Authorization": f"Bearer {user_token(platform, 'alice', ['team-vision/mlplatform-members'])}",
             "X-MLFLOW-WORKSPACE": TEAM}
    name = unique_name("granted")
    api = f"{platform.mlflow_url}/api/2.0/mlflow"
    assert requests.post(f"{api}/registered-models/create", json={"name": name}, headers=alice).status_code == 200
    grant = requests.post(f"{api}/users/permissions/grant", headers=alice, timeout=30, json={
        "username": "bob", "resource_type": "registered_model", "resource_id": name, "permission": "EDIT"})
    assert grant.status_code == 403 and "from the platform's catalog" in grant.text


def test_who_may_get_a_users_mlflow_token(hub, platform, authz):
    _, env = start(hub, "alice")
    tokens = {"alice's server token": env["JUPYTERHUB_API_TOKEN"],
              "alice's token limited to read:users:name": hub.login("alice").new_token(["read:users:name!user"]),
              "admin's API token (all their scopes)": hub.login("admin").new_token(), "no credentials": None}
    cells = [("alice's server token", "alice", True), ("alice's server token", "bob", False),
             ("alice's token limited to read:users:name", "alice", False),
             ("admin's API token (all their scopes)", "alice", False), ("no credentials", "alice", False)]
    for actor, target, allowed in cells:
        token = tokens[actor]
        r = requests.get(f"{platform.hub_url}/hub/api/mlplatform/mlflow-token/{target}", timeout=30,
                         headers={"Authorization": f"token {token}"} if token else {})
        authz.check(actor, f"GET mlflow-token/{target}", r, allowed=allowed)
        if not allowed and token:
            assert f"(scope {TOKEN_SCOPE}!user={target})" in r.json()["message"]


def test_the_mlflow_ui_logs_in_through_the_hub(hub, platform):
    # A browser without a session is sent to the hub's login page for MLflow.
    page = requests.get(platform.mlflow_url + "/", headers={"Accept": "text/html"}, allow_redirects=False, timeout=30)
    assert page.status_code == 302
    assert page.headers["Location"].startswith(f"{platform.hub_url}/hub/mlplatform/mlflow-login?next=")
    alice = hub.login("alice")
    login = alice.http.get(f"{platform.hub_url}/hub/mlplatform/mlflow-login", params={"next": "/#/experiments"})
    assert login.status_code == 200 and f'action="{platform.mlflow_url}/mlplatform-login"' in login.text
    token = login.text.split('name="token" value="')[1].split('"')[0]
    browser = requests.Session()
    posted = browser.post(f"{platform.mlflow_url}/mlplatform-login", data={"token": token, "next": "/#/experiments"},
                          allow_redirects=False, timeout=30)
    assert posted.status_code == 303 and posted.headers["Location"] == "/#/experiments"
    cookie = posted.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert browser.get(platform.mlflow_url + "/", timeout=30).status_code == 200
    listed = browser.get(f"{platform.mlflow_url}/ajax-api/2.0/mlflow/experiments/search", params={"max_results": 50},
                         headers={"X-MLFLOW-WORKSPACE": TEAM}, timeout=30)
    assert listed.status_code == 200 and TEAM in [e["name"] for e in listed.json()["experiments"]]
    forged = requests.post(f"{platform.mlflow_url}/mlplatform-login", data={"token": "x.y.z"}, allow_redirects=False)
    assert forged.status_code == 401


def test_a_model_the_team_may_not_read_is_refused_before_anything_is_deployed(platform, monkeypatch):
    """The serving API resolves the model with the server user's own MLflow token first: MLflow's
    refusal is a 403 naming the model, and the backend is never called."""
    from mlflow import MlflowClient

    from mlplatform.serving import ModelForbidden
    from mlplatform.serving.models import resolve

    provision(platform, "team-nlp")
    with workspace("team-nlp"), s3_admin(platform):
        secret = register_model(platform.mlflow_url, unique_name("secret"), experiment="team-nlp")
    # alice's roles when team-nlp keeps its models to itself (mlflow_other_teams: none).
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", user_token(platform, "alice", ["team-vision/mlplatform-members"]))
    with workspace("team-nlp"), pytest.raises(ModelForbidden) as refused:
        resolve(secret.uri, MlflowClient(platform.mlflow_url))
    assert refused.value.status_code == 403
    assert str(refused.value).startswith(f"MLflow refuses registered model {secret.name!r} to this server's user (403")
