"""Safe rollouts in GitOps mode on Kubernetes (issue 12 with the catalog's `gitops`): the platform service's
rollout changes (start, mode and share, the controller's automatic rollback, promote, abort) are commits of the
team's RayService, never patches Argo CD's selfHeal would put back.

The setup is test_gitops_kubernetes.py's (its `Setup`): alice deploys through the service's GitOps changes to a
real Git server, Argo CD's stand-in applies the repository to the fake API server (which validates every object
against KubeRay's CRD), the test plays KubeRay. The service's `Rollouts` acts through `KubernetesRollouts` with the
service's repository. Committed files are read from the bare repository with git, never through the platform's
writer."""

from __future__ import annotations

import copy
import json
import os
from types import SimpleNamespace

import pytest
import requests
import yaml
from mlplatform.serving import spec
from mlplatform.serving.errors import BackendUnavailable, ServingConflict, ServingError
from mlplatform.serving.kubernetes import KubernetesServing, KubernetesServingConfig, recorded_application
from mlplatform.serving.rollout import Rollout
from mlplatform_core.names import TEAM_LABEL, gateway_traffic
from mlplatform_service import rollouts as rollouts_module
from mlplatform_service.gitops import GitOpsConflict, Identity
from mlplatform_service.kubernetes_rollouts import KubernetesRollouts
from mlplatform_service.rollouts import Rollouts

from hub_config.render.admission import ROLLOUT_POLICY, binding, rollout_policy

from ..support.git_server import git_server
from ..support.gitops_service import InProcessGitOps, caller
from ..support.promotion import Registry
from ..support.rendered_cluster import CATALOG
from .test_gitops_kubernetes import NS, PATH, TEAM, TOKEN, USER, Setup, deploy
from .test_serving_kubernetes import operator_running

PORT = int(os.environ.get("MLPLATFORM_TEST_PORT_BASE", "25800")) + 6400
LOG = CATALOG.serving.inference_log.model_dump()
APP = "mlplatform-team-vision"  # the team's Argo CD Application
BOB = caller("bob", TEAM)  # a member of alice's team: acts on the rollout of her endpoint
TRAILERS = f"Mlplatform-Team: {TEAM}\nMlplatform-Kind: serving"


@pytest.fixture(scope="module")
def git(tmp_path_factory):
    with git_server(tmp_path_factory.mktemp("rollout-gitops-git"), PORT, {USER: TOKEN}) as server:
        yield server


@pytest.fixture
def setup(git, fake_kube, kubeconfig, tmp_path, request):
    mode = request.node.get_closest_marker("gitops_mode")
    fake_kube.namespace(CATALOG.kubernetes.hub_namespace)  # the teams' traffic maps (the service's writes)
    return Setup(git, fake_kube, tmp_path, request.node.name.replace("[", "-").replace("]", ""),
                 mode=mode.args[0] if mode else "direct")


def backend(setup: Setup) -> KubernetesRollouts:
    """The platform service's rollouts backend in GitOps mode (as Platform wires it: its repository, its admission)."""
    return KubernetesRollouts(lambda: setup.catalog, repository=setup.service.changes.repository,
                              admission=setup.service.changes.workloads)


def platform_rollouts(setup: Setup) -> Rollouts:
    return Rollouts(catalog=lambda: setup.catalog, audit=setup.service.audit, promotions=Registry(),
                    backend=backend(setup), s3=lambda: None)


def application(service: dict) -> dict:
    """The recorded application: in a rollout the champion with its candidate and the settings (an annotation)."""
    return recorded_application(service)


def serve_config(app: dict) -> str:
    """What Serve runs for the recorded application: in a rollout the champion's application and the candidate's."""
    return yaml.safe_dump({"applications": spec.serve_applications(app)}, sort_keys=False)


def settings(service: dict) -> dict:
    return application(service)["deployments"][0]["user_config"]["rollout"]


