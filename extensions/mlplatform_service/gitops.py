"""The platform's GitOps writer: each change a user makes (deploy, delete, submit) as a commit of the very
object the Kubernetes backend would apply, pushed to the platform's GitOps repository for Argo CD to sync.

    repo = GitOpsRepository(url, "main", Credentials("platform", token), Identity("mlplatform", "p@example.org"),
                            workdir=state / "gitops", commit_url="https://git.example.org/deploy/commit/{sha}")
    commit = repo.write("teams/vision/serving/iris.yaml", ray_service, author=Identity("Alice", "alice@..."),
                        message="Deploy iris (model iris/4)")
    repo.remove("teams/vision/serving/iris.yaml", author=..., message="Delete iris")
    repo.read("teams/vision/serving/iris.yaml")     # the object Git holds, or None
    repo.file("teams/vision/serving/iris.yaml")     # (that object, the last commit that changed the file)

The author of each commit is the user, the committer the platform. Only the platform service holds the
repository's credentials: they reach git through its environment (an `Authorization` header for this
repository's URL, set with GIT_CONFIG_* variables), never its command line, a log or an error message.

Git stays the truth: a push that another commit overtook is fetched, rebased and pushed again, a bounded
number of times; a change of a file someone changed meanwhile is a `GitOpsConflict`, never a lost
update; a push the server refuses (a hook, branch protection, bad credentials) is a `GitOpsRefused` with
the server's reason. Either way nothing was committed and the working clone is back at the remote branch.

One working clone per repository and process (`workdir`), fetched before each change; changes are
serialized with a lock on `<workdir>.lock` (threads and processes alike). Every call blocks on git: call it
from a thread (`asyncio.to_thread`) in the service's event loop.
"""

from __future__ import annotations

import base64
import os
import posixpath
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from mlplatform.localhost import locked
from mlplatform_core.names import label_value

# Of the service's environment, git gets only what it needs to reach the server (never the service's secrets).
PASSED_ENVIRONMENT = ("PATH", "HOME", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
                      "no_proxy", "GIT_SSL_CAINFO", "SSL_CERT_FILE")
# "<user>:<token>": the platform service's GitOps credential (the hub hands it to the service alone).
CREDENTIALS_VARIABLE = "MLPLATFORM_GITOPS_CREDENTIALS"
CHANGES = {"A": "added", "M": "modified", "D": "removed"}  # `git status --porcelain`'s index column
AUTH_FAILED = "authentication failed"  # GitOpsRefused.reason when the server refuses the platform's credential
AUTHENTICATION_FAILED = ("Authentication failed", "could not read Username", "could not read Password",
                         "returned error: 401", "returned error: 403")


@dataclass(frozen=True)
class Identity:
    name: str
    email: str


@dataclass(frozen=True)
class Credentials:
    """The platform's credential for the repository's HTTP(S) URL: a user and a token (or password)."""

    username: str
    token: str = field(repr=False)

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> Credentials | None:
        """The service's credential from $MLPLATFORM_GITOPS_CREDENTIALS (taken out of os.environ, so no
        process the service starts inherits it); None when unset."""
        value = (environ if environ is not None else os.environ).pop(CREDENTIALS_VARIABLE, "")
        if not value:
            return None
        username, sep, token = value.partition(":")
        if not (sep and username and token):
            raise ValueError(f"${CREDENTIALS_VARIABLE} must be <user>:<token> (the value is not shown)")
        return cls(username, token)


@dataclass(frozen=True)
class Commit:
    sha: str
    branch: str
    path: str
    author: Identity
    message: str
    url: str | None = None  # the commit's web page, when the repository has one (`commit_url`)
    change: str = "modified"  # what the commit did to the file: added, modified, unchanged, removed
    time: str | None = None  # the committer's time, ISO 8601

    def as_dict(self) -> dict[str, Any]:
        return {"sha": self.sha, "short": self.sha[:7], "branch": self.branch, "path": self.path,
                "author": self.author.name, "message": self.message, "url": self.url, "change": self.change,
                "time": self.time}


def author(user: str, committer_email: str) -> Identity:
    """The author of a user's commit: the hub user, at the platform committer's e-mail domain."""
    return Identity(user, f"{label_value(user)}@{committer_email.rpartition('@')[2]}")


def commit_message(subject: str, why: str, *, user: str, team: str, kind: str) -> str:
    """What and why, then trailers naming the user, the team and the kind (git interpret-trailers reads them)."""
    trailers = f"Mlplatform-User: {user}\nMlplatform-Team: {team}\nMlplatform-Kind: {kind}"
    return "\n\n".join(filter(None, [subject, why, trailers]))


