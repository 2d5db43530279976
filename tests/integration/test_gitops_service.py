"""GitOps through the platform service, with the session's real hub, service and Git server (the local catalog
sets `gitops`): `api/gitops/<team>/<kind>/<name>` commits what a member sends to the team's file as that user,
refuses everyone else (printed as an authorization matrix) and anything the notebook's backend would not have
built, removes the file on DELETE, and audits each commit with its sha. What was committed is read from the
bare repository with git, never through the service."""

from __future__ import annotations

import subprocess
import uuid

import pytest
import requests
import yaml
from mlplatform.serving import spec
from mlplatform.serving.kubernetes import KubernetesServing, KubernetesServingConfig
from mlplatform.spark.job import SparkJob
from mlplatform.spark.kubernetes import KubernetesSparkBackend, KubernetesSparkConfig

from ..support.authz import authorization_matrix

TEAM = "team-vision"
ENV = {"MLFLOW_TRACKING_URI": "http://mlflow.mlplatform:5000"}


@pytest.fixture(scope="module")
def authz(request):
    yield from authorization_matrix(request)


@pytest.fixture(scope="module")
def tokens(platform):
    from ..support.hub import HubClient

    client = HubClient(platform)
    yield {name: client.login(name).new_token() for name in ("alice", "bob", "admin")}
    client.stop_all()


def url(platform, team: str, kind: str, name: str) -> str:
    return f"http://127.0.0.1:{platform.ports.service}/services/mlplatform/api/gitops/{team}/{kind}/{name}"


def call(method: str, platform, token: str | None, team: str, kind: str, name: str, body: dict | None = None):
    headers = {"Authorization": f"token {token}"} if token else {}
    return requests.request(method, url(platform, team, kind, name), json=body, headers=headers, timeout=60)


def ray_service(platform, name: str, user: str = "alice", team: str = TEAM, version: str = "3") -> dict:
    """The RayService the notebook's Kubernetes backend builds for `user` (pure: no cluster needed)."""
    catalog = platform.load_catalog()
    config = KubernetesServingConfig.for_catalog(catalog, namespace=catalog.teams[team].namespace, team=team,
                                                 user=user)
    request = spec.serving_request(name=name, model_uri=f"models:/{name}@champion", replicas=1)
    return KubernetesServing(config).manifest(request, model_version=version, env=ENV,
                                              owner={"user": user, "team": team})


def git(platform, *args: str) -> str:
    bare = platform.data_dir / "git" / "platform" / "gitops.git"
    return subprocess.run(["git", f"--git-dir={bare}", *args], capture_output=True, text=True, check=True).stdout


