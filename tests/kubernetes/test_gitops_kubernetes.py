"""GitOps mode on Kubernetes, end to end but for Argo CD itself: the notebook's serving and Spark backends send
their objects to the platform service's GitOps changes (in this process, as the user: tests/support/
gitops_service.py), which check them and commit them to a real Git server over HTTP; Argo CD's stand-in
(tests/support/argocd.py) applies what the repository holds to the fake API server, which validates it against
the CRDs; the test plays KubeRay and the Spark operator. Committed files are read from the bare repository with
git, never through the platform's writer."""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path

import pytest
import yaml
from mlplatform import serving
from mlplatform.serving import spec
from mlplatform.serving.errors import BackendUnavailable, DeploymentNotFound, ServingConflict
from mlplatform.serving.kubernetes import KubernetesServing, KubernetesServingConfig
from mlplatform.spark.job import SparkJob
from mlplatform.spark.kubernetes import KubernetesSparkBackend, KubernetesSparkConfig
from mlplatform_core.catalog_gitops import GitIdentity, Gitops
from mlplatform_service.gitops import Credentials, GitOpsRepository, Identity

from hub_config.render.gitops import argocd_application

from ..support.argocd import ArgoCd
from ..support.git_server import git_server
from ..support.gitops_service import InProcessGitOps, caller, gitops_service
from ..support.rendered_cluster import CATALOG
from .test_serving_kubernetes import operator_running

PORT = int(os.environ.get("MLPLATFORM_TEST_PORT_BASE", "25800")) + 6220
USER, TOKEN = "platform", secrets.token_urlsafe(32)
TEAM = "team-vision"
NS = CATALOG.teams[TEAM].namespace
ENV = {"MLPLATFORM_TEAM": TEAM, "MLFLOW_TRACKING_URI": "http://mlflow.mlplatform:5000"}
PATH = f"teams/{TEAM}/serving/iris.yaml"


@pytest.fixture(scope="module")
def git(tmp_path_factory):
    with git_server(tmp_path_factory.mktemp("gitops-git"), PORT, {USER: TOKEN}) as server:
        yield server


class Setup:
    def __init__(self, git, fake, tmp_path, name: str, mode: str = "direct"):
        self.git, self.fake, self.name = git, fake, name
        url = git.new_repository(name)
        self.catalog = CATALOG.model_copy(update={"gitops": Gitops(
            repository=url, committer=GitIdentity(name="mlplatform", email="mlplatform@example.org"), mode=mode)})
        repository = GitOpsRepository(url, "main", Credentials(USER, TOKEN),
                                      Identity("mlplatform", "mlplatform@example.org"), tmp_path / "clone")
        self.service = gitops_service(self.catalog, f"sqlite:///{tmp_path / 'platform.sqlite'}", repository)
        self.argocd = ArgoCd(fake, [argocd_application(self.catalog, team) for team in self.catalog.teams], url,
                             credentials=(USER, TOKEN))
        fake.namespace(NS)

    def serving(self, user: str = "alice") -> KubernetesServing:
        config = KubernetesServingConfig.for_catalog(self.catalog, namespace=NS, team=TEAM, user=user)
        return KubernetesServing(config, gitops=InProcessGitOps.of(self.service, caller(user, TEAM)))

    def committed(self, path: str = PATH, rev: str = "main") -> dict:
        return yaml.safe_load(self.git.git(self.name, "show", f"{rev}:{path}"))

    def files(self) -> list[str]:
        return self.git.git(self.name, "ls-tree", "-r", "--name-only", "main").split()

    def log(self, path: str = PATH) -> list[str]:
        return self.git.git(self.name, "log", "--format=%an|%s", "main", "--", path).splitlines()


@pytest.fixture
def setup(git, fake_kube, kubeconfig, tmp_path, request):
    mode = request.node.get_closest_marker("gitops_mode")
    return Setup(git, fake_kube, tmp_path, request.node.name.replace("[", "-").replace("]", ""),
                 mode=mode.args[0] if mode else "direct")


def request(**kwargs):
    return spec.serving_request(**{"name": "iris", "model_uri": "models:/iris@champion", "replicas": 2, **kwargs})


def deploy(backend: KubernetesServing, version: str = "3", **kwargs) -> dict:
    return backend.deploy(request(**kwargs), model_version=version, env=ENV)


