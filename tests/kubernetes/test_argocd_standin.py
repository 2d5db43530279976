"""The Argo CD stand-in (tests/support/argocd.py) against the fake API server: the Applications `mlplatform render`
writes, a real bare Git repository, the team's files applied with the controller's identity (RBAC and the CRD
schemas apply), refusals in the status, pruning, the project's namespace, the rendered AppProjects (a team's
namespace and the platform's kinds only), and the local Git server over HTTP."""

from __future__ import annotations

import copy
import os
import secrets
import subprocess
from pathlib import Path

import pytest
import yaml
from mlplatform.serving import spec
from mlplatform.spark import SparkJob
from mlplatform.spark.spec import spark_application

from mlplatform_core.catalog import parse_catalog
from hub_config.local import git_server
from hub_config.render.gitops import argocd_application, argocd_applications, argocd_projects

from ..support.argocd import STANDARD_RULES, TRACKING, ArgoCd, glob_regex
from ..support.git_server import git_server as running_git_server

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "helm-values" / "platform.yaml"
GITOPS = {"repository": "https://git.example.org/platform/deployments.git", "branch": "main",
          "committer": {"name": "mlplatform", "email": "mlplatform@example.org"}}
NS, OTHER = "team-vision", "team-nlp"
APP = "mlplatform-team-vision"
PORT = int(os.environ.get("MLPLATFORM_TEST_PORT_BASE", "25800")) + 6310
LABELS = {"mlplatform.io/team": NS, "mlplatform.io/user": "alice"}


def catalog(**gitops):
    data = yaml.safe_load(EXAMPLE.read_text())
    data["gitops"] = {**copy.deepcopy(GITOPS), **gitops}
    return parse_catalog(data, str(EXAMPLE), environ={})


CATALOG = catalog()


def ray_service(name: str = "iris", namespace: str | None = NS, replicas: int = 1) -> dict:
    request = spec.serving_request(name=name, model_uri=f"models:/{name}@champion", replicas=replicas)
    obj = spec.ray_service(request, namespace=NS, model_version="3", labels=LABELS)
    if namespace is None:
        del obj["metadata"]["namespace"]
    else:
        obj["metadata"]["namespace"] = namespace
    return obj


def spark(name: str = "wordcount-3f9a1c2e") -> dict:
    job = SparkJob(name="wordcount", main_file="s3a://platform/teams/team-vision/wordcount.py")
    return spark_application(job, app_id=name, namespace=NS, image="mlplatform/spark:0.1.0", user="alice",
                             team=NS, service_account="mlplatform-spark")


def dump(*objects: dict) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False)


class Repo:
    """A bare repository and commits made straight into it (plumbing: no work tree)."""

    def __init__(self, path: Path, files: dict[str, str]):
        self.path = path
        # init_repository makes a flat tree: the files in directories come in a second commit.
        flat = {file: text for file, text in files.items() if "/" not in file}
        git_server.init_repository(path, files=flat, committer=("mlplatform", "p@example.org"), message="start")
        self.env = {"PATH": os.environ["PATH"], "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
                    "GIT_AUTHOR_NAME": "alice", "GIT_AUTHOR_EMAIL": "alice@example.org",
                    "GIT_COMMITTER_NAME": "mlplatform", "GIT_COMMITTER_EMAIL": "p@example.org",
                    "GIT_INDEX_FILE": str(path / "stand-in-index")}
        self.commit_files({file: text for file, text in files.items() if file not in flat}, "The teams' files")

    def git(self, *args: str, stdin: str | None = None) -> str:
        return subprocess.run(["git", f"--git-dir={self.path}", *args], input=stdin, env=self.env, check=True,
                              capture_output=True, text=True).stdout.strip()

    @property
    def head(self) -> str:
        return self.git("rev-parse", "main")

    def commit_files(self, changes: dict[str, str | None], message: str = "change") -> str:
        """A commit on main writing each file (None: removing it); returns its id."""
        self.git("read-tree", "main")
        entries = [f"0 {'0' * 40}\t{file}" if text is None
                   else f"100644 {self.git('hash-object', '-w', '--stdin', stdin=text)}\t{file}"
                   for file, text in changes.items()]
        self.git("update-index", "--index-info", stdin="\n".join(entries) + "\n")
        tree = self.git("write-tree")
        sha = self.git("commit-tree", tree, "-p", "main", "-m", message)
        self.git("update-ref", "refs/heads/main", sha)
        return sha


