"""Deploy, delete, submit and cancel as commits (catalog `gitops`): the platform service writes the object a
notebook's backend built to the team's file of the GitOps repository, as the user, and Argo CD syncs it.

    changes.put(caller, "team-vision", "serving", "iris", ray_service, message="new model version 4")
    changes.delete(caller, "team-vision", "serving", "iris", message="retired")
    changes.get(caller, "team-vision", "serving", "iris")   # {"object": ..., "commit": the file's last commit}

Kinds: `serving` (a KubeRay RayService) and `spark` (a Spark operator SparkApplication). The notebook builds
the object, so nothing in it is trusted; before anything is committed the service checks that
- the caller is a member of the team (or a platform admin);
- the object is the kind's apiVersion and kind, named `name`, in the team's namespace, labelled with the team,
  the caller as its user and mlplatform as its manager (the labels the quota, the ledger and the backends read);
- it passes the admission webhook's own rules as a dry run (workloads.py: GPUs of a known type, the team's
  budget): a commit Argo CD could never apply is refused now, not in a sync nobody watches.
Argo CD's apply still goes through the API server: CRD validation, the admission webhook (which charges the
object to its user label), the namespace's quota and Pod Security.

Where: `gitops.paths.<kind>` for the team; pushed to `gitops.branch` (mode direct) or to the change's review
branch (mode review: the object appears once someone merges it). Each commit's author is the user
(`<user>@<the committer's e-mail domain>`), its committer the platform; its message says what and why, and
trailers name the user, team and kind. Audited: deploy / redeploy / delete (serving), submit / cancel (spark)
with outcome `succeeded` and the commit; a conflict or a push the Git server refuses as `failed` with the
reason; a refusal by the checks above as `refused`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlplatform.registry.errors import Conflict, Forbidden, NotFound, RegistryError
from mlplatform_core.catalog import Catalog
from mlplatform_core.catalog_gitops import KINDS
from mlplatform_core.names import DNS_LABEL, MANAGED_BY, MANAGED_BY_LABEL, TEAM_LABEL, USER_LABEL, label_value

from .audit_log import AuditLog
from .gitops import GitOpsError, GitOpsNotFound, GitOpsRepository, author, commit_message, http_status
from .promotion import Caller
from .workloads import Actor, WorkloadAdmission

MAX_MESSAGE = 2000  # characters of the user's "why"
MAX_OBJECT_BYTES = 512 * 1024  # a RayService's serveConfigV2 is the largest part; Kubernetes' own limit is ~1.5 MiB


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    resource: tuple[str, str]  # (group, plural): what the admission webhook is asked about
    ledger: str  # the audit target's kind
    write: str  # the action of a first commit
    rewrite: str  # ... of a commit of an existing file
    remove: str  # ... of the file's removal


SPEC = {
    "serving": Kind("ray.io/v1", "RayService", ("ray.io", "rayservices"), "model", "deploy", "redeploy", "delete"),
    "spark": Kind("sparkoperator.k8s.io/v1beta2", "SparkApplication", ("sparkoperator.k8s.io", "sparkapplications"),
                  "spark", "submit", "submit", "cancel"),
}
assert set(SPEC) == set(KINDS)


class InvalidRequest(RegistryError):
    status = 400


class Unavailable(RegistryError):
    """The Git server unreachable, or refusing the platform's own credential."""

    status = 503