def test_deploy_is_a_commit_that_argo_cd_syncs_then_kuberay_runs(setup):
    alice = setup.serving()
    answer = deploy(alice)
    sha = answer["commit"]["sha"]
    assert (answer["state"], answer["message"]) == (
        "submitted", f"committed {sha[:7]} to main: waiting for Argo CD to sync it")
    assert setup.fake.get("rayservices", "iris", NS) is None  # nothing applied behind Git's back

    # The commit holds the very object the direct backend would create: its manifest and this deploy's annotations.
    document = setup.committed()
    manifest = alice.manifest(request(), model_version="3", env=ENV, owner={"user": "alice", "team": TEAM})
    assert {**document, "metadata": None} == {**manifest, "metadata": None}
    assert document["metadata"]["labels"] == manifest["metadata"]["labels"]
    annotations = document["metadata"]["annotations"]
    assert annotations.items() >= manifest["metadata"]["annotations"].items()
    assert sorted(set(annotations) - set(manifest["metadata"]["annotations"])) == [
        "mlplatform.io/application", "mlplatform.io/deploy-id", "mlplatform.io/previous-version",
        "mlplatform.io/request", "mlplatform.io/submitted-at", "mlplatform.io/user"]
    assert setup.log() == ["alice|Deploy RayService team-vision/iris"]
    assert alice.status("iris")["message"].endswith("waiting for Argo CD to sync it")

    status = setup.argocd.sync()
    assert status["mlplatform-team-vision"]["sync"] == "Synced", status
    applied = setup.fake.get("rayservices", "iris", NS)
    assert applied["spec"] == document["spec"]
    assert applied["metadata"]["annotations"]["mlplatform.io/deploy-id"] == annotations["mlplatform.io/deploy-id"]
    synced = alice.status("iris")
    assert (synced["state"], synced["message"], synced["commit"]["sha"]) == (
        "submitted", "waiting for the KubeRay operator to take the RayService", sha)
    operator_running(setup.fake)
    assert alice.status("iris")["state"] == "running"
    [record] = setup.service.audit.query(action="deploy", target=f"model:{TEAM}/iris")
    assert (record["actor"], record["outcome"], record["details"]["commit"]) == ("alice", "succeeded", sha)


def test_a_redeploy_is_a_new_commit_and_the_running_version_answers_until_synced(setup):
    alice = setup.serving()
    deploy(alice, "3")
    setup.argocd.sync()
    operator_running(setup.fake)
    answer = deploy(alice, "4")
    assert answer["message"].endswith("waiting for Argo CD to sync it (version 3 keeps answering)")
    status = alice.status("iris")
    assert (status["state"], status["model_version"]) == ("submitted", "4")
    assert status["message"].endswith("(version 3 keeps answering)")
    assert setup.log() == ["alice|Redeploy RayService team-vision/iris", "alice|Deploy RayService team-vision/iris"]
    setup.argocd.sync()
    assert setup.fake.get("rayservices", "iris", NS)["metadata"]["annotations"]["mlplatform.io/model-version"] == "4"


@pytest.mark.gitops_mode("review")
def test_in_review_mode_the_change_waits_on_its_branch_until_merged(setup):
    alice = setup.serving()
    answer = deploy(alice)
    branch = "mlplatform/team-vision/serving/iris"
    assert answer["commit"]["branch"] == branch
    assert answer["message"] == (f"committed {answer['commit']['short']} to {branch}: waiting for someone to merge "
                                 f"{branch} into main, then Argo CD to sync it")
    assert PATH not in setup.files()
    setup.argocd.sync()
    assert setup.fake.get("rayservices", "iris", NS) is None
    assert alice.status("iris")["message"] == answer["message"]
    setup.git.git(setup.name, "update-ref", "refs/heads/main", f"refs/heads/{branch}")  # the reviewer merges
    setup.argocd.sync()
    assert setup.fake.get("rayservices", "iris", NS)["spec"] == setup.committed()["spec"]


def test_delete_removes_the_file_and_argo_cd_prunes_the_object(setup):
    alice = setup.serving()
    deploy(alice)
    setup.argocd.sync()
    answer = alice.delete("iris", wait=False)
    assert (answer["state"], answer["message"]) == ("deleting", f"removed from Git in {answer['commit']['short']}")
    assert PATH not in setup.files()
    status = alice.status("iris")  # still in the cluster until Argo CD prunes it
    assert (status["state"], status["message"]) == (
        "deleting", f"removed from Git in {answer['commit']['short']}: waiting for Argo CD to prune it")
    pruned = setup.argocd.sync()
    assert setup.fake.get("rayservices", "iris", NS) is None, pruned
    with pytest.raises(DeploymentNotFound, match="no serving application 'iris' in namespace team-vision nor in Git"):
        alice.status("iris")
    with pytest.raises(DeploymentNotFound, match=f"{PATH} is not in main"):
        alice.delete("iris")


