"""The catalog's `gitops` section: where the platform commits what users deploy, and how Argo CD syncs it.

Unset, nothing changes: the notebook applies objects straight to the Kubernetes API. Set, every deploy,
delete and submit becomes a commit of the very object the Kubernetes backend would apply, to the file
`paths.<kind>` names for the team, and `mlplatform render` writes one Argo CD `Application` per team
namespace that syncs the team's directory, each in an `AppProject` of the team's own unless `argocd.project`
names one (hub_config/render/gitops.py), and Backstage templates that write the same files
(hub_config/render/backstage.py). The methods below are the one spelling of file
paths, review branches and commit links that every writer uses.
"""

from __future__ import annotations

import posixpath
import re
import string
from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from .names import DNS_LABEL_PATTERN

KINDS = ("serving", "spark")  # RayService, SparkApplication: the objects users make from the notebook
PATH_PLACEHOLDERS = ("team", "namespace", "name")
TEAM_PLACEHOLDERS = ("{team}", "{namespace}")
# A branch or ref name git accepts (git check-ref-format, simplified: no spaces, ~^:?*[\, '..', '@{', '//').
_REF = re.compile(r"^(?!/)(?!.*(?:\.\.|//|@\{|\.lock/|\.lock$|/$|\.$))[^\s~^:?*\[\\]+$")
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_SCP_LIKE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+$")  # git@github.com:org/repo.git
# Argo CD sync options are Key=Value (argo-cd docs, "Sync Options").
_SYNC_OPTION = re.compile(r"^[A-Z][A-Za-z]+=[A-Za-z0-9.,_-]+$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _placeholders(template: str, allowed: tuple[str, ...]) -> list[str]:
    """The `{placeholder}`s of `template`; ValueError naming any other (or a format spec) and what is allowed."""
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise ValueError(f"not a template ({e}); write placeholders as {{{allowed[0]}}}") from None
    for name, spec, conv in fields:
        if name not in allowed or spec or conv:
            raise ValueError(f"{{{name}{'!' + conv if conv else ''}{':' + spec if spec else ''}}} is not a "
                             f"placeholder; allowed: {', '.join('{' + a + '}' for a in allowed)}")
    return [name for name, _, _ in fields]


def _file_template(value: str) -> str:
    """A path in the repository with {team}/{namespace} in a directory and {name} in the file name."""
    names = _placeholders(value, PATH_PLACEHOLDERS)
    parts = value.split("/")
    if value.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError("must be a relative path without empty, '.' or '..' parts, "
                         "e.g. 'teams/{team}/serving/{name}.yaml'")
    if not value.endswith((".yaml", ".yml")):
        raise ValueError("must name a .yaml file, e.g. 'teams/{team}/serving/{name}.yaml'")
    if "{name}" not in parts[-1] or any("{name}" in p for p in parts[:-1]) or names.count("name") != 1:
        raise ValueError("must have {name} once, in the file name (one file per object, all of a kind in one "
                         "directory), e.g. 'teams/{team}/serving/{name}.yaml'")
    if not any(t in p for p in parts[:-1] for t in TEAM_PLACEHOLDERS):
        raise ValueError("must have {team} or {namespace} in a directory: each team's Argo CD Application syncs "
                         "its own directory, never another team's files, e.g. 'teams/{team}/serving/{name}.yaml'")
    return value


FileTemplate = Annotated[str, AfterValidator(_file_template)]


class GitopsPaths(_Model):
    """Where each kind's objects live in the repository: one file per object. Placeholders: {team} (the
    catalog's team), {namespace} (its namespace), {name} (the application's or job's name)."""

    serving: FileTemplate = "teams/{team}/serving/{name}.yaml"
    spark: FileTemplate = "teams/{team}/spark/{name}.yaml"
    # The Backstage Component of a served model (the Ray Service template writes it beside the RayService
    # commit); outside the kinds' directories, so Argo CD never tries to apply it.
    catalog_info: FileTemplate = "catalog-info/{team}/{name}.yaml"

    @model_validator(mode="after")
    def _apart(self):
        folders = {kind: posixpath.dirname(getattr(self, kind)) for kind in (*KINDS, "catalog_info")}
        if self.serving == self.spark:
            raise ValueError(f"serving and spark are both {self.serving!r}: a RayService and a SparkApplication "
                             "of one name would overwrite each other; give each kind a directory or file name of "
                             "its own")
        if folders["catalog_info"] in (folders["serving"], folders["spark"]):
            raise ValueError(f"catalog_info's directory {folders['catalog_info']!r} holds Kubernetes objects that "
                             "Argo CD applies; allowed: a directory of its own, e.g. 'catalog-info/{team}/{name}.yaml'")
        common = team_directory_template(self)
        if not any(t in common for t in TEAM_PLACEHOLDERS):
            raise ValueError(f"serving ({self.serving!r}) and spark ({self.spark!r}) share no directory of the team: "
                             "each team's Argo CD Application syncs one directory; allowed: paths under a common "
                             "directory with {team} or {namespace}, e.g. 'teams/{team}/serving/{name}.yaml' and "
                             "'teams/{team}/spark/{name}.yaml'")
        return self


def team_directory_template(paths: GitopsPaths) -> str:
    """The deepest directory holding every kind's files (with its placeholders): what a team's Application syncs."""
    dirs = [posixpath.dirname(getattr(paths, kind)).split("/") for kind in KINDS]
    common = []
    for parts in zip(*dirs):
        if len(set(parts)) > 1:
            break
        common.append(parts[0])
    return "/".join(common)


class GitIdentity(_Model):
    """The commit identity of the platform (the committer; the author is the user who deployed)."""

    name: str = Field(min_length=1)
    email: str

    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        if not _EMAIL.fullmatch(v):
            raise ValueError("not an e-mail address, e.g. 'mlplatform@example.org'")
        return v


class ArgoCdSyncPolicy(_Model):
    """The Applications' `syncPolicy`: what Argo CD does when the repository and the cluster differ."""

    # Sync every commit without a person pressing Sync (false: Argo CD only reports OutOfSync).
    automated: bool = True
    # A file removed from Git (delete in the notebook) removes the object from the cluster.
    prune: bool = True
    # A change made in the cluster behind Git's back (kubectl edit) is put back to what Git holds.
    self_heal: bool = True
    # CreateNamespace=false: `mlplatform render` makes the team namespaces (teams/<team>.yaml), with their quota
    # and policies; PrunePropagationPolicy=foreground: a pruned RayService is gone only with its Ray cluster's
    # pods (their GPUs are free again); FailOnSharedResource=true: an object another Application manages is
    # refused, not taken over; ServerSideApply=true: no last-applied annotation beside a RayService's large
    # serveConfigV2 (client-side apply's 256 KiB annotation limit).
    sync_options: list[str] = ["CreateNamespace=false", "PrunePropagationPolicy=foreground",
                               "FailOnSharedResource=true", "ServerSideApply=true"]

    @field_validator("sync_options")
    @classmethod
    def _options(cls, v: list[str]) -> list[str]:
        for option in v:
            if not _SYNC_OPTION.fullmatch(option):
                raise ValueError(f"{option!r} is not an Argo CD sync option; allowed: Key=Value, e.g. "
                                 "'PruneLast=true' (argo-cd docs, \"Sync Options\")")
        return v


class ArgoCd(_Model):
    namespace: Annotated[str, Field(pattern=DNS_LABEL_PATTERN)] = "argocd"  # where Argo CD runs (its Applications)
    # The AppProject of every team's Application. Unset: `mlplatform render` writes one per team
    # (`mlplatform-<team>`) permitting only the GitOps repository, the team's namespace and RayServices and
    # SparkApplications, so a file in one team's directory can reach neither another team's namespace nor any
    # other kind. A name (e.g. Argo CD's `default`, which permits every namespace and kind): every Application
    # uses that project, which is the cluster's to define; nothing of it is rendered.
    project: Annotated[str, Field(pattern=DNS_LABEL_PATTERN)] | None = None
    sync_policy: ArgoCdSyncPolicy = ArgoCdSyncPolicy()


class Gitops(_Model):
    """`gitops`: Git is the truth for what users deploy; Argo CD applies it."""

    # Clone URL of the GitOps repository (https://, ssh:// or git@host:path), as Argo CD and the platform
    # service reach it. The platform's credentials for it never reach notebooks.
    repository: str
    branch: str = "main"  # what Argo CD syncs (targetRevision), and where `direct` pushes
    paths: GitopsPaths = GitopsPaths()
    committer: GitIdentity
    # direct: each change is pushed to `branch` (Argo CD syncs it at once); review: to a branch of its own
    # (review_branch()), for someone to merge; the object appears once the change is merged.
    mode: Literal["direct", "review"] = "direct"
    review_branch_prefix: str = "mlplatform"
    # The web page of a commit, {sha} its id, e.g. "https://github.com/org/deployments/commit/{sha}";
    # unset: commits are shown without a link.
    commit_url: str | None = None
    # Which pull-request action the Backstage templates use; unset: from the repository's host
    # (github.com, gitlab.com or a host with "github"/"gitlab" in its name).
    provider: Literal["github", "gitlab"] | None = None
    argocd: ArgoCd = ArgoCd()

    @field_validator("repository")
    @classmethod
    def _repository(cls, v: str) -> str:
        url = urlparse(v)
        if _SCP_LIKE.fullmatch(v) or (url.scheme in ("https", "http", "ssh") and url.hostname and url.path.strip("/")):
            return v
        raise ValueError("not a Git repository URL; allowed: https://host/owner/repo.git, "
                         "ssh://git@host/owner/repo.git or git@host:owner/repo.git")

    @field_validator("branch", "review_branch_prefix")
    @classmethod
    def _ref(cls, v: str) -> str:
        if not _REF.fullmatch(v):
            raise ValueError("not a branch name git accepts: no spaces, ~ ^ : ? * [ \\, '..', '//' or '@{', "
                             "not ending in '/', '.' or '.lock', e.g. 'main'")
        return v

    @field_validator("commit_url")
    @classmethod
    def _commit_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        names = _placeholders(v, ("sha",))
        if names != ["sha"] or urlparse(v).scheme not in ("https", "http"):
            raise ValueError("must be an http(s) URL with {sha} once, e.g. "
                             "'https://github.com/org/deployments/commit/{sha}'")
        return v

    # --- the one spelling of paths, branches and links --------------------------------------------
    def path(self, kind: str, *, team: str, namespace: str, name: str) -> str:
        """The file of object `name` of `kind` (serving, spark, catalog_info) of `team` in the repository."""
        return getattr(self.paths, kind).format(team=team, namespace=namespace, name=name)

    def team_directory(self, *, team: str, namespace: str) -> str:
        """The directory a team's Argo CD Application syncs (every kind's files are under it)."""
        return team_directory_template(self.paths).format(team=team, namespace=namespace)

    def review_branch(self, kind: str, *, team: str, name: str) -> str:
        """Where `mode: review` pushes a change of `name`: `<review_branch_prefix>/<team>/<kind>/<name>`."""
        return f"{self.review_branch_prefix}/{team}/{kind}/{name}"

    def commit_link(self, sha: str) -> str | None:
        return self.commit_url.format(sha=sha) if self.commit_url else None

    @property
    def host_and_path(self) -> tuple[str, str]:
        """(host, 'owner/repo') of the repository URL, '.git' dropped (Backstage's repoUrl is made of them)."""
        if _SCP_LIKE.fullmatch(self.repository):
            host, path = self.repository.split("@", 1)[1].split(":", 1)
        else:
            url = urlparse(self.repository)
            host, path = url.hostname, url.path
        return host, path.strip("/").removesuffix(".git")

    @property
    def pull_request_provider(self) -> str | None:
        """github or gitlab: `provider`, else guessed from the host; None when neither fits."""
        if self.provider:
            return self.provider
        host = self.host_and_path[0]
        return next((p for p in ("github", "gitlab") if p in host), None)