class GitOpsChanges:
    def __init__(self, *, catalog: Callable[[], Catalog], audit: AuditLog, workloads: WorkloadAdmission,
                 repository: Callable[[], GitOpsRepository],
                 on_commit: Callable[[str, str, str, dict[str, Any]], None] | None = None):
        self.catalog, self.audit, self.workloads, self.repository = catalog, audit, workloads, repository
        self.on_commit = on_commit  # (team, kind, name, the commit's dict) after each commit: what else follows Git

    # --- the API ----------------------------------------------------------------------------------
    def get(self, caller: Caller, team: str, kind: str, name: str) -> dict[str, Any]:
        path, branch = self._where(caller, team, kind, name, "read", audited=False)
        document, commit = self._git(lambda repo: repo.file(path, branch))
        return {"kind": kind, "team": team, "name": name, "path": path, "branch": branch,
                "mode": self.catalog().gitops.mode, "object": document, "commit": commit.as_dict() if commit else None,
                "waiting_for": self._waiting(branch)}

    def put(self, caller: Caller, team: str, kind: str, name: str, document: Any, message: Any = "") -> dict[str, Any]:
        spec = SPEC.get(kind)
        path, branch = self._where(caller, team, kind, name, spec.write if spec else "write")
        why = self._message(message)
        try:
            self._check(caller, team, kind, name, document)
        except (InvalidRequest, Forbidden, Conflict) as refused:
            self._audit(spec.write, caller, team, kind, name, "refused", {"reason": str(refused)})
            raise
        existing = self._git(lambda repo: repo.file(path, branch))[0]
        action = spec.rewrite if existing is not None else spec.write
        commit = self._commit(action, caller, team, kind, name, why, lambda repo, author, text: repo.write(
            path, document, author=author, message=text, branch=branch, keep=self._keep(team)))
        return self._answer(action, kind, team, name, commit)

    def delete(self, caller: Caller, team: str, kind: str, name: str, message: Any = "") -> dict[str, Any]:
        spec = SPEC.get(kind)
        path, branch = self._where(caller, team, kind, name, spec.remove if spec else "remove")
        why = self._message(message)
        try:
            commit = self._commit(spec.remove, caller, team, kind, name, why, lambda repo, author, text: repo.remove(
                path, author=author, message=text, branch=branch))
        except GitOpsNotFound as e:
            raise NotFound(str(e)) from None
        return self._answer(spec.remove, kind, team, name, commit, removed=True)

    # --- checks -----------------------------------------------------------------------------------
    def _where(self, caller: Caller, team: str, kind: str, name: str, action: str, *,
               audited: bool = True) -> tuple[str, str]:
        """(the file, the branch) of object `name` of `kind` of `team`, once the caller may change it."""
        catalog = self.catalog()
        gitops = catalog.gitops
        if gitops is None:
            raise Conflict("the platform is not in GitOps mode (the catalog has no `gitops` section): deploys and "
                           "submits go to the cluster directly")
        if kind not in SPEC:
            raise NotFound(f"kind {kind!r} is not allowed; allowed: {', '.join(SPEC)}")
        if team not in catalog.teams:
            raise NotFound(f"team {team!r} is not a team of the catalog; teams: {', '.join(catalog.teams)}")
        if not isinstance(name, str) or not DNS_LABEL.fullmatch(name) or len(name) > 63:
            raise InvalidRequest(f"name {name!r} is not allowed: a DNS label (lowercase letters, digits and '-', "
                                 "starting with a letter, at most 63 characters)")
        if not (caller.admin or team in caller.teams):
            refused = Forbidden(f"{caller.name} may not {action} {kind} {name!r} of team {team} "
                                f"({caller.name}'s teams: {', '.join(caller.teams) or 'none'})")
            if audited:
                self._audit(action, caller, team, kind, name, "refused", {"reason": str(refused)})
            raise refused
        namespace = catalog.teams[team].namespace
        path = gitops.path(kind, team=team, namespace=namespace, name=name)
        branch = gitops.review_branch(kind, team=team, name=name) if gitops.mode == "review" else gitops.branch
        return path, branch

    def _check(self, caller: Caller, team: str, kind: str, name: str, document: Any) -> None:
        """The object is what the kind's backend builds for this caller, and the webhook would admit it."""
        spec, namespace = SPEC[kind], self.catalog().teams[team].namespace
        if not isinstance(document, dict):
            raise InvalidRequest(f"object: {type(document).__name__} is not allowed: a {spec.kind} as a JSON object")
        meta = document.get("metadata") if isinstance(document.get("metadata"), dict) else {}
        labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
        expected = [("apiVersion", document.get("apiVersion"), spec.api_version),
                    ("kind", document.get("kind"), spec.kind),
                    ("metadata.name", meta.get("name"), name),
                    ("metadata.namespace", meta.get("namespace"), namespace),
                    (f"metadata.labels[{TEAM_LABEL}]", labels.get(TEAM_LABEL), label_value(team)),
                    (f"metadata.labels[{USER_LABEL}]", labels.get(USER_LABEL), label_value(caller.name)),
                    (f"metadata.labels[{MANAGED_BY_LABEL}]", labels.get(MANAGED_BY_LABEL), MANAGED_BY)]
        for field, value, allowed in expected:
            if value != allowed:
                raise InvalidRequest(f"object.{field}: {value!r} is not allowed; allowed: {allowed!r}")
        if not isinstance(document.get("spec"), dict):
            raise InvalidRequest(f"object.spec: {document.get('spec')!r} is not allowed: the {spec.kind}'s spec")
        if len(repr(document)) > MAX_OBJECT_BYTES:
            raise InvalidRequest(f"object: more than {MAX_OBJECT_BYTES // 1024} KiB is not allowed")
        review = self.workloads.decide({
            "uid": "gitops", "dryRun": True, "operation": "CREATE", "name": name, "namespace": namespace,
            "resource": {"group": spec.resource[0], "resource": spec.resource[1]}, "object": document,
        }, Actor(caller.name, hub_user=True))
        if not review.get("allowed"):
            status = review.get("status") or {}
            error = Forbidden if status.get("code") == 403 else Conflict if status.get("code") == 409 \
                else InvalidRequest
            raise error(f"the platform would not admit this {spec.kind}: {status.get('message')}; nothing was "
                        "committed")

    def _message(self, message: Any) -> str:
        if not isinstance(message, str) or len(message) > MAX_MESSAGE:
            raise InvalidRequest(f"message: {message!r:.80} is not allowed: why you make this change, as text of at "
                                 f"most {MAX_MESSAGE} characters")
        return message.strip()

    def _keep(self, team: str) -> tuple[str, str]:
        """A README in the team's directory: Argo CD fails an Application whose path is not in Git ("app path does
        not exist"), which would leave the team's last object unpruned once its file goes. Not one of the kinds'
        files, so never applied."""
        catalog = self.catalog()
        directory = catalog.gitops.team_directory(team=team, namespace=catalog.teams[team].namespace)
        return (f"{directory}/README.md", f"# {team}\n\nWhat team {team} runs, one file per object, written by the "
                f"platform service ({catalog.platform.name}) and synced by Argo CD's Application mlplatform-{team}. "
                "Keep this file: without it the directory goes with its last object, and Argo CD cannot prune it.\n")

    # --- committing -------------------------------------------------------------------------------
    def _commit(self, action: str, caller: Caller, team: str, kind: str, name: str, why: str, change):
        spec, gitops = SPEC[kind], self.catalog().gitops
        text = commit_message(f"{action.capitalize()} {spec.kind} {team}/{name}", why, user=caller.name, team=team,
                              kind=kind)
        try:
            commit = self._git(lambda repo: change(repo, author(caller.name, gitops.committer.email), text))
        except (Conflict, Unavailable) as failed:
            self._audit(action, caller, team, kind, name, "failed", {"reason": str(failed)})
            raise
        self._audit(action, caller, team, kind, name, "succeeded", {
            "commit": commit.sha, "branch": commit.branch, "path": commit.path, "change": commit.change})
        if self.on_commit is not None:
            self.on_commit(team, kind, name, commit.as_dict())
        return commit

    def _git(self, operation):
        """Run `operation` on the repository; its errors as the service's (409: a conflict or a push the server
        refused; 503: the server unreachable or refusing the platform's credential)."""
        try:
            return operation(self.repository())
        except GitOpsNotFound:
            raise
        except GitOpsError as e:
            raise (Conflict if http_status(e) == 409 else Unavailable)(str(e)) from None

    def _answer(self, action: str, kind: str, team: str, name: str, commit, *, removed: bool = False) -> dict[str, Any]:
        return {"action": action, "kind": kind, "team": team, "name": name, "mode": self.catalog().gitops.mode,
                "commit": commit.as_dict(), "waiting_for": self._waiting(commit.branch, removed=removed)}

    def _waiting(self, branch: str, *, removed: bool = False) -> str:
        """What a change on `branch` waits for before the cluster has it."""
        gitops, argo = self.catalog().gitops, "Argo CD to prune it" if removed else "Argo CD to sync it"
        return argo if branch == gitops.branch else f"someone to merge {branch} into {gitops.branch}, then {argo}"

    def _audit(self, action: str, caller: Caller, team: str, kind: str, name: str, outcome: str,
               details: dict) -> None:
        self.audit.append(action, actor=caller.name, team=team, target=f"{SPEC[kind].ledger}:{team}/{name}"
                          if kind in SPEC else f"{kind}:{team}/{name}", outcome=outcome,
                          details={"via": "gitops", **details})