def changed(before: dict, after: dict, *, serve: dict, max_replicas: int, **annotations: str) -> dict:
    """`before` with the fields a rollout change sets, and `after`'s fresh deploy id (checked to differ)."""
    expected = copy.deepcopy(before)
    expected["spec"]["serveConfigV2"] = serve_config(serve)
    expected["metadata"]["annotations"]["mlplatform.io/application"] = \
        json.dumps(serve) if spec.candidate_of(serve) else ""
    expected["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] = max_replicas
    deploy_id = after["metadata"]["annotations"]["mlplatform.io/deploy-id"]
    assert deploy_id != before["metadata"]["annotations"]["mlplatform.io/deploy-id"]
    expected["metadata"]["annotations"].update({"mlplatform.io/deploy-id": deploy_id, **{
        f"mlplatform.io/{key.replace('_', '-')}": value for key, value in annotations.items()}})
    return expected


def routed(setup: Setup) -> dict:
    """The team's traffic map (traffic_maps.py) as the gateway reads it: endpoint → its traffic."""
    found = setup.fake.get("configmaps", gateway_traffic(TEAM), CATALOG.kubernetes.hub_namespace) or {}
    return {name: json.loads(text) for name, text in (found.get("data") or {}).items()}


def message(setup: Setup, rev: str = "main") -> str:
    return setup.git.git(setup.name, "log", "-1", "--format=%an <%ae> by %cn%n%B", rev, "--", PATH).strip()


def synced(setup: Setup, generation: int) -> dict:
    """One pass of Argo CD: the cluster's RayService is Git's (the fake validated it against the CRD); KubeRay
    takes it."""
    status = setup.argocd.sync()
    assert status[APP]["sync"] == "Synced", status
    applied = setup.fake.get("rayservices", "iris", NS)
    committed = setup.committed()
    assert applied["spec"] == committed["spec"]
    assert applied["metadata"]["annotations"].items() >= committed["metadata"]["annotations"].items()
    operator_running(setup.fake, generation=generation)
    return applied


def guarded(setup: Setup) -> None:
    """The rendered admission policy on RayServices in rollout, bound to the team's namespace: Argo CD applies the
    platform's commits; a team's own change of what a RayService in rollout serves would be refused."""
    setup.fake.patch("namespaces", NS, {"metadata": {"labels": {TEAM_LABEL: TEAM}}})
    setup.fake.seed(rollout_policy(setup.catalog))
    setup.fake.seed(binding(ROLLOUT_POLICY))


def deployed(setup: Setup, **kwargs) -> dict:
    deploy(setup.serving(), "3", **kwargs)
    synced(setup, 1)
    return setup.committed()


def test_each_rollout_change_is_a_commit_argo_cd_applies_and_self_heal_keeps(setup, monkeypatch):
    guarded(setup)
    first = deployed(setup)
    rollouts = platform_rollouts(setup)

    # Start: a commit of the RayService with the candidate, authored by bob; nothing patched behind Git's back.
    started = rollouts.start(BOB, TEAM, "iris", version=4, mode="shadow")
    sha = started["commit"]["sha"]
    assert (started["state"], started["message"], started["commit"]["branch"], started["commit"]["author"]) == (
        "submitted", f"committed {sha[:7]} to main: waiting for Argo CD to sync it", "main", "bob")
    assert (started["model_version"], started["rollout"]["model_version"]) == ("3", "4")
    shadow = setup.committed()
    since = settings(shadow)["since"]
    candidate = spec.with_candidate(application(first), model_version="4", requested_uri="models:/iris/4",
                                    rollout=Rollout(mode="shadow", since=since), inference_log=LOG)
    assert shadow == changed(first, shadow, serve=candidate, max_replicas=8)  # room: 4 × the 2 replicas
    assert message(setup) == (f"bob <bob@example.org> by mlplatform\nRollout iris: candidate version 4 in shadow\n\n"
                              f"Mlplatform-User: bob\n{TRAILERS}")
    assert setup.fake.get("rayservices", "iris", NS)["spec"] == first["spec"]
    # The gateway's map has the candidate at once; it sends it nothing until its application answers (synced).
    assert routed(setup)["iris"] == {"team": TEAM, "champion_version": "3", "candidate_version": "4",
                                     "rollout": Rollout(mode="shadow", since=since).to_dict(), "sample_rate": 1.0}
    # The notebook's status follows the commit until Argo CD applied it.
    assert setup.serving().status("iris")["message"] == (
        f"committed {sha[:7]} to main: waiting for Argo CD to sync it (version 3 keeps answering)")
    [record] = setup.service.audit.query(action="rollout", target=f"model:{TEAM}/iris")
    assert (record["actor"], record["details"]) == ("bob", {
        "endpoint": "iris", "change": "start", "model": "iris", "candidate_version": "4", "mode": "shadow",
        "share": 0.0, "mirror_rate": 1.0, "commit": sha})
    synced(setup, 2)
    assert rollouts.backend.status(TEAM, "iris")["rollout"]["model_version"] == "4"
    # Argo CD applied the platform's commit; another identity's change of what the rollout serves is refused.
    r = requests.patch(f"{setup.fake.url}/apis/ray.io/v1/namespaces/{NS}/rayservices/iris",
                       json={"spec": {"serveConfigV2": "applications: []\n"}}, timeout=30,
                       headers={"Content-Type": "application/merge-patch+json", "Authorization":
                                f"Bearer {setup.fake.token_for(user='kubernetes-admin', groups=('system:masters',))}"})
    assert r.status_code == 403 and "'mlplatform-rollouts'" in r.json()["message"], r.text
    assert setup.serving().status("iris")["state"] == "running"

    # Canary: another commit, only the champion's rollout settings change.
    canary = rollouts.change(BOB, TEAM, "iris", mode="canary", share=0.05)
    committed = setup.committed()
    assert committed == changed(shadow, committed, max_replicas=8, serve=spec.with_rollout(
        application(shadow), Rollout(mode="canary", share=0.05, since=since)))
    assert setup.log()[0] == "bob|Rollout iris: candidate version 4 in canary, 5% of requests"
    assert setup.service.audit.query(action="rollout")[-1]["details"]["commit"] == canary["commit"]["sha"]
    synced(setup, 3)

    # The controller rolls back a breaching candidate: a commit by the platform, the reason in its message.
    reason = "error rate 0.2 of the candidate above the SLO's 0.05"
    monkeypatch.setattr(Rollouts, "_window", lambda *args: None)
    monkeypatch.setattr(rollouts_module.live_gates, "breach", lambda frame, gates, now=None: reason)
    [rolled_back] = rollouts.check()
    # Traffic is back on the champion at once, before Argo CD syncs the commit: a rollback never waits for a sync.
    assert routed(setup)["iris"]["rollout"] == Rollout(mode="off", since=since, reason=reason).to_dict()
    rollback = setup.committed()
    assert rollback == changed(committed, rollback, max_replicas=8, serve=spec.with_rollout(
        application(committed), Rollout(mode="off", since=since, reason=reason)))
    assert message(setup) == (f"platform <platform@example.org> by mlplatform\nRollout iris: rolled back: candidate "
                              f"version 4 off, version 3 answers everything\n\n{reason}\n\nMlplatform-User: platform\n"
                              f"{TRAILERS}")
    [record] = setup.service.audit.query(action="rollback")
    assert (record["actor"], record["details"]["commit"], rolled_back["commit"]) == (
        "platform", setup.git.git(setup.name, "rev-parse", "main").strip(), record["details"]["commit"])
    synced(setup, 4)

    # Promote: the candidate's version alone, the worker group's room back to a surge's.
    promoted = rollouts.backend.end(TEAM, "iris", promote=True, actor="alice")
    final = setup.committed()
    assert final == changed(rollback, final, max_replicas=4, model_version="4", previous_version="3",
                            serve=spec.without_candidate(application(rollback), promote=True))
    assert (promoted["model_version"], promoted["rollout"]) == ("4", None)
    assert routed(setup) == {}
    assert setup.log() == ["alice|Rollout iris: version 4 promoted, it answers everything",
                           "platform|Rollout iris: rolled back: candidate version 4 off, version 3 answers everything",
                           "bob|Rollout iris: candidate version 4 in canary, 5% of requests",
                           "bob|Rollout iris: candidate version 4 in shadow",
                           "alice|Deploy RayService team-vision/iris"]
    applied = synced(setup, 5)
    assert application(applied)["args"]["model_uri"] == "models:/iris/4"

    # selfHeal finds nothing to put back: the cluster is what Git holds, and stays so.
    before = setup.fake.get("rayservices", "iris", NS)
    again = setup.argocd.sync()
    assert again[APP]["sync"] == "Synced", again
    assert setup.fake.get("rayservices", "iris", NS) == before
    assert before["spec"] == setup.committed()["spec"]


def test_abort_is_a_commit_and_the_champion_answers_alone(setup):
    guarded(setup)
    first = deployed(setup)
    rollouts = platform_rollouts(setup)
    rollouts.start(BOB, TEAM, "iris", version=4, mode="canary", share=0.1)
    started = setup.committed()
    synced(setup, 2)
    aborted = rollouts.abort(caller("alice", TEAM), TEAM, "iris")
    final = setup.committed()
    assert final == changed(started, final, max_replicas=4,
                            serve=spec.without_candidate(application(started), promote=False))
    assert application(final)["args"] == application(first)["args"]
    assert setup.log()[0] == "alice|Rollout iris: candidate version 4 aborted, version 3 answers everything"
    [record] = [r for r in setup.service.audit.query(action="rollout") if r["details"]["change"] == "abort"]
    assert (record["actor"], record["details"]["commit"]) == ("alice", aborted["commit"]["sha"])
    applied = synced(setup, 3)
    assert [d["name"] for d in application(applied)["deployments"]] == ["Model"]
    with pytest.raises(ServingConflict, match="has no rollout"):  # the cluster has none any more
        rollouts.abort(BOB, TEAM, "iris")


def test_the_inference_log_switch_is_a_commit_and_the_report_carries_the_last_one(setup, monkeypatch):
    deployed(setup)
    rollouts = platform_rollouts(setup)
    started = rollouts.start(BOB, TEAM, "iris", version=4, mode="shadow")
    synced(setup, 2)
    monkeypatch.setattr(Rollouts, "_evaluate", lambda *args: SimpleNamespace(as_dict=lambda: {}))  # no S3 here
    assert rollouts.report(BOB, TEAM, "iris")["commit"] == started["commit"]  # the widget links it

    changed = rollouts.set_inference_log(BOB, TEAM, "iris", sample_rate=0.1)
    committed = setup.committed()
    assert application(committed)["deployments"][0]["user_config"]["inference_log"] == {**LOG, "sample_rate": 0.1}
    assert setup.log()[0] == "bob|Rollout iris: inference log on, 10% of requests sampled"
    [record] = [r for r in setup.service.audit.query(action="rollout") if r["details"]["change"] == "inference_log"]
    assert (record["actor"], record["details"]["commit"]) == ("bob", changed["commit"]["sha"])
    assert rollouts.report(BOB, TEAM, "iris")["commit"] == changed["commit"]
    # The service restarted: the last commit of the endpoint's file, read from Git.
    commit = platform_rollouts(setup).report(BOB, TEAM, "iris")["commit"]
    assert (commit["sha"], commit["message"].splitlines()[0], commit["author"]) == (
        changed["commit"]["sha"], "Rollout iris: inference log on, 10% of requests sampled", "bob")


def test_a_redeploy_through_the_services_gitops_changes_is_the_reports_commit_then(setup, monkeypatch):
    """The report's commit follows the endpoint's file: a redeploy (the service's GitOps changes, as Platform wires
    them to Rollouts.committed) replaces the rollout step's commit, not only after the service's restart."""
    deployed(setup)
    rollouts = platform_rollouts(setup)
    monkeypatch.setattr(setup.service.changes, "on_commit", rollouts.committed)
    started = rollouts.start(BOB, TEAM, "iris", version=4, mode="shadow")
    monkeypatch.setattr(Rollouts, "_evaluate", lambda *args: SimpleNamespace(as_dict=lambda: {}))  # no S3 here
    assert rollouts.report(BOB, TEAM, "iris")["commit"] == started["commit"]

    redeployed = deploy(setup.serving(), "5")
    assert redeployed["commit"]["sha"] != started["commit"]["sha"]
    assert rollouts.report(BOB, TEAM, "iris")["commit"]["sha"] == redeployed["commit"]["sha"]


def test_without_gitops_a_rollout_patch_would_be_put_back_by_self_heal(setup):
    """Why the changes are commits: the direct path's patch of a RayService Argo CD manages does not last."""
    first = deployed(setup)
    direct = KubernetesServing(KubernetesServingConfig(namespace=NS, team=TEAM, user="platform"))
    direct.start_rollout("iris", model_version="4", requested_uri="models:/iris/4", rollout=Rollout(mode="shadow"),
                         inference_log=LOG)
    assert len(application(setup.fake.get("rayservices", "iris", NS))["deployments"]) == 2
    status = setup.argocd.sync()
    assert status[APP]["sync"] == "Synced", status
    assert setup.fake.get("rayservices", "iris", NS)["spec"] == first["spec"]


def test_an_endpoint_git_does_not_hold_is_refused_not_patched(setup):
    """Deployed before GitOps mode (straight to the cluster): the rollout names the file and changes nothing."""
    direct = KubernetesServing(KubernetesServingConfig.for_catalog(setup.catalog, namespace=NS, team=TEAM,
                                                                   user="alice"))
    deploy(direct)
    operator_running(setup.fake)
    before = setup.fake.get("rayservices", "iris", NS)
    with pytest.raises(ServingConflict) as refused:
        platform_rollouts(setup).start(BOB, TEAM, "iris", version=4)
    assert str(refused.value) == (
        f"'iris' of team {TEAM} is not in Git: {PATH} is not in main of the GitOps repository. In GitOps mode a "
        "rollout is a commit of that file, and nothing is changed behind Git's back: redeploy 'iris' from a notebook "
        "(that commits it), then start the rollout")
    assert refused.value.status_code == 409
    assert setup.fake.get("rayservices", "iris", NS) == before
    assert PATH not in setup.files()
    assert setup.service.audit.query(action="rollout") == []


def test_a_commit_between_the_read_and_the_write_is_read_again_not_overwritten(setup, monkeypatch):
    deployed(setup)
    repository = setup.service.changes.repository()
    write, redeployed = repository.write, []

    def alice_redeploys_first(*args, **kwargs):
        if not redeployed:  # the rollout read the file; alice's redeploy lands before its write
            redeployed.append(None)
            redeployed[0] = deploy(setup.serving(), "5")
        return write(*args, **kwargs)

    monkeypatch.setattr(repository, "write", alice_redeploys_first)
    started = backend(setup).start(TEAM, "iris", model_version="4", requested_uri="models:/iris/4",
                                   rollout=Rollout(mode="shadow", since=1.0), inference_log=LOG, actor="bob")
    committed = setup.committed()
    assert committed["metadata"]["annotations"]["mlplatform.io/model-version"] == "5"  # alice's version stays
    assert application(committed)["args"]["candidate"]["model_uri"] == "models:/iris/4"
    assert started["commit"]["sha"] == setup.git.git(setup.name, "rev-parse", "main").strip()
    assert setup.log() == ["bob|Rollout iris: candidate version 4 in shadow", "alice|Redeploy RayService team-vision/iris",
                           "alice|Deploy RayService team-vision/iris"]

    # The writer's guard itself: a document made from an older commit of the file is refused.
    with pytest.raises(GitOpsConflict, match=f"{PATH} in main of .* was changed by someone else since it was read"):
        write(PATH, committed, author=Identity("bob", "bob@example.org"), message="stale",
              expected=redeployed[0]["commit"]["sha"])
    assert setup.log()[0] == "bob|Rollout iris: candidate version 4 in shadow"


def test_a_rollout_the_budget_cannot_take_is_refused_before_any_commit(setup):
    config = KubernetesServingConfig.for_catalog(setup.catalog, namespace=NS, team=TEAM, user="alice", gpu_type="a100")
    alice = KubernetesServing(config, gitops=InProcessGitOps.of(setup.service, caller("alice", TEAM)))
    deploy(alice, replicas=1, gpus=1)
    synced(setup, 1)
    # The team's other allocations hold all but 3 of its 500 GPU-hours; the candidate's workers need 4 (× 1 h).
    setup.service.budgets.admit("server:dana/", kind="server", team=TEAM, user="dana", profile="gpu-a100",
                                gpu_type="a100", gpus=497)
    with pytest.raises(ServingError, match="the platform would not admit this change of 'iris': team-vision's "
                                           "budget .* nothing was committed") as refused:
        platform_rollouts(setup).start(BOB, TEAM, "iris", version=4)
    assert refused.value.status_code == 409
    assert setup.log() == ["alice|Deploy RayService team-vision/iris"]


@pytest.mark.gitops_mode("review")
def test_in_review_mode_rollout_commits_go_to_the_branch_argo_cd_syncs(setup):
    """Deploys wait for review on their branch; a rollout is the platform's own change, committed to main."""
    deploy(setup.serving(), "3")
    branch = "mlplatform/team-vision/serving/iris"
    setup.git.git(setup.name, "update-ref", "refs/heads/main", f"refs/heads/{branch}")  # the reviewer merges
    synced(setup, 1)
    started = platform_rollouts(setup).start(BOB, TEAM, "iris", version=4, mode="shadow")
    assert (started["commit"]["branch"], started["message"]) == (
        "main", f"committed {started['commit']['short']} to main: waiting for Argo CD to sync it")
    assert setup.log()[0] == "bob|Rollout iris: candidate version 4 in shadow"
    assert setup.committed(rev=branch) != setup.committed()  # the review branch is left alone
    applied = synced(setup, 2)
    assert application(applied)["args"]["candidate"]["model_uri"] == "models:/iris/4"


def test_gitops_mode_without_the_services_repository_changes_nothing(setup):
    deployed(setup)
    before = setup.fake.get("rayservices", "iris", NS)
    with pytest.raises(BackendUnavailable, match="the platform is in GitOps mode: a rollout's changes are commits"):
        KubernetesRollouts(lambda: setup.catalog).change(TEAM, "iris", Rollout(mode="off"))
    assert setup.fake.get("rayservices", "iris", NS) == before


def test_without_gitops_the_service_still_patches_the_rayservice(fake_kube, kubeconfig):
    """Direct mode is unchanged (test_rollout_kubernetes.py covers it in the rendered cluster): no Git involved."""
    fake_kube.namespace(NS)
    fake_kube.namespace(CATALOG.kubernetes.hub_namespace)
    deploy(KubernetesServing(KubernetesServingConfig.for_catalog(CATALOG, namespace=NS, team=TEAM, user="alice")))
    direct = KubernetesRollouts(lambda: CATALOG, repository=lambda: pytest.fail("no Git in direct mode"))
    started = direct.start(TEAM, "iris", model_version="4", requested_uri="models:/iris/4",
                           rollout=Rollout(mode="shadow"), inference_log=LOG, actor="bob")
    assert "commit" not in started and started["rollout"]["model_version"] == "4"
    patched = fake_kube.get("rayservices", "iris", NS)
    assert application(patched)["args"]["candidate"]["model_uri"] == "models:/iris/4"
    assert patched["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] == 8
    ended = direct.end(TEAM, "iris", promote=False, actor="bob")
    assert ended["rollout"] is None and "commit" not in ended


def test_the_direct_patch_and_the_commit_make_the_same_rayservice(setup):
    """One change, two paths: the commit of Git's RayService and the direct path's patch of the cluster's."""
    deployed(setup)
    change = dict(model_version="4", requested_uri="models:/iris/4", rollout=Rollout(mode="shadow", since=1.0),
                  inference_log=LOG)
    backend(setup).start(TEAM, "iris", **change, actor="bob")
    KubernetesServing(KubernetesServingConfig(namespace=NS, team=TEAM, user="platform")).start_rollout("iris", **change)
    assert setup.fake.get("rayservices", "iris", NS)["spec"] == setup.committed()["spec"]