def audit(platform, admin: str, **filters) -> list[dict]:
    r = requests.get(f"http://127.0.0.1:{platform.ports.service}/services/mlplatform/api/audit", params=filters,
                     headers={"Authorization": f"token {admin}"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["records"]


def test_a_member_commits_a_rayservice_as_herself_and_removes_it(platform, tokens, authz):
    name = f"gitops-{uuid.uuid4().hex[:6]}"
    path = f"teams/{TEAM}/serving/{name}.yaml"
    document = ray_service(platform, name)

    r = call("PUT", platform, tokens["alice"], TEAM, "serving", name, {"object": document, "message": "first model"})
    authz.check("alice (team-vision)", "PUT gitops/team-vision/serving/<name>", r, allowed=True)
    answer = r.json()
    commit = answer["commit"]
    assert answer == {"action": "deploy", "kind": "serving", "team": TEAM, "name": name, "mode": "direct",
                      "waiting_for": "Argo CD to sync it", "commit": {
                          **commit, "branch": "main", "path": path, "author": "alice", "change": "added",
                          "short": commit["sha"][:7], "url": None}}
    # The commit on the server: the very object, authored by alice, committed by the platform.
    assert yaml.safe_load(git(platform, "show", f"{commit['sha']}:{path}")) == document
    assert git(platform, "log", "-1", "--format=%an <%ae>|%cn <%ce>", commit["sha"]).strip() == \
        "alice <alice@mlplatform.local>|mlplatform <mlplatform@mlplatform.local>"
    message = git(platform, "log", "-1", "--format=%B", commit["sha"])
    assert message.startswith(f"Deploy RayService {TEAM}/{name}\n\nfirst model\n\nMlplatform-User: alice\n")
    assert git(platform, "rev-parse", "main").strip() == commit["sha"]

    r = call("GET", platform, tokens["alice"], TEAM, "serving", name)
    authz.check("alice (team-vision)", "GET gitops/team-vision/serving/<name>", r, allowed=True)
    assert r.json()["object"] == document and r.json()["commit"]["sha"] == commit["sha"]

    redeployed = call("PUT", platform, tokens["alice"], TEAM, "serving", name, {"object": document})
    assert redeployed.status_code == 201 and redeployed.json()["action"] == "redeploy"
    assert redeployed.json()["commit"]["change"] == "unchanged"  # a redeploy is a commit, even of the same object

    r = call("DELETE", platform, tokens["alice"], TEAM, "serving", name, {"message": "retired"})
    authz.check("alice (team-vision)", "DELETE gitops/team-vision/serving/<name>", r, allowed=True)
    removed = r.json()["commit"]
    assert (r.json()["action"], removed["change"], r.json()["waiting_for"]) == ("delete", "removed",
                                                                              "Argo CD to prune it")
    assert path not in git(platform, "ls-tree", "-r", "--name-only", "main").split()
    gone = call("GET", platform, tokens["alice"], TEAM, "serving", name).json()
    assert (gone["object"], gone["commit"]["sha"], gone["commit"]["change"]) == (None, removed["sha"], "removed")
    assert call("DELETE", platform, tokens["alice"], TEAM, "serving", name).status_code == 404

    records = audit(platform, tokens["admin"], target=f"model:{TEAM}/{name}")
    assert [(r["action"], r["outcome"], r["actor"], r["details"]["commit"]) for r in records] == [
        ("deploy", "succeeded", "alice", commit["sha"]),
        ("redeploy", "succeeded", "alice", redeployed.json()["commit"]["sha"]),
        ("delete", "succeeded", "alice", removed["sha"])]


def test_no_one_commits_to_another_teams_path(platform, tokens, authz):
    name = f"gitops-{uuid.uuid4().hex[:6]}"
    head = git(platform, "rev-parse", "main")
    for actor, token in (("bob (team-nlp)", tokens["bob"]), ("no token", None)):
        document = ray_service(platform, name, user="bob")
        r = call("PUT", platform, token, TEAM, "serving", name, {"object": document})
        authz.check(actor, "PUT gitops/team-vision/serving/<name>", r, allowed=False)
        authz.check(actor, "GET gitops/team-vision/serving/<name>",
                    call("GET", platform, token, TEAM, "serving", name), allowed=False)
        authz.check(actor, "DELETE gitops/team-vision/serving/<name>",
                    call("DELETE", platform, token, TEAM, "serving", name), allowed=False)
    assert "bob may not deploy serving" in call("PUT", platform, tokens["bob"], TEAM, "serving", name,
                                                {"object": ray_service(platform, name, user="bob")}).json()["message"]
    assert git(platform, "rev-parse", "main") == head
    refused = audit(platform, tokens["admin"], target=f"model:{TEAM}/{name}", outcome="refused")
    assert {r["actor"] for r in refused} == {"bob"}


@pytest.mark.parametrize("field, tamper, message", [
    ("metadata.namespace", lambda d: d["metadata"].update(namespace="team-nlp"),
     "object.metadata.namespace: 'team-nlp' is not allowed; allowed: 'team-vision'"),
    ("user label", lambda d: d["metadata"]["labels"].update({"mlplatform.io/user": "bob"}),
     "object.metadata.labels[mlplatform.io/user]: 'bob' is not allowed; allowed: 'alice'"),
    ("kind", lambda d: d.update(kind="Deployment"), "object.kind: 'Deployment' is not allowed; allowed: 'RayService'"),
    ("name", lambda d: d["metadata"].update(name="other"), "object.metadata.name: 'other' is not allowed"),
    ("gpu type", lambda d: d["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
     ["resources"].update(limits={"nvidia.com/gpu": 1}), "would not admit this RayService: labels[mlplatform.io/gpu-type]"),
])
def test_an_object_the_backend_would_not_build_is_refused_and_nothing_committed(platform, tokens, authz, field,
                                                                                  tamper, message):
    name = f"gitops-{uuid.uuid4().hex[:6]}"
    document = ray_service(platform, name)
    tamper(document)
    head = git(platform, "rev-parse", "main")
    r = call("PUT", platform, tokens["alice"], TEAM, "serving", name, {"object": document})
    authz.check("alice (team-vision)", f"PUT gitops/team-vision/serving/<name> with another {field}", r,
                allowed=False, status=400)
    assert message in r.json()["message"]
    assert git(platform, "rev-parse", "main") == head


def test_bad_requests_name_the_field_and_what_is_allowed(platform, tokens):
    name = f"gitops-{uuid.uuid4().hex[:6]}"
    cases = [
        ("PUT", "serving", name, {"message": "no object"}, 400, "object is missing"),
        ("PUT", "serving", name, {"object": ray_service(platform, name), "extra": 1}, 400, "unknown field(s) 'extra'"),
        ("PUT", "serving", name, {"object": [1]}, 400, "object: list is not allowed"),
        ("PUT", "serving", name, {"object": ray_service(platform, name), "message": 5}, 400, "message: 5 is not allowed"),
        ("PUT", "models", name, {"object": {}}, 404, "kind 'models' is not allowed; allowed: serving, spark"),
        ("GET", "serving", "Not_A_Name", None, 400, "name 'Not_A_Name' is not allowed: a DNS label"),
    ]
    for method, kind, target, body, status, message in cases:
        r = call(method, platform, tokens["alice"], TEAM, kind, target, body)
        assert (r.status_code, message in r.json()["message"]) == (status, True), (method, kind, body, r.text)
    r = call("GET", platform, tokens["alice"], "team-nowhere", "serving", name)
    assert r.status_code == 404 and "team 'team-nowhere' is not a team of the catalog" in r.json()["message"]


def test_a_spark_application_is_committed_to_the_teams_spark_path(platform, tokens, authz, tmp_path):
    catalog = platform.load_catalog()
    config = KubernetesSparkConfig.for_catalog(catalog, KubernetesSparkConfig(
        namespace=TEAM, team=TEAM, user="alice", bucket="platform", team_prefix=f"teams/{TEAM}/"))
    app_id = f"etl-{uuid.uuid4().hex[:8]}"
    document = KubernetesSparkBackend(config).manifest(SparkJob(name="etl", main_file="s3a://platform/etl.py"),
                                                       app_id=app_id)
    r = call("PUT", platform, tokens["alice"], TEAM, "spark", app_id, {"object": document})
    authz.check("alice (team-vision)", "PUT gitops/team-vision/spark/<app id>", r, allowed=True)
    assert r.json()["action"] == "submit"
    assert yaml.safe_load(git(platform, "show", f"main:teams/{TEAM}/spark/{app_id}.yaml")) == document
    r = call("DELETE", platform, tokens["alice"], TEAM, "spark", app_id)
    assert (r.status_code, r.json()["action"]) == (200, "cancel")