class GitOpsError(RuntimeError):
    """A change could not be committed; nothing was (the message says why and what to do)."""


class GitOpsConflict(GitOpsError):
    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path = path


class GitOpsRefused(GitOpsError):
    """The Git server refused the push or the credentials; `reason` is the server's."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class GitOpsNotFound(GitOpsError, LookupError):
    pass


def http_status(error: GitOpsError) -> int:
    """The status a change's failure answers: 404 no such file, 409 a conflict or a push the server refused (its
    reason says why), 503 the server unreachable or refusing the platform's own credential."""
    if isinstance(error, GitOpsNotFound):
        return 404
    if isinstance(error, GitOpsConflict) or isinstance(error, GitOpsRefused) and error.reason != AUTH_FAILED:
        return 409
    return 503


def to_yaml(document: dict[str, Any]) -> str:
    """The committed file: the object as `mlplatform render` writes YAML (keys in the object's order)."""
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False, width=120)


class GitOpsRepository:
    def __init__(self, url: str, branch: str, credentials: Credentials | None, committer: Identity, workdir: Path,
                 *, commit_url: str | None = None, attempts: int = 5, timeout: float = 60):
        parsed = urlparse(url)
        if parsed.username or parsed.password:
            raise ValueError(f"the GitOps repository URL {parsed._replace(netloc=parsed.hostname or '').geturl()} "
                             "holds a user or password: give the credentials separately (a URL shows in logs)")
        self.url, self.branch, self.committer = url, branch, committer
        self.workdir = Path(workdir)
        self.commit_url, self.attempts, self.timeout = commit_url, attempts, timeout
        self._secrets: list[str] = []
        config = {"credential.helper": ""}  # no helper stores or prompts for anything
        if credentials is not None:
            basic = base64.b64encode(f"{credentials.username}:{credentials.token}".encode()).decode()
            config[f"http.{url}.extraHeader"] = f"Authorization: Basic {basic}"
            self._secrets = [credentials.token, basic]
        self._env = {
            **{k: v for k, v in os.environ.items() if k in PASSED_ENVIRONMENT},
            "LC_ALL": "C",  # messages parsed below are git's English ones
            "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": "", "GIT_EDITOR": "true",
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_COMMITTER_NAME": committer.name, "GIT_COMMITTER_EMAIL": committer.email,
            "GIT_CONFIG_COUNT": str(len(config)),
            **{f"GIT_CONFIG_{kind}_{i}": value for i, item in enumerate(config.items())
               for kind, value in zip(("KEY", "VALUE"), item)},
        }
        self._cloned = False

    # --- the API ------------------------------------------------------------------------------------
    def write(self, path: str, document: dict[str, Any], *, author: Identity, message: str,
              branch: str | None = None, keep: tuple[str, str] | None = None, expected: str | None = None) -> Commit:
        """Commit `document` as YAML to `path` and push it to `branch` (default: the repository's; a branch
        missing on the server starts from the repository's). Writing what the file already holds is a commit
        too (a redeploy is recorded). `keep`: (path, text) of a file the same commit adds when it is missing
        (one that keeps a directory in Git when its last object is removed). `expected`: the sha of the file's
        last commit that `document` was made from (file()'s): a commit that changed the file since makes it a
        GitOpsConflict, so a read-modify-write never overwrites someone's change."""
        text = to_yaml(document)
        kept = _relative(keep[0]) if keep else None
        target = branch or self.branch

        def change(file: Path) -> None:
            if expected is not None:
                last = self._git("log", "-1", "--format=%H %h by %an: %s", "HEAD", "--", _relative(path)).stdout
                if last.split(" ", 1)[0] != expected:
                    raise GitOpsConflict(path, f"{path} in {target} of {self.url} was changed by someone else since "
                                               f"it was read ({last.split(' ', 1)[-1].strip() or 'removed'}); nothing "
                                               "was committed: look at the current version and try again")
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(text)
            if kept and not (self.workdir / kept).exists():
                (self.workdir / kept).parent.mkdir(parents=True, exist_ok=True)
                (self.workdir / kept).write_text(keep[1])
        return self._commit(path, change, author=author, message=message, branch=branch,
                            also=(kept,) if kept else ())

    def remove(self, path: str, *, author: Identity, message: str, branch: str | None = None) -> Commit:
        """Commit the removal of `path` (Argo CD prunes the object); GitOpsNotFound when Git has no such file."""
        def change(file: Path) -> None:
            if not file.is_file():
                raise GitOpsNotFound(f"{path} is not in {branch or self.branch} of {self.url}: nothing to remove")
            file.unlink()
        return self._commit(path, change, author=author, message=message, branch=branch)

    def read(self, path: str, branch: str | None = None) -> dict[str, Any] | None:
        """The document at `path` in the server's `branch` now, or None when there is no such file."""
        return self.file(path, branch)[0]

    def file(self, path: str, branch: str | None = None) -> tuple[dict[str, Any] | None, Commit | None]:
        """(the document at `path` in the server's `branch` now or None, the last commit that changed the file
        or None): a removed file is (None, the commit that removed it). A `branch` the server does not have yet
        (a review branch before its first change) reads as the repository's branch, where it would start."""
        path, branch = _relative(path), branch or self.branch
        with self._locked():
            if branch == self.branch or not self._fetch(branch, required=False):
                branch = self.branch
                self._fetch(branch, required=True)
            ref = f"refs/remotes/origin/{branch}"
            text = self._git("show", f"{ref}:{path}").stdout \
                if self._git("ls-tree", "--name-only", ref, "--", path).stdout.strip() else None
            last = self._git("log", "-1", "--format=%H%x00%an%x00%ae%x00%cI%x00%B", ref, "--", path).stdout
        commit = None
        if last.strip():
            sha, name, email, time, message = last.split("\0", 4)
            commit = Commit(sha=sha, branch=branch, path=path, author=Identity(name, email), message=message.strip(),
                            url=self.commit_url.format(sha=sha) if self.commit_url else None,
                            change="modified" if text is not None else "removed", time=time)
        if text is None:
            return None, commit
        try:
            return yaml.safe_load(text), commit
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f", line {mark.line + 1}" if mark else ""
            raise GitOpsError(f"{path} in {branch} of {self.url} is not YAML ({getattr(e, 'problem', None) or e}"
                              f"{where}): fix or remove it in Git") from None

    # --- one change ---------------------------------------------------------------------------------
    def _commit(self, path: str, change: Callable[[Path], None], *, author: Identity, message: str,
                branch: str | None, also: tuple[str, ...] = ()) -> Commit:
        path, target = _relative(path), branch or self.branch
        if not message.strip():
            raise ValueError(f"the commit of {path} needs a message: what changed and why")
        with self._locked():
            start = self._checkout(target)
            try:
                change(self.workdir / path)
                self._git("add", "--all", "--", path, *also)
                status = self._git("status", "--porcelain", "--", path).stdout[:1]
                self._git("commit", "--quiet", "--allow-empty", "--no-verify", "--file=-", input=message,
                          env={"GIT_AUTHOR_NAME": author.name, "GIT_AUTHOR_EMAIL": author.email})
                self._push(path, target)
            except BaseException:
                with suppress(GitOpsError):  # the error that stopped the change is the one to report
                    self._restore(target, start)
                raise
            sha, time = self._git("log", "-1", "--format=%H %cI", "HEAD").stdout.split()
        url = self.commit_url.format(sha=sha) if self.commit_url else None
        return Commit(sha=sha, branch=target, path=path, author=author, message=message, url=url,
                      change=CHANGES.get(status, "unchanged"), time=time)

    def _push(self, path: str, target: str) -> None:
        for _ in range(self.attempts):
            result = self._git("push", "--porcelain", "origin", f"HEAD:refs/heads/{target}", check=False)
            if result.returncode == 0:
                return
            status = next((line.split("\t")[2] for line in result.stdout.splitlines()
                           if line.startswith("!\t") and line.count("\t") >= 2), None)
            if status is None:  # no answer about the ref: the connection or the credentials failed
                raise self._failure(f"push {path} to {target}", result)
            # Overtaken: "[rejected] (fetch first)" or "(non-fast-forward)"; or the other push updated the ref while
            # the server was taking ours ("cannot lock ref 'refs/heads/main': is at X but expected Y").
            overtaken = status.startswith("[rejected]") or (status.endswith("(failed to update ref)")
                                                            and "but expected" in result.stderr)
            if not overtaken:  # "[remote rejected] (pre-receive hook declined)" and the like
                reason = "; ".join([*_remote_lines(result.stderr), status.removeprefix("[remote rejected] ")])
                raise GitOpsRefused(self._scrub(reason), self._scrub(
                    f"the Git server refused the change of {path} to {target} of {self.url}: {reason}; nothing "
                    "was committed"))
            # On top of the other commit, unless it changed our file.
            self._fetch(target, required=True)
            ours = self._git("rev-parse", "HEAD^").stdout.strip()
            rebased = self._git("rebase", "--quiet", "--empty=keep", f"refs/remotes/origin/{target}", check=False)
            if rebased.returncode != 0:
                self._git("rebase", "--abort", check=False)
                others = self._git("log", "--format=%h by %an: %s", f"{ours}..refs/remotes/origin/{target}",
                                   "--", path).stdout.strip().splitlines()
                raise GitOpsConflict(path, f"{path} in {target} of {self.url} was changed by someone else while this "
                                           f"change was being committed ({'; '.join(others) or 'a commit'}); nothing "
                                           "was committed: look at the current version and try again")
        raise GitOpsConflict(path, f"{target} of {self.url} kept moving: {self.attempts} pushes of the change of "
                                   f"{path} were overtaken by other commits; nothing was committed: try again")

    # --- the working clone --------------------------------------------------------------------------
    def _checkout(self, target: str) -> str:
        """Fetch and check out `target` as the server has it (or the repository's branch, when the server has
        no `target` yet); the ref started from."""
        start = target if target != self.branch and self._fetch(target, required=False) else self.branch
        self._fetch(self.branch, required=True)
        self._reset(target, start)
        return start

    def _restore(self, target: str, start: str) -> None:
        """Back to the remote branch: nothing half-done stays in the working clone."""
        self._git("rebase", "--abort", check=False)
        self._reset(target, start)

    def _reset(self, target: str, start: str) -> None:
        self._git("checkout", "--quiet", "--force", "-B", target, f"refs/remotes/origin/{start}")
        self._git("clean", "--quiet", "--force", "-d", "-x")

    def _fetch(self, branch: str, *, required: bool) -> bool:
        """Fetch `branch` from the server; False when it has none (GitOpsError if `required`)."""
        result = self._git("fetch", "--quiet", "--no-tags", "origin",
                           f"+refs/heads/{branch}:refs/remotes/origin/{branch}", check=False)
        if result.returncode == 0:
            return True
        if "couldn't find remote ref" in result.stderr:
            if required:
                raise GitOpsError(f"the branch {branch} does not exist in {self.url}: create it with a first commit, "
                                  "or set the catalog's gitops.branch to one that exists")
            return False
        raise self._failure(f"fetch {branch}", result)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One change at a time per working clone: flock serializes the threads of this process (each opens the
        file anew) and other processes sharing the clone."""
        with locked(self.workdir.with_name(self.workdir.name + ".lock")):
            if not self._cloned:
                self._init_clone()
            yield

    def _init_clone(self) -> None:
        if not (self.workdir / ".git").is_dir():
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._git("init", "--quiet")
            self._git("remote", "add", "origin", self.url)
        else:
            self._git("remote", "set-url", "origin", self.url)
        self._cloned = True

    # --- running git --------------------------------------------------------------------------------
    def _git(self, *args: str, input: str | None = None, env: dict[str, str] | None = None,
             check: bool = True) -> subprocess.CompletedProcess:
        try:
            result = subprocess.run(["git", *args], cwd=self.workdir, env={**self._env, **(env or {})}, input=input,
                                    capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise GitOpsError(f"git {args[0]} on {self.url} did not finish within {self.timeout:.0f} s: is the Git "
                              "server reachable? Nothing was committed") from None
        if check and result.returncode != 0:
            raise GitOpsError(self._scrub(f"git {args[0]} failed in the platform's clone of {self.url} (exit code "
                                          f"{result.returncode}): {result.stderr.strip()}"))
        return result

    def _failure(self, operation: str, result: subprocess.CompletedProcess) -> GitOpsError:
        stderr = result.stderr.strip()
        if any(marker in stderr for marker in AUTHENTICATION_FAILED):
            reason = AUTH_FAILED
            return GitOpsRefused(reason, f"the Git server at {self.url} refused the platform's GitOps credential "
                                         f"({reason}) on {operation}; nothing was committed: a platform administrator "
                                         "must renew the credential")
        return GitOpsError(self._scrub(f"could not {operation} at {self.url}: {stderr}; nothing was committed"))

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _remote_lines(stderr: str) -> list[str]:
    """What the server said (hooks' messages), without git's own progress lines."""
    return [line.removeprefix("remote:").strip() for line in stderr.splitlines()
            if line.startswith("remote:") and line.removeprefix("remote:").strip()]


def _relative(path: str) -> str:
    normal = posixpath.normpath(path)
    if path.startswith("/") or normal.startswith("..") or normal == "." or ".git" in normal.split("/"):
        raise ValueError(f"{path!r} is not a file path inside the repository, e.g. 'teams/vision/serving/iris.yaml'")
    return normal