FILES = {
    "README.md": "What users deploy\n",
    "teams/team-vision/README.md": "not a manifest\n",
    "teams/team-vision/serving/iris.yaml": dump(ray_service("iris")),
    "teams/team-vision/spark/wordcount-3f9a1c2e.yaml": dump(spark()),
    # In the team's directory but outside `include`: never applied.
    "teams/team-vision/notes.yaml": dump(ray_service("notes")),
    "teams/team-vision/serving/drafts/old.yaml.bak": dump(ray_service("old")),
    # Outside the team's directory: the Backstage Component, another team's file.
    "catalog-info/team-vision/iris.yaml": yaml.safe_dump({"apiVersion": "backstage.io/v1alpha1", "kind": "Component",
                                                          "metadata": {"name": "iris"}}),
}


@pytest.fixture
def cluster(fake_kube):
    fake_kube.namespace(NS)
    fake_kube.namespace(OTHER)
    return fake_kube


@pytest.fixture
def repo(tmp_path):
    return Repo(tmp_path / "deployments.git", FILES)


@pytest.fixture
def argocd(cluster, repo):
    with ArgoCd(cluster, argocd_applications(CATALOG), repository=repo.path) as argocd:
        yield argocd


def writes(fake, kind: str = "rayservices") -> list[tuple[str, str]]:
    return [(r.verb, r.name) for r in fake.requests if r.resource == kind and r.verb in ("create", "update", "delete")]


def test_include_is_argocds_glob():
    include = glob_regex(argocd_application(CATALOG, NS)["spec"]["source"]["directory"]["include"])
    assert include.pattern == r"(?:serving/.*\.yaml|spark/.*\.yaml)"
    assert include.fullmatch("serving/iris.yaml") and include.fullmatch("spark/x.yaml")
    assert include.fullmatch("serving/drafts/a.yaml")  # gobwas without separators: '*' matches '/' too
    assert not include.fullmatch("notes.yaml") and not include.fullmatch("serving/iris.yml")
    assert glob_regex("[!a-c]?.y*ml").fullmatch("dx.yaml") and not glob_regex("[!a-c]?.yaml").fullmatch("ax.yaml")


