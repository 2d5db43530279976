"""The rollouts' backend on a cluster: the team's RayService, patched, or in GitOps mode changed by commits, and the
team's traffic map, which its gateway routes by.

The RayService runs both sides (the candidate as a Serve application of its own) and records the rollout; the
traffic map (traffic_maps.py, in the hub's namespace, written by this service only) says how the gateway splits and
mirrors, and is the platform's record of the versions and settings (status() reports them from there). A change of
mode, share or sample rate writes the map first, so the gateway moves traffic at once, also in GitOps mode before
Argo CD syncs the commit (a rollback never waits for a sync); start writes it after the candidate is in the
RayService, end (promotion, abort) before. A step the API server or Git refuses puts the map back.

GitOps mode on Kubernetes (the catalog's `gitops`): Git is the truth, and Argo CD's selfHeal would put a patched
RayService back (as would the next redeploy), so start, change and end are commits instead. The service reads the
team's RayService from its file in the GitOps repository (`gitops.paths.serving`), applies the very change the
patch would make (serving/kubernetes.py `rollout_patch`: serveConfigV2, the worker group's maxReplicas, the
annotations of a promotion) plus a fresh deploy id (what the notebook's status follows until Argo CD has applied
the commit), checks it as the admission webhook will when Argo CD applies it (dry run: the team's budget), and
writes it back: authored by who acted (`actor`; `platform` for the controller's automatic rollback), committed by
the platform, with a message naming the change ("Rollout iris: candidate version 4 in shadow"). The answer is the
committed RayService's description with the commit, waiting for Argo CD; `status` and `active` keep reading the
cluster (what Argo CD applied), so the controller judges what really serves. A file changed by someone else between
the read and the write is read again (a few times), never overwritten. An endpoint Git has no file for (deployed
before GitOps mode, or by hand) is refused (409, naming the path), not patched behind Git's back: redeploy it
from the notebook first (that commits it).

Review mode (`gitops.mode: review`) changes nothing here: rollout commits go to `gitops.branch` directly, as the
platform's own change, never to a review branch. Review governs what an endpoint is (its deploys: image, sizes,
GPUs, the champion); a rollout only moves traffic between the reviewed endpoint and a registered version of its own
model, each step gated by the platform (team membership, the live gates, the promotion engine's gates for promote)
and audited, and the controller's automatic rollback must take effect without waiting for a human. So the
platform's committer must be allowed to push to `gitops.branch` (a protected branch's bypass list); a push the
server refuses is a 409 with its reason and changes nothing. A redeploy waiting for review on its branch is based
on the file before the rollout's commits: merging it conflicts (the reviewer resolves it) or ends the rollout, as
a redeploy in direct mode does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from mlplatform import kube
from mlplatform.gitops import waiting_message
from mlplatform.serving.errors import BackendUnavailable, DeploymentNotFound, ServingConflict, ServingError
from mlplatform.serving.kubernetes import (KubernetesServing, KubernetesServingConfig, RolloutChange, end_change,
                                           log_change, patched, rollout_patch, set_change, start_change)
from mlplatform.serving.gateway import Traffic
from mlplatform.serving.inference_log import DEFAULTS
from mlplatform.serving.rollout import Rollout, from_config
from mlplatform_core.catalog import Catalog
from mlplatform_core.names import annotation_key

from .gitops import Commit, GitOpsConflict, GitOpsError, GitOpsRepository, author, commit_message, http_status
from .rollout_backends import PLATFORM, _statuses
from .traffic_maps import TrafficMaps
from .workloads import Actor, WorkloadAdmission

log = logging.getLogger(__name__)
ATTEMPTS = 3  # reads of the RayService from Git while others' commits keep changing its file


class KubernetesRollouts:
    """On a cluster: the team's RayService, patched with the hub pod's service account (its Role in every
    team namespace lets it get, list and patch RayServices: hub_config/render/teams.py), and the team's traffic map
    in the hub's namespace (traffic_maps.py: the gateway routes by it). The API server's admission webhook admits
    and audits each patch like any other change of the RayService.

    In GitOps mode (the module's docstring) each change is a commit to `repository()` instead, checked first with
    `admission` (the service's WorkloadAdmission) when given."""

    def __init__(self, catalog: Callable[[], Catalog], api_client: Any = None,
                 repository: Callable[[], GitOpsRepository] | None = None, admission: WorkloadAdmission | None = None):
        self.catalog, self._client = catalog, api_client
        self.repository, self.admission = repository, admission

    def _serving(self, team: str) -> KubernetesServing:
        catalog = self.catalog()
        if team not in catalog.teams:
            raise DeploymentNotFound(f"team {team!r} is not a team of the catalog")
        config = KubernetesServingConfig(namespace=catalog.teams[team].namespace, team=team, user="platform")
        return KubernetesServing(config, api_client=self._api())

    def _api(self):
        if self._client is None:  # once: the API client keeps its connections
            self._client = kube.connect()
        return self._client

    def status(self, team, name):
        return _routed(self._serving(team).status(name), self._maps().read(team).get(name))

    def active(self):
        """The endpoints in rollout, each team's map cleaned of endpoints no longer in rollout (deleted, or their
        rollout ended by a GitOps merge): read before the RayServices, so an entry that start() adds meanwhile is
        of a RayService already in rollout (start patches first, then maps)."""
        endpoints, maps = [], {}
        for team in self.catalog().teams:
            try:
                maps[team] = mapped = self._maps().read(team)
                in_rollout = self._serving(team).in_rollout()
                for name in sorted(set(mapped) - set(in_rollout)):
                    log.info("%s/%s is no longer in rollout: out of its team's traffic map", team, name)
                    self._maps().set(team, name, None)
            except ServingError:
                log.exception("the rollouts of team %s could not be read; they are checked at the next pass", team)
                continue
            endpoints += [(team, name) for name in in_rollout]
        # Each status with its team's map as read above (one read per team and pass, not one per endpoint).
        return _statuses(lambda team, name: _routed(self._serving(team).status(name), maps[team].get(name)),
                         endpoints)

    # --- each change: the RayService (a patch, or in GitOps mode a commit) and the team's traffic map ------
    def start(self, team, name, *, model_version, requested_uri, rollout, inference_log, actor=PLATFORM):
        """The candidate first (the gateway routes nothing to it before its map entry), then its traffic; a map
        that cannot be written ends the rollout again."""
        change = start_change(name, model_version=model_version, requested_uri=requested_uri, rollout=rollout,
                              inference_log=inference_log)
        status = self._apply(team, name, change, actor, lambda before: f"candidate version {model_version} in "
                                                                        f"{_settings(rollout)}")
        traffic = Traffic(team=team, champion_version=str(status["model_version"]),
                          candidate_version=str(model_version), rollout=rollout,
                          sample_rate=_sample_rate(inference_log))
        try:
            self._maps().set(team, name, traffic)
        except ServingError:
            with contextlib.suppress(ServingError):
                self._apply(team, name, end_change(name, promote=False), actor,
                            lambda before: f"candidate version {model_version} aborted: the gateway's traffic map "
                                           "could not be written")
            raise
        return _routed(status, traffic)

    def change(self, team, name, rollout, *, actor=PLATFORM):
        def subject(before: dict) -> str:
            candidate, champion = before["rollout"]["model_version"], before["model_version"]
            if rollout.mode != "off":
                return f"candidate version {candidate} in {_settings(rollout)}"
            rolled_back = "rolled back: " if actor == PLATFORM and rollout.reason else ""
            return f"{rolled_back}candidate version {candidate} off, version {champion} answers everything"
        return self._routing(team, name, lambda traffic: dataclasses.replace(traffic, rollout=rollout),
                             set_change(name, rollout), actor, subject, why=rollout.reason or "")

    def set_inference_log(self, team, name, inference_log, *, actor=PLATFORM):
        return self._routing(team, name,
                             lambda traffic: dataclasses.replace(traffic, sample_rate=_sample_rate(inference_log)),
                             log_change(name, inference_log), actor, lambda before: _log_settings(inference_log))

    def end(self, team, name, *, promote, actor=PLATFORM):
        def subject(before: dict) -> str:
            candidate, champion = before["rollout"]["model_version"], before["model_version"]
            return f"version {candidate} promoted, it answers everything" if promote \
                else f"candidate version {candidate} aborted, version {champion} answers everything"
        return self._routing(team, name, lambda traffic: None, end_change(name, promote=promote), actor, subject)

    def last_commit(self, team, name):
        """GitOps mode: the last commit of the endpoint's file (Commit.as_dict()), None outside GitOps mode or when
        Git has no such file."""
        catalog = self.catalog()
        gitops = catalog.gitops
        if gitops is None or self.repository is None:
            return None
        path = gitops.path("serving", team=team, namespace=catalog.teams[team].namespace, name=name)
        _, last = _git(lambda: self.repository().file(path, gitops.branch))
        return last.as_dict() if last else None

    def _routing(self, team: str, name: str, route: Callable[[Traffic], Traffic | None], change: RolloutChange,
                 actor: str, subject: Callable[[dict], str], why: str = "") -> dict:
        """A change of a rollout's traffic: the team's map first (the gateway moves traffic at once, also before
        Argo CD syncs a commit: a rollback never waits), then the RayService's record of it; a refused change puts
        the map back."""
        self._gitops()  # refused before anything is written when there is no repository to commit to
        maps = self._maps()
        before = mapped = maps.read(team).get(name)
        if before is None:  # not routed (a rollout from before the gateway, or one ending): the RayService's record
            status = self._serving(team).status(name)
            if not status.get("rollout"):
                raise ServingConflict(f"{name!r} has no rollout; start one with a candidate version first")
            before = Traffic(team=team, champion_version=str(status["model_version"]),  # routing nothing: off
                             candidate_version=str(status["rollout"]["model_version"]),
                             rollout=from_config(_routed(status, None)["rollout"]["rollout"]),
                             sample_rate=_sample_rate(status["rollout"].get("inference_log")))
        traffic = route(before)
        maps.set(team, name, traffic)
        try:
            status = self._apply(team, name, change, actor, subject, why)
        except ServingError:
            with contextlib.suppress(ServingError):
                maps.set(team, name, mapped)
            raise
        return _routed(status, traffic)

    def _apply(self, team: str, name: str, change: RolloutChange, actor: str, subject: Callable[[dict], str],
               why: str = "") -> dict:
        """`change` on the team's RayService: patched, or in GitOps mode committed."""
        if self._gitops():
            return self._commit(team, name, change, actor, subject, why)
        return self._serving(team).change_application(name, change)

    def _maps(self) -> TrafficMaps:
        return TrafficMaps(self._api(), self.catalog().kubernetes.hub_namespace)

    def _gitops(self) -> bool:
        """Whether changes are commits; in GitOps mode without a repository, nothing is changed at all."""
        if self.catalog().gitops is None:
            return False
        if self.repository is None:
            raise BackendUnavailable("the platform is in GitOps mode: a rollout's changes are commits, and this "
                                     "service was given no GitOps repository to commit to; nothing was changed")
        return True

    def _commit(self, team: str, name: str, change: RolloutChange, actor: str, subject: Callable[[dict], str],
                why: str = "") -> dict:
        """Read the RayService from Git, apply `change` as the patch would, write it back as `actor`."""
        serving = self._serving(team)
        catalog = self.catalog()
        gitops, namespace = catalog.gitops, catalog.teams[team].namespace
        path = gitops.path("serving", team=team, namespace=namespace, name=name)
        repository = self.repository()
        by = author(actor, gitops.committer.email)
        for attempt in range(ATTEMPTS):
            document, last = _git(lambda: repository.file(path, gitops.branch))
            if document is None:
                removed = f" (removed in {last.sha[:7]}: {last.message.splitlines()[0]})" if last else ""
                raise ServingConflict(
                    f"{name!r} of team {team} is not in Git: {path} is not in {gitops.branch} of the GitOps "
                    f"repository{removed}. In GitOps mode a rollout is a commit of that file, and nothing is changed "
                    f"behind Git's back: redeploy {name!r} from a notebook (that commits it), then start the rollout")
            updated = patched(document, rollout_patch(document, change))
            updated["metadata"].setdefault("annotations", {})[annotation_key("deploy-id")] = uuid.uuid4().hex
            self._admit(name, actor, updated, document)
            title = f"Rollout {name}: {subject(serving.describe(document))}"
            message = commit_message(title, why, user=actor, team=team, kind="serving")
            try:
                commit: Commit = _git(lambda: repository.write(path, updated, author=by, message=message,
                                                               branch=gitops.branch, expected=last.sha), retry=True)
                break
            except GitOpsConflict as conflict:  # someone's commit changed the file since it was read
                if attempt == ATTEMPTS - 1:
                    raise ServingConflict(str(conflict)) from None
        answer = {"commit": commit.as_dict(), "waiting_for": "Argo CD to sync it"}
        return {**serving.describe(updated), "commit": answer["commit"], "message": waiting_message(answer)}

    def _admit(self, name: str, actor: str, updated: dict, document: dict) -> None:
        """What the admission webhook will answer when Argo CD applies `updated` (dry run): refused now, not in a
        sync nobody watches."""
        if self.admission is None:
            return
        review = self.admission.decide({
            "uid": "gitops-rollout", "dryRun": True, "operation": "UPDATE", "name": name,
            "namespace": updated["metadata"].get("namespace"),
            "resource": {"group": "ray.io", "resource": "rayservices"}, "object": updated, "oldObject": document,
        }, Actor(actor, hub_user=False))  # Argo CD applies it: the object's user label is charged
        if not review.get("allowed"):
            status = review.get("status") or {}
            text = (f"the platform would not admit this change of {name!r}: {status.get('message')}; nothing was "
                    "committed")
            refused = ServingConflict(text) if status.get("code") == 409 else ServingError(text)
            refused.status_code = status.get("code") or 403
            raise refused


def _git(operation: Callable[[], Any], *, retry: bool = False) -> Any:
    """`operation` on the GitOps repository; its errors as the serving API's (409: a conflict, or a push the server
    refused; 503: the server unreachable, or refusing the platform's credential). `retry`: a GitOpsConflict is the
    caller's to handle."""
    try:
        return operation()
    except GitOpsError as e:
        if retry and isinstance(e, GitOpsConflict):
            raise
        raise {404: DeploymentNotFound, 409: ServingConflict}.get(http_status(e), BackendUnavailable)(str(e)) from None


def _routed(status: dict, traffic: Traffic | None) -> dict:
    """`status` with its rollout as the team's traffic map routes it (the platform's record of the candidate's
    version and the settings: what the gateway does, whatever the RayService's annotation says). A candidate the map
    does not route (its rollout ending in a commit Argo CD has not synced, or started before the gateway) gets
    nothing: mode off."""
    if not status.get("rollout"):
        return status
    if traffic is None:
        recorded = status["rollout"].get("rollout") or {}
        off = Rollout(mode="off", since=recorded.get("since"),
                      reason="the rollout gateway does not route it: the team's traffic map has no entry for it")
        return {**status, "rollout": {**status["rollout"], "rollout": off.to_dict()}}
    return {**status, "rollout": {**status["rollout"], "model_version": traffic.candidate_version,
                                  "rollout": traffic.rollout.to_dict()}}


def _sample_rate(inference_log: Mapping[str, Any] | None) -> float:
    return 0.0 if inference_log is None else float({**DEFAULTS, **inference_log}["sample_rate"])


def _settings(rollout: Rollout) -> str:
    """'shadow', 'shadow, 50% mirrored', 'canary, 5% of requests'."""
    if rollout.mode == "canary":
        return f"canary, {rollout.share * 100:g}% of requests"
    return rollout.mode if rollout.mirror_rate >= 1 else f"{rollout.mode}, {rollout.mirror_rate * 100:g}% mirrored"


def _log_settings(inference_log: Mapping[str, Any] | None) -> str:
    """'inference log off', 'inference log on, 10% of requests sampled'."""
    if inference_log is None:
        return "inference log off"
    rate = float(inference_log.get("sample_rate", 1.0))
    return "inference log on" + ("" if rate >= 1 else f", {rate * 100:g}% of requests sampled")