def test_two_users_of_one_team_deploying_at_once_both_land(setup):
    results, errors = {}, []

    def run(user: str, name: str):
        try:
            results[name] = deploy(setup.serving(user), name=name)
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=run, args=args) for args in (("alice", "iris"), ("dana", "rose"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert {"teams/team-vision/serving/iris.yaml", "teams/team-vision/serving/rose.yaml"} <= set(setup.files())
    assert setup.committed()["metadata"]["labels"]["mlplatform.io/user"] == "alice"
    assert setup.committed(f"teams/{TEAM}/serving/rose.yaml")["metadata"]["labels"]["mlplatform.io/user"] == "dana"
    setup.argocd.sync()
    assert {s["metadata"]["name"] for s in setup.fake.list("rayservices", NS)} == {"iris", "rose"}


def test_a_push_the_git_server_refuses_applies_nothing_and_says_why(setup):
    hook = setup.git.bare(setup.name) / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'main is protected: changes need a reviewed pull request' >&2\nexit 1\n")
    hook.chmod(0o755)
    alice = setup.serving()
    with pytest.raises(ServingConflict, match="main is protected: changes need a reviewed pull request"):
        deploy(alice)
    assert PATH not in setup.files()
    setup.argocd.sync()
    assert setup.fake.get("rayservices", "iris", NS) is None
    [record] = setup.service.audit.query(target=f"model:{TEAM}/iris")
    assert (record["action"], record["outcome"]) == ("deploy", "failed")
    assert "main is protected" in record["details"]["reason"]


def test_a_spark_job_is_submitted_and_cancelled_through_git(setup):
    config = KubernetesSparkConfig.for_catalog(setup.catalog, KubernetesSparkConfig(
        namespace=NS, team=TEAM, user="alice", bucket="platform", team_prefix=f"teams/{TEAM}/"))
    spark = KubernetesSparkBackend(config, gitops=InProcessGitOps.of(setup.service, caller("alice", TEAM)))
    submitted = spark.submit(SparkJob(name="etl", main_file="s3a://platform/teams/team-vision/etl.py"))
    app_id, sha = submitted["app_id"], submitted["commit"]["sha"]
    path = f"teams/{TEAM}/spark/{app_id}.yaml"
    assert submitted["message"] == f"committed {sha[:7]} to main: waiting for Argo CD to sync it"
    assert setup.committed(path)["spec"]["mainApplicationFile"] == "s3a://platform/teams/team-vision/etl.py"
    assert spark.status(app_id)["state"] == "SUBMITTED" and spark.status(app_id)["commit"]["sha"] == sha
    setup.argocd.sync()
    assert setup.fake.get("sparkapplications", app_id, NS)["spec"] == setup.committed(path)["spec"]
    assert spark.status(app_id)["message"] == "waiting for the Spark operator"
    cancelled = spark.cancel(app_id)
    assert cancelled["state"] == "CANCELLED" and path not in setup.files()
    setup.argocd.sync()
    assert setup.fake.get("sparkapplications", app_id, NS) is None
    assert [r["action"] for r in setup.service.audit.query(target=f"spark:{TEAM}/{app_id}")] == ["submit", "cancel"]


def test_in_gitops_mode_a_server_without_the_platform_service_deploys_nothing(kubeconfig, tmp_path):
    source = yaml.safe_load(Path(CATALOG.path).read_text())
    source["gitops"] = {"repository": "https://git.example.org/deploy.git",
                        "committer": {"name": "mlplatform", "email": "mlplatform@example.org"}}
    catalog = tmp_path / "platform.yaml"
    catalog.write_text(yaml.safe_dump(source))
    environ = {"MLPLATFORM_BACKEND": "kubernetes", "MLPLATFORM_NAMESPACE": NS, "MLPLATFORM_TEAM": TEAM,
               "MLPLATFORM_USER": "alice", "MLPLATFORM_CATALOG": str(catalog)}
    with pytest.raises(BackendUnavailable, match="the platform is in GitOps mode: changes are commits made by the "
                                                 "platform service"):
        serving.backend(environ)