def test_sync_applies_the_teams_files_as_argocd_prunes_and_heals(argocd, cluster, repo):
    status = argocd.sync()
    iris = cluster.get("rayservices", "iris", NS)  # created through the API: validated against the KubeRay CRD
    assert iris["spec"] == ray_service()["spec"] and iris["metadata"]["labels"] == ray_service()["metadata"]["labels"]
    assert iris["metadata"]["annotations"][TRACKING] == f"{APP}:ray.io/RayService:{NS}/iris"
    job = cluster.get("sparkapplications", "wordcount-3f9a1c2e", NS)
    assert job["metadata"]["annotations"][TRACKING] == f"{APP}:sparkoperator.k8s.io/SparkApplication:{NS}/wordcount-3f9a1c2e"
    # Only the kinds' files: notes.yaml and serving/drafts/old.yaml.bak (not a manifest name) are never applied.
    assert [r["metadata"]["name"] for r in cluster.list("rayservices")] == ["iris"]
    assert status[APP] == {"sync": "Synced", "revision": repo.head, "phase": "Succeeded", "message": "",
                           "resources": [
        {"group": "ray.io", "kind": "RayService", "namespace": NS, "name": "iris",
         "file": "teams/team-vision/serving/iris.yaml", "status": "Synced",
         "message": "rayservice.ray.io/iris created"},
        {"group": "sparkoperator.k8s.io", "kind": "SparkApplication", "namespace": NS, "name": "wordcount-3f9a1c2e",
         "file": "teams/team-vision/spark/wordcount-3f9a1c2e.yaml", "status": "Synced",
         "message": "sparkapplication.sparkoperator.k8s.io/wordcount-3f9a1c2e created"}]}
    # The other team has no directory yet: Argo CD cannot make its target state (and so neither applies nor prunes).
    assert status["mlplatform-team-nlp"]["sync"] == "Unknown"
    assert status["mlplatform-team-nlp"]["message"] == "Failed to load target state: teams/team-nlp: app path does not exist"

    # Synced: a pass writes nothing. Drift (kubectl edit, a label added by someone else) is put back, the label kept.
    cluster.clear_requests()
    argocd.sync()
    assert writes(cluster) == []
    cluster.patch("rayservices", "iris", {"spec": {"serviceUnhealthySecondThreshold": 7},
                                          "metadata": {"labels": {"someone/else": "x"}}}, NS)
    assert argocd.sync()[APP]["resources"][0]["message"] == "rayservice.ray.io/iris configured"
    healed = cluster.get("rayservices", "iris", NS)
    assert healed["spec"] == ray_service()["spec"]
    assert healed["metadata"]["labels"] == {**ray_service()["metadata"]["labels"], "someone/else": "x"}

    # A change in Git is an update of the same object (its uid kept); a label Git drops is removed.
    changed = ray_service(replicas=2)
    changed["metadata"]["labels"] = {"mlplatform.io/team": NS}
    sha = repo.commit_files({"teams/team-vision/serving/iris.yaml": dump(changed)}, "Scale iris")
    assert argocd.sync()[APP]["revision"] == sha
    updated = cluster.get("rayservices", "iris", NS)
    assert updated["metadata"]["uid"] == iris["metadata"]["uid"] and updated["spec"] == changed["spec"]
    assert updated["metadata"]["labels"] == {"mlplatform.io/team": NS, "someone/else": "x"}

    # The file removed: the object is pruned; the job stays.
    sha = repo.commit_files({"teams/team-vision/serving/iris.yaml": None}, "Delete iris")
    status = argocd.sync()[APP]
    assert cluster.get("rayservices", "iris", NS) is None and cluster.get("sparkapplications", "wordcount-3f9a1c2e", NS)
    assert (status["sync"], status["revision"], status["phase"]) == ("Synced", sha, "Succeeded")
    assert [(r["name"], r["status"]) for r in status["resources"]] == [("wordcount-3f9a1c2e", "Synced"),
                                                                       ("iris", "Pruned")]



def test_the_last_object_is_pruned_only_with_allow_empty_and_while_the_directory_exists(cluster, repo):
    """Argo CD's automated sync refuses to prune every object of an Application unless `allowEmpty`; and a team
    directory gone from Git (git keeps no empty directory) is "app path does not exist": nothing is synced or
    pruned, allowEmpty or not."""
    app = argocd_application(CATALOG, NS)
    app["spec"]["syncPolicy"]["automated"] = {"prune": True, "selfHeal": True}
    with ArgoCd(cluster, [app], repository=repo.path) as argocd:
        argocd.sync()
        sha = repo.commit_files({"teams/team-vision/serving/iris.yaml": None,
                                 "teams/team-vision/spark/wordcount-3f9a1c2e.yaml": None})
        status = argocd.sync()[APP]
        assert (status["sync"], status["message"]) == (
            "OutOfSync", f"Skipping sync attempt to {sha}: auto-sync will wipe out all resources")
        assert [r["status"] for r in status["resources"]] == ["RequiresPruning", "RequiresPruning"]
        assert cluster.get("rayservices", "iris", NS) and cluster.get("sparkapplications", "wordcount-3f9a1c2e", NS)

        argocd.sync_manually(APP, prune=True)  # a person's sync with prune has no such guard
        assert cluster.list("rayservices") == [] and cluster.list("sparkapplications") == []

        argocd.applications[0]["spec"]["syncPolicy"]["automated"]["allowEmpty"] = True
        repo.commit_files({"teams/team-vision/serving/iris.yaml": dump(ray_service("iris"))})
        assert argocd.sync()[APP]["sync"] == "Synced" and cluster.get("rayservices", "iris", NS)
        repo.commit_files({"teams/team-vision/serving/iris.yaml": None})
        assert argocd.sync()[APP]["sync"] == "Synced" and cluster.list("rayservices") == []  # allowEmpty: pruned

        repo.commit_files({"teams/team-vision/serving/iris.yaml": dump(ray_service("iris"))})
        argocd.sync()
        repo.commit_files({file: None for file in repo.git("ls-tree", "-r", "--name-only", "main").split()
                           if file.startswith("teams/team-vision/")})
        status = argocd.sync()[APP]
        assert (status["sync"], status["message"]) == (
            "Unknown", "Failed to load target state: teams/team-vision: app path does not exist")
        assert cluster.get("rayservices", "iris", NS) is not None  # left running


def test_refused_objects_are_in_the_status_and_the_others_are_applied(argocd, cluster, repo):
    bad = ray_service("bad")
    bad["spec"]["replicas"] = 2  # not a RayService field: the CRD schema refuses it (422)
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "b"}}
    sha = repo.commit_files({"teams/team-vision/serving/bad.yaml": dump(bad),
                             "teams/team-vision/serving/settings.yaml": dump(config_map)})
    status = argocd.sync()[APP]
    assert cluster.get("rayservices", "iris", NS) and cluster.get("sparkapplications", "wordcount-3f9a1c2e", NS)
    assert cluster.get("rayservices", "bad", NS) is None and cluster.get("configmaps", "settings", NS) is None
    results = {r["name"]: (r["status"], r["message"]) for r in status["resources"]}
    invalid = results["bad"][1]
    assert results["bad"][0] == "SyncFailed"
    assert invalid == 'RayService "bad" is invalid: spec.replicas: unknown field "spec.replicas"'  # the API's 422
    forbidden = ('configmaps is forbidden: User "system:serviceaccount:argocd:argocd-application-controller" '
                 'cannot create resource "configmaps" in API group "" in the namespace "team-vision"')
    assert results["settings"] == ("SyncFailed", forbidden)  # the controller's own identity, checked by RBAC
    assert results["iris"][0] == results["wordcount-3f9a1c2e"][0] == "Synced"
    assert (status["sync"], status["phase"], status["revision"]) == ("OutOfSync", "Failed", sha)
    assert status["message"] == f"one or more objects failed to apply, reason: {invalid}, {forbidden}"

    # Tried again up to the render's retry limit (5), then left until a new commit.
    cluster.clear_requests()
    for _ in range(7):
        argocd.sync()
    assert writes(cluster).count(("create", None)) == 5
    assert argocd.status[APP]["message"].startswith(f"Failed sync attempt to {sha}: one or more objects failed")
    repo.commit_files({"teams/team-vision/serving/bad.yaml": None, "teams/team-vision/serving/settings.yaml": None})
    assert argocd.sync()[APP]["sync"] == "Synced"

    # A file that is not YAML (or not an object) fails the whole refresh: nothing applied, nothing pruned.
    repo.commit_files({"teams/team-vision/serving/iris.yaml": None, "teams/team-vision/serving/broken.yaml": "a: [\n",
                       "teams/team-vision/spark/cats.yaml": dump(ray_service("cats"))})
    status = argocd.sync()[APP]
    assert status["sync"] == "Unknown"
    assert status["message"].startswith('Failed to load target state: Failed to unmarshal "broken.yaml": ')
    assert [r["metadata"]["name"] for r in cluster.list("rayservices")] == ["iris"]
    repo.commit_files({"teams/team-vision/serving/broken.yaml": "- just a list\n"})
    assert argocd.sync()[APP]["message"] == ("Failed to load target state: Object 'apiVersion/Kind' is missing in "
                                             "teams/team-vision/serving/broken.yaml")
    repo.commit_files({"teams/team-vision/serving/broken.yaml": None})
    assert argocd.sync()[APP]["sync"] == "Synced"
    assert [r["metadata"]["name"] for r in cluster.list("rayservices")] == ["cats"]  # any kind in either directory


def test_a_file_of_another_namespace_fails_the_sync_and_nothing_is_applied(argocd, cluster, repo):
    sha = repo.commit_files({"teams/team-vision/serving/sneaky.yaml": dump(ray_service("sneaky", OTHER))})
    status = argocd.sync()[APP]
    assert cluster.list("rayservices") == [] and cluster.list("sparkapplications") == []
    assert (status["sync"], status["phase"], status["revision"]) == ("OutOfSync", "Failed", sha)
    assert status["message"] == "one or more synchronization tasks are not valid"
    assert [(r["name"], r["status"], r["message"]) for r in status["resources"]] == [
        ("iris", "OutOfSync", ""),
        ("sneaky", "SyncFailed", "namespace team-nlp is not permitted in project 'mlplatform-team-vision'"),
        ("wordcount-3f9a1c2e", "OutOfSync", "")]

    # Without a namespace, a file's object goes to the Application's destination.
    repo.commit_files({"teams/team-vision/serving/sneaky.yaml": dump(ray_service("sneaky", None))})
    argocd.wait_synced(timeout=5, apps=[APP])
    assert cluster.get("rayservices", "sneaky", NS)["metadata"]["annotations"][TRACKING] == \
        f"{APP}:ray.io/RayService:{NS}/sneaky"


def test_argocds_default_project_would_apply_another_namespace(cluster, repo):
    """What a catalog naming Argo CD's `default` project (`gitops.argocd.project: default`) gets in a real Argo CD:
    a team's file naming another team's namespace is applied there (no AppProject is rendered then)."""
    named = catalog(argocd={"project": "default"})
    assert argocd_projects(named) == [] and argocd_application(named, NS)["spec"]["project"] == "default"
    repo.commit_files({"teams/team-vision/serving/sneaky.yaml": dump(ray_service("sneaky", OTHER))})
    with ArgoCd(cluster, [argocd_application(named, NS)], repository=repo.path,
                project_permits_any_namespace=True) as argocd:
        assert argocd.sync()[APP]["sync"] == "Synced"
    assert cluster.get("rayservices", "sneaky", OTHER)["metadata"]["annotations"][TRACKING] == \
        f"{APP}:ray.io/RayService:{OTHER}/sneaky"


def test_the_rendered_projects_keep_a_teams_files_to_its_namespace_and_the_platforms_kinds(cluster, repo):
    """The render's AppProjects, read as Argo CD reads them, with Argo CD's standard install (its controller may
    write anything anywhere): a file in team-vision's directory (merged from a reviewed pull request the platform
    service never saw) naming team-nlp's namespace, or of a kind other than RayService and SparkApplication
    (namespaced or cluster-scoped), fails the team's sync before anything is applied."""
    with ArgoCd(cluster, argocd_applications(CATALOG), repository=repo.path, projects=argocd_projects(CATALOG),
                rules=STANDARD_RULES) as argocd:
        assert argocd.sync()[APP]["sync"] == "Synced"  # the team's own kinds, in its namespace
        assert cluster.get("rayservices", "iris", NS) and cluster.get("sparkapplications", "wordcount-3f9a1c2e", NS)

        binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "mine-now", "namespace": NS},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
                   "subjects": [{"kind": "User", "name": "mallory"}]}
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "stringData": {"a": "b"}}
        cluster_wide = {**binding, "kind": "ClusterRoleBinding", "metadata": {"name": "mine-everywhere"}}
        sha = repo.commit_files({
            "teams/team-vision/serving/sneaky.yaml": dump(ray_service("sneaky", OTHER)),
            "teams/team-vision/serving/binding.yaml": dump(binding),
            "teams/team-vision/spark/secret.yaml": dump(secret),
            "teams/team-vision/spark/cluster.yaml": dump(cluster_wide),
            "teams/team-vision/serving/cats.yaml": dump(ray_service("cats"))}, "A reviewed pull request")
        status = argocd.sync()[APP]
        assert (status["sync"], status["phase"], status["revision"]) == ("OutOfSync", "Failed", sha)
        assert status["message"] == "one or more synchronization tasks are not valid"
        project = "mlplatform-team-vision"
        assert sorted((r["kind"], r["name"], r["status"], r["message"]) for r in status["resources"]) == [
            ("ClusterRoleBinding", "mine-everywhere", "SyncFailed",
             f"resource rbac.authorization.k8s.io:ClusterRoleBinding is not permitted in project {project}"),
            ("RayService", "cats", "OutOfSync", ""),
            ("RayService", "iris", "OutOfSync", ""),
            ("RayService", "sneaky", "SyncFailed", f"namespace team-nlp is not permitted in project '{project}'"),
            ("RoleBinding", "mine-now", "SyncFailed",
             f"resource rbac.authorization.k8s.io:RoleBinding is not permitted in project {project}"),
            ("Secret", "creds", "SyncFailed", f"resource :Secret is not permitted in project {project}"),
            ("SparkApplication", "wordcount-3f9a1c2e", "OutOfSync", "")]
        # Nothing of the commit is applied, not even the team's own new RayService.
        assert [r["metadata"]["name"] for r in cluster.list("rayservices")] == ["iris"]
        assert cluster.get("rolebindings", "mine-now", NS) is None and cluster.get("secrets", "creds", NS) is None
        assert cluster.get("clusterrolebindings", "mine-everywhere") is None
        # The other team's Application is untouched by team-vision's files.
        assert cluster.list("rayservices", OTHER) == []

        repo.commit_files({f"teams/team-vision/{f}": None for f in ("serving/sneaky.yaml", "serving/binding.yaml",
                                                                     "spark/secret.yaml", "spark/cluster.yaml")})
        assert argocd.sync()[APP]["sync"] == "Synced" and cluster.get("rayservices", "cats", NS)

    # An Application outside its project's repository or destination, or in a project that is not there, is not
    # synced at all (Argo CD's InvalidSpecError).
    vision = argocd_application(CATALOG, NS)
    elsewhere = {**vision, "spec": {**vision["spec"], "destination": {**vision["spec"]["destination"],
                                                                      "namespace": OTHER}}}
    other_repo = copy.deepcopy(vision)
    other_repo["spec"]["source"]["repoURL"] = "https://git.example.org/someone/else.git"
    for app, message in [
            (elsewhere, "application destination server 'https://kubernetes.default.svc' and namespace 'team-nlp' do "
                        "not match any of the allowed destinations in project 'mlplatform-team-vision'"),
            (other_repo, "application repo https://git.example.org/someone/else.git is not permitted in project "
                         "'mlplatform-team-vision'"),
            (vision, "Application referencing project mlplatform-team-vision which does not exist")]:
        projects = argocd_projects(CATALOG)[1:] if app is vision else argocd_projects(CATALOG)
        with ArgoCd(cluster, [app], repository=repo.path, projects=projects) as argocd:
            assert argocd.sync()[APP] == {"sync": "Unknown", "revision": None, "phase": None, "message": message,
                                          "resources": []}


def test_an_object_another_application_tracks_is_not_taken_over(argocd, cluster):
    theirs = ray_service("iris")
    theirs["metadata"]["annotations"] = {TRACKING: f"someone-else:ray.io/RayService:{NS}/iris"}
    cluster.seed(theirs)
    status = argocd.sync()[APP]
    assert status["message"] == "one or more synchronization tasks are not valid"
    assert ("iris", "SyncFailed", f"RayService/iris is part of applications argocd/{APP} and someone-else") in \
        [(r["name"], r["status"], r["message"]) for r in status["resources"]]
    assert cluster.get("rayservices", "iris", NS)["metadata"]["annotations"][TRACKING].startswith("someone-else:")
    assert cluster.get("sparkapplications", "wordcount-3f9a1c2e", NS) is None


@pytest.fixture(scope="module")
def git_http(tmp_path_factory):
    """The local platform's Git server (git http-backend behind HTTP Basic)."""
    token = secrets.token_urlsafe(16)
    with running_git_server(tmp_path_factory.mktemp("git"), PORT, {"argocd": token}) as server:
        yield server.root, f"{server.url}/deployments.git", token


def test_running_syncs_commits_fetched_over_http_with_credentials(cluster, git_http):
    root, url, token = git_http
    repo = Repo(root / "platform" / "deployments.git", FILES)
    apps = argocd_applications(catalog(repository=url))
    assert apps[0]["spec"]["source"]["repoURL"] == url
    with ArgoCd(cluster, apps[:1], credentials=("argocd", "wrong")) as refused:
        status = refused.sync()[APP]
    assert status["sync"] == "Unknown" and status["message"] == (
        f"Failed to load target state: failed to fetch main of {url}: could not read Username for "
        f"'http://127.0.0.1:{PORT}': terminal prompts disabled")  # the server's 401: the header was refused
    assert cluster.list("rayservices") == []

    with ArgoCd(cluster, apps[:1], credentials=("argocd", token)) as argocd, argocd.running(interval=0.05):
        argocd.wait_synced(revision=repo.head)
        assert cluster.get("rayservices", "iris", NS) is not None
        sha = repo.commit_files({"teams/team-vision/serving/iris.yaml": None,
                                 "teams/team-vision/serving/cats.yaml": dump(ray_service("cats"))})
        argocd.wait_synced(revision=sha)
        assert [r["metadata"]["name"] for r in cluster.list("rayservices")] == ["cats"]
    assert argocd.last_error is None
