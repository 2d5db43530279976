"""An Argo CD application controller stand-in: the tests play Argo CD, as they play the KubeRay and Spark operators.

Argo CD cannot run here. `ArgoCd` reads the Applications `mlplatform render` writes (hub_config/render/gitops.py)
as Argo CD reads them — spec.source (repoURL, targetRevision, path, directory.include/exclude/recurse),
spec.destination.namespace, spec.syncPolicy (automated.prune/selfHeal/allowEmpty, syncOptions, retry.limit) —
fetches the revision with the real git CLI, and applies the team's files to the fake API server (tests/support/
fake_kube) over HTTP with the application controller's own identity, which RBAC checks:

    argocd = ArgoCd(fake, argocd_applications(catalog), repository=bare_repo)   # or an http(s) URL + credentials
    argocd.sync()                       # one pass of the controller: refresh, then automated sync
    argocd.status["mlplatform-team-vision"]   # {"sync", "revision", "phase", "message", "resources"}
    with argocd.running(interval=0.3):  # automated sync in a background thread
        argocd.wait_synced(revision=sha)

What Argo CD does and this does too (argo-cd reposerver `findManifests`, gitops-engine sync, controller `autoSync`):
- the files: under source.path (only its top level without `recurse`), named *.yaml/*.yml/*.json, whose path
  relative to source.path matches `include` and not `exclude` (gobwas globs without separators: `*` matches '/'
  too; `{a,b}`, `?`, `[...]`). A path that is not in the revision ("app path does not exist") or a file that is
  not YAML or not a Kubernetes object fails the whole refresh: nothing is applied and nothing is pruned.
- validation before anything is written: an object in a namespace the project does not permit, a cluster-scoped
  one, a kind the API server does not serve, or (FailOnSharedResource=true) an object another Application tracks
  makes the sync fail with "one or more synchronization tasks are not valid" and nothing is applied.
- the writes: create, or update of Git's spec and Git's labels and annotations (keys other writers set are kept,
  those this controller set and Git dropped are removed: what server-side apply's field ownership does), each
  with the tracking annotation `argocd.argoproj.io/tracking-id: <app>:<group>/<Kind>:<namespace>/<name>`. An
  object the API server refuses (422 validation, 403 RBAC or a webhook's denial) is SyncFailed; the others are
  still applied; the operation is Failed with "one or more objects failed to apply, reason: ...".
- prune: objects carrying this Application's tracking id (exactly theirs: a copied annotation does not count)
  that Git no longer has are deleted when `automated.prune` (PrunePropagationPolicy); otherwise PruneSkipped.
  Automated sync never prunes everything: with prune and without `allowEmpty`, when every resource would be
  pruned it skips ("Skipping sync attempt to <sha>: auto-sync will wipe out all resources").
- automated sync runs only when the Application is OutOfSync; a revision whose sync failed is tried again
  `retry.limit` times (without the backoff's waits), then left ("Failed sync attempt to <sha>: ..."); without
  `selfHeal`, a revision synced once is not synced again when the cluster drifts.

The project: `projects=argocd_projects(catalog)` reads the AppProjects the render writes, as Argo CD does (argo-cd
AppProject IsSourcePermitted, IsDestinationPermitted, IsGroupKindNamePermitted; controller validateSyncPermissions):
an Application whose project is not there, whose repoURL is not in `sourceRepos` or whose destination is not in
`destinations` is not synced at all (its spec error is the status message); in a sync, an object of a kind the
project does not permit (`namespaceResourceWhitelist`: unset all, [] none; `clusterResourceWhitelist`: unset or
[] none; the blacklists) is "resource <group>:<Kind> is not permitted in project <p>", one in a namespace not in
`destinations` "namespace <ns> is not permitted in project '<p>'", and the sync fails as above. Patterns are
globs (no '!' deny patterns); repository URLs are compared without case, a trailing '/' or '.git'.
Without `projects` this stand-in plays a project permitting only each Application's destination namespace
(namespaced resources only, any kind); `project_permits_any_namespace=True` plays Argo CD's `default`.

Not here: sync waves and hooks, health assessment, the dry run's client-side schema check, jsonnet, Helm and
Kustomize sources, multiple sources, managedFields, the Application's status written back to the API server.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import fnmatch
import hashlib
import os
import posixpath
import re
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import requests
import yaml

from .fake_kube import ApiError, FakeKube

TRACKING = "argocd.argoproj.io/tracking-id"
NAMESPACE = "argocd"  # where Argo CD runs
CONTROLLER = "argocd-application-controller"  # its service account, ClusterRole and ClusterRoleBinding
# What the controller may do: what a namespaced Argo CD install needs for the platform's kinds (the render's
# docstring). Argo CD's standard install has STANDARD_RULES ('*' on '*').
RULES = [{"apiGroups": ["ray.io"], "resources": ["rayservices"], "verbs": ["*"]},
         {"apiGroups": ["sparkoperator.k8s.io"], "resources": ["sparkapplications"], "verbs": ["*"]}]
STANDARD_RULES = [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]
# Kinds whose tracked objects are looked for when pruning, besides the kinds in Git.
KINDS = (("ray.io/v1", "RayService"), ("sparkoperator.k8s.io/v1beta2", "SparkApplication"))
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MANIFEST_FILE = re.compile(r"^.*\.(yaml|yml|json)$")  # argo-cd's manifestFile, less jsonnet
NOT_THE_BODY = ("apiVersion", "kind", "metadata", "status")
SERVER_METADATA = ("uid", "resourceVersion", "creationTimestamp", "generation", "deletionTimestamp",
                   "deletionGracePeriodSeconds", "managedFields", "selfLink")


class GenerationError(Exception):
    """The target state could not be made from Git (Argo CD's ComparisonError)."""


class GitError(GenerationError):
    def __init__(self, message: str, stderr: str):
        super().__init__(message)
        self.stderr = stderr


def glob_regex(pattern: str) -> re.Pattern:
    """gobwas/glob without separators, as argo-cd's glob.Match calls it: `*`/`**` any text ('/' included), `?`
    one character, `[abc]`/`[!a-z]` classes, `{a,b}` alternatives (nested), `\\x` a literal x."""
    out, depth, i = [], 0, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            while i + 1 < len(pattern) and pattern[i + 1] == "*":
                i += 1
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise ValueError(f"unclosed '[' in {pattern!r}")
            body = pattern[i + 1:end]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
            i = end
        elif c == "{":
            depth += 1
            out.append("(?:")
        elif c == "}" and depth:
            depth -= 1
            out.append(")")
        elif c == "," and depth:
            out.append("|")
        else:
            out.append(re.escape(c))
        i += 1
    if depth:
        raise ValueError(f"unclosed '{{' in {pattern!r}")
    return re.compile("".join(out), re.DOTALL)


def tracking_id(app: str, obj: dict) -> str:
    group = obj["apiVersion"].rpartition("/")[0]
    meta = obj["metadata"]
    return f"{app}:{group}/{obj['kind']}:{meta.get('namespace', '')}/{meta['name']}"


def _body(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in NOT_THE_BODY}


def _in_list(items: list[dict], group: str, kind: str, name: str) -> bool:
    """A group/kind (and, where an item has one, name) in a project's list (filepath.Match patterns)."""
    return any(fnmatch.fnmatchcase(kind, item.get("kind", "")) and fnmatch.fnmatchcase(group, item.get("group", ""))
               and fnmatch.fnmatchcase(name, item.get("name") or "*") for item in items)


def _kind_permitted(spec: dict, group: str, kind: str, name: str, *, namespaced: bool) -> bool:
    """AppProject IsGroupKindNamePermitted: namespaced kinds are all permitted without a whitelist (none with an
    empty one); cluster-scoped ones only those a non-empty whitelist names."""
    if namespaced:
        whitelist = spec.get("namespaceResourceWhitelist")
        listed = whitelist is None or _in_list(whitelist, group, kind, "")
        return listed and not _in_list(spec.get("namespaceResourceBlacklist") or [], group, kind, "")
    listed = _in_list(spec.get("clusterResourceWhitelist") or [], group, kind, name)
    return listed and not _in_list(spec.get("clusterResourceBlacklist") or [], group, kind, name)


def _destination_permitted(spec: dict, destination: dict, namespace: str) -> bool:
    """AppProject isDestinationMatched (without deny patterns): the server (or name) and the namespace match."""
    for item in spec.get("destinations") or []:
        server = destination.get("server") and glob_regex(item.get("server") or "").fullmatch(destination["server"])
        named = destination.get("name") and glob_regex(item.get("name") or "").fullmatch(destination["name"])
        if (server or named) and glob_regex(item.get("namespace") or "").fullmatch(namespace):
            return True
    return False


def _url_matches(pattern: str, url: str) -> bool:
    """AppProject IsSourcePermitted, simplified: '*', or the same URL but for case, a trailing '/' and '.git'."""
    def normal(u: str) -> str:
        return u.lower().rstrip("/").removesuffix(".git")
    return pattern == "*" or normal(pattern) == normal(url)


class ArgoCd:
    """Argo CD's application controller for `applications` (the dicts `argocd_application` returns), applying to
    `fake` as `system:serviceaccount:argocd:argocd-application-controller`.

    repository: where the Applications' repoURL is fetched from (Argo CD's repository credentials): a clone URL
    or the path of a bare repository; None: each Application's repoURL itself. credentials: (user, token) for
    HTTP Basic, handed to git as an extra header through GIT_CONFIG_* variables, never on a command line.
    rules: the ClusterRole's rules (RULES; STANDARD_RULES is Argo CD's standard install); the ClusterRole and its
    binding are created in the fake unless they exist. projects: the AppProjects (the dicts `argocd_project`
    returns) the Applications' spec.project names; None: the project played as the module says. kinds:
    (apiVersion, kind) looked at for pruning besides the kinds in Git. workdir: where git's cache lives
    (default: a temporary directory, removed by close(), or when the object is collected or the process ends)."""

    def __init__(self, fake: FakeKube, applications: list[dict], repository: str | Path | None = None,
                 credentials: tuple[str, str] | None = None, *, rules: list[dict] | None = None,
                 kinds: tuple[tuple[str, str], ...] = KINDS, project_permits_any_namespace: bool = False,
                 projects: list[dict] | None = None, workdir: str | Path | None = None):
        self.fake = fake
        self.applications = [copy.deepcopy(a) for a in applications]
        self.repository = str(repository) if repository is not None else None
        self.credentials = credentials
        self.kinds = tuple(kinds)
        self.project_permits_any_namespace = project_permits_any_namespace
        self.projects = None if projects is None else {p["metadata"]["name"]: copy.deepcopy(p) for p in projects}
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="argocd-"))
        # A workdir of its own goes with close(), or when the object is collected or the process ends.
        self._remove_workdir = weakref.finalize(self, shutil.rmtree, str(self.workdir), True) if workdir is None \
            else None
        self.status: dict[str, dict] = {}
        self.last_error: BaseException | None = None
        self.passes = 0
        self._attempts: dict[str, dict] = {}  # app -> {revision, failures, phase, message} of its last operation
        self._applied_keys: dict[str, set[tuple[str, str]]] = {}  # tracking id -> (labels|annotations, key)
        self._lock = threading.RLock()
        self._pass_done = threading.Condition()
        self._running = False
        self._discovery: dict[str, dict[str, dict]] = {}
        self._parsed: dict[str, list | yaml.YAMLError] = {}  # blob id -> its YAML documents
        self._install(rules if rules is not None else RULES)
        self.token = fake.token_for(service_account=f"{NAMESPACE}/{CONTROLLER}")
        self._http = requests.Session()
        self._http.headers["Authorization"] = f"Bearer {self.token}"
        self._cache = self.workdir / "cache.git"
        self._git("init", "--quiet", "--bare", str(self._cache), git_dir=False)

    # --- setup -------------------------------------------------------------------------------------------
    def _install(self, rules: list[dict]) -> None:
        for obj in ({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                     "metadata": {"name": CONTROLLER}, "rules": rules},
                    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                     "metadata": {"name": CONTROLLER},
                     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CONTROLLER},
                     "subjects": [{"kind": "ServiceAccount", "name": CONTROLLER, "namespace": NAMESPACE}]}):
            try:
                self.fake.seed(obj)
            except ApiError as error:
                if error.code != 409:  # the test's own (or a rendered cluster's) is kept
                    raise

    def close(self) -> None:
        self._http.close()
        if self._remove_workdir is not None:
            self._remove_workdir()

    def __enter__(self) -> ArgoCd:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- git -------------------------------------------------------------------------------------------------
    def _git_env(self, url: str | None) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.workdir), "LC_ALL": "C",
               "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0"}
        if url and self.credentials and re.match(r"^https?://", url):
            user, token = self.credentials
            basic = base64.b64encode(f"{user}:{token}".encode()).decode()
            env.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"http.{url}.extraHeader",
                        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"})
        return env

    def _git(self, *args: str, url: str | None = None, git_dir: bool = True, stdin: bytes | None = None) -> bytes:
        cmd = ["git", f"--git-dir={self._cache}", *args] if git_dir else ["git", *args]
        done = subprocess.run(cmd, input=stdin, env=self._git_env(url), capture_output=True, timeout=60)
        if done.returncode:
            what = " ".join(a for a in args if not a.startswith("-"))[:200]
            stderr = done.stderr.decode(errors="replace").strip()
            raise GitError(f"git {what}: {stderr}", stderr)
        return done.stdout

    def _fetch(self, url: str, revision: str, fetched: dict[tuple[str, str], str]) -> str:
        """The commit `revision` (a branch, tag, HEAD or commit id) of `url` is, fetched into the cache."""
        if (url, revision) in fetched:
            return fetched[(url, revision)]
        ref = f"refs/argocd/{hashlib.sha256(f'{url} {revision}'.encode()).hexdigest()[:16]}"
        try:
            self._git("fetch", "--quiet", "--no-tags", "--force", url, f"+{revision}:{ref}", url=url)
        except GitError as error:
            why = error.stderr.rsplit("\n", 1)[-1].removeprefix("fatal: ")
            raise GenerationError(f"failed to fetch {revision} of {url}: {why}") from None
        sha = self._git("rev-parse", "--verify", f"{ref}^{{commit}}").decode().strip()
        fetched[(url, revision)] = sha
        return sha

    def _files(self, sha: str, source: dict) -> list[tuple[str, str]]:
        """(path in the repository, object id) of the files of `source` at `sha` that Argo CD reads."""
        path = posixpath.normpath(source.get("path") or ".")
        directory = source.get("directory") or {}
        if path != ".":
            kind = subprocess.run(["git", f"--git-dir={self._cache}", "cat-file", "-t", f"{sha}:{path}"],
                                  env=self._git_env(None), capture_output=True, text=True).stdout.strip()
            if kind != "tree":
                raise GenerationError(f"{path}: app path does not exist")
        args = ["ls-tree", "-z", "--full-tree"] + (["-r"] if directory.get("recurse") else []) + [sha]
        if path != ".":
            args += ["--", path + "/"]
        include = glob_regex(directory["include"]) if directory.get("include") else None
        exclude = glob_regex(directory["exclude"]) if directory.get("exclude") else None
        files = []
        for entry in self._git(*args).decode().split("\0"):
            if not entry:
                continue
            info, _, file = entry.partition("\t")
            mode, kind, oid = info.split()
            if kind != "blob" or mode == "120000" or not MANIFEST_FILE.match(posixpath.basename(file)):
                continue
            relative = posixpath.relpath(file, path) if path != "." else file
            if exclude is not None and exclude.fullmatch(relative):
                continue
            if include is not None and not include.fullmatch(relative):
                continue
            files.append((file, oid))
        return sorted(files)

    def _read(self, blobs: list[tuple[str, str]]) -> dict[str, bytes]:
        if not blobs:
            return {}
        out = self._git("cat-file", "--batch", stdin="".join(f"{oid}\n" for _, oid in blobs).encode())
        texts, at = {}, 0
        for file, _ in blobs:
            header_end = out.index(b"\n", at)
            size = int(out[at:header_end].split()[2])
            texts[file] = out[header_end + 1:header_end + 1 + size]
            at = header_end + 1 + size + 1
        return texts

    def _target(self, app: dict, fetched: dict) -> tuple[str, list[tuple[str, dict]]]:
        """(revision, [(file, object)]) of the Application: Argo CD's manifest generation."""
        source = app["spec"]["source"]
        url = self.repository or source["repoURL"]
        sha = self._fetch(url, source.get("targetRevision") or "HEAD", fetched)
        files = self._files(sha, source)
        texts = self._read([(file, oid) for file, oid in files if oid not in self._parsed])
        objects = []
        for file, oid in files:
            if oid not in self._parsed:  # a blob's id is its content's: parsed once
                try:
                    self._parsed[oid] = list(yaml.load_all(texts[file], Loader=LOADER))
                except yaml.YAMLError as error:
                    self._parsed[oid] = error
            documents = self._parsed[oid]
            if isinstance(documents, yaml.YAMLError):
                raise GenerationError(f'Failed to unmarshal "{posixpath.basename(file)}": {documents}')
            for doc in copy.deepcopy(documents):
                if doc is None:
                    continue
                if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
                    what = "Kind" if isinstance(doc, dict) and doc.get("apiVersion") else "apiVersion/Kind"
                    raise GenerationError(f"Object '{what}' is missing in {file}")
                objects.append((file, doc))
        return sha, objects

    # --- the API server --------------------------------------------------------------------------------------
    def _resource(self, api_version: str, kind: str) -> dict | None:
        """Discovery (as Argo CD's cluster cache does it): {plural, namespaced} of a kind, or None."""
        if api_version not in self._discovery:
            path = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
            answer = self._http.get(self.fake.url + path, timeout=10)
            found = answer.json().get("resources", []) if answer.ok else []
            self._discovery[api_version] = {r["kind"]: r for r in found if "/" not in r["name"]}
        return self._discovery[api_version].get(kind)

    def _url(self, api_version: str, resource: dict, namespace: str | None, name: str | None = None) -> str:
        base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        where = f"/namespaces/{namespace}" if resource["namespaced"] and namespace else ""
        return f"{self.fake.url}{base}{where}/{resource['name']}" + (f"/{name}" if name else "")

    def _call(self, method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
        answer = self._http.request(method, url, json=body, timeout=30)
        try:
            data = answer.json()
        except ValueError:
            data = {"message": answer.text}
        return answer.status_code, data

    # --- one pass of the controller ------------------------------------------------------------------------
    def sync(self) -> dict[str, dict]:
        """One pass of the controller over every Application: refresh (fetch the revision, make the target state,
        compare it with the cluster), then, for an Application with `syncPolicy.automated` that is OutOfSync,
        an automated sync. Returns (and keeps, in .status) each Application's status."""
        return self._pass(manual=False, prune=None, only=None)

    def sync_manually(self, name: str | None = None, *, prune: bool = False) -> dict[str, dict]:
        """`argocd app sync [--prune] <name>` (every Application when None): a sync whatever the syncPolicy,
        without automated sync's guards (empty target, retries, self-heal)."""
        return self._pass(manual=True, prune=prune, only=name)

    def _pass(self, *, manual: bool, prune: bool | None, only: str | None) -> dict[str, dict]:
        with self._lock:
            fetched: dict[tuple[str, str], str] = {}
            for app in self.applications:
                name = app["metadata"]["name"]
                if only is None or only == name:
                    self.status[name] = self._reconcile(app, fetched, manual=manual, prune=prune)
            self.passes += 1
            result = copy.deepcopy(self.status)
        with self._pass_done:
            self._pass_done.notify_all()
        return result

    def _reconcile(self, app: dict, fetched: dict, *, manual: bool, prune: bool | None) -> dict:
        name = app["metadata"]["name"]
        spec = app["spec"]
        policy = spec.get("syncPolicy") or {}
        automated = policy.get("automated")
        previous = self.status.get(name, {})
        invalid = self._invalid_spec(app)
        if invalid:  # Argo CD's InvalidSpecError: neither refreshed nor synced
            return {"sync": "Unknown", "revision": previous.get("revision"), "phase": previous.get("phase"),
                    "message": invalid, "resources": previous.get("resources", [])}
        try:
            sha, target = self._target(app, fetched)
        except GenerationError as error:
            return {"sync": "Unknown", "revision": previous.get("revision"), "phase": previous.get("phase"),
                    "message": f"Failed to load target state: {error}", "resources": previous.get("resources", [])}
        plan = self._plan(app, target)
        compared = self._compare(name, plan)
        if all(r["status"] == "Synced" for r in compared) and not manual:
            return {"sync": "Synced", "revision": sha, "phase": previous.get("phase"), "message": "",
                    "resources": compared}
        if not manual:
            skip = self._skip(name, sha, automated, policy, compared)
            if skip is not None:
                return {"sync": "OutOfSync", "revision": sha, "phase": previous.get("phase"), "message": skip,
                        "resources": compared}
            prune = bool(automated.get("prune"))
        phase, message, results = self._operate(app, plan, prune=bool(prune))
        last = self._attempts.get(name, {})
        failures = (last["failures"] if last.get("revision") == sha else 0) + (phase == "Failed")
        self._attempts[name] = {"revision": sha, "failures": failures, "phase": phase, "message": message}
        after = {(r["kind"], r["namespace"], r["name"]): r for r in self._compare(name, plan)}
        resources = []
        for r in results:  # the operation's results, with what the cluster holds now
            now = after.get((r["kind"], r["namespace"], r["name"]))
            if r["status"] == "Synced" and now is not None and now["status"] != "Synced":
                r = {**r, "status": "OutOfSync"}
            resources.append(r)
        sync = "Synced" if all(r["status"] == "Synced" for r in after.values()) else "OutOfSync"
        return {"sync": sync, "revision": sha, "phase": phase, "message": message, "resources": resources}

    def _skip(self, name: str, sha: str, automated: dict | None, policy: dict, compared: list[dict]) -> str | None:
        """Why automated sync does nothing now (argo-cd controller autoSync), or None."""
        if not automated:
            return ""  # OutOfSync, shown, not synced: a person presses Sync
        if automated.get("prune") and not automated.get("allowEmpty") and compared \
                and all(r["status"] == "RequiresPruning" for r in compared):
            return f"Skipping sync attempt to {sha}: auto-sync will wipe out all resources"
        if not automated.get("prune") and all(r["status"] in ("Synced", "RequiresPruning") for r in compared):
            return ""  # only pruning is needed, and automated sync does not prune
        last = self._attempts.get(name, {})
        if last.get("revision") == sha:
            limit = int((policy.get("retry") or {}).get("limit", 0))
            if last["phase"] == "Failed" and last["failures"] > limit:
                return f"Failed sync attempt to {sha}: {last['message']}"
            if last["phase"] == "Succeeded" and not automated.get("selfHeal"):
                return ""  # most recent sync already to sha; drift is left without selfHeal
        return None

    def _plan(self, app: dict, target: list[tuple[str, dict]]) -> list[dict]:
        """Each object of the target state with where it goes and why it may not (the project, the kind,
        another Application's tracking), then the tracked objects Git no longer has (to prune)."""
        name = app["metadata"]["name"]
        destination = app["spec"]["destination"].get("namespace")
        shared_fails = "FailOnSharedResource=true" in ((app["spec"].get("syncPolicy") or {}).get("syncOptions") or [])
        plan, seen = [], {}
        for file, doc in target:
            obj = copy.deepcopy(doc)
            obj.pop("status", None)
            meta = obj.setdefault("metadata", {})
            resource = self._resource(obj["apiVersion"], obj["kind"])
            group = obj["apiVersion"].rpartition("/")[0]
            problem = None
            if resource is None:
                problem = (f'the server could not find the requested resource: {obj["apiVersion"]} {obj["kind"]} '
                           "is not served")
            elif resource["namespaced"]:
                meta["namespace"] = meta.get("namespace") or destination
                problem = self._not_permitted(app, group, obj["kind"], meta["namespace"], meta.get("name"))
            else:
                meta.pop("namespace", None)
                problem = self._not_permitted(app, group, obj["kind"], None, meta.get("name"))
            item = {"file": file, "object": obj, "resource": resource, "problem": problem, "live": None,
                    "group": group, "kind": obj["kind"], "namespace": meta.get("namespace"),
                    "name": meta.get("name")}
            if resource is not None:
                status, live = self._call("GET", self._url(obj["apiVersion"], resource, item["namespace"],
                                                           item["name"]))
                item["live"] = live if status == 200 else None
                other = ((item["live"] or {}).get("metadata", {}).get("annotations") or {}).get(TRACKING)
                owner = other.split(":", 1)[0] if other else None
                if problem is None and owner and owner != name and other == tracking_id(owner, obj) and shared_fails:
                    item["problem"] = (f"{obj['kind']}/{item['name']} is part of applications "
                                       f"{NAMESPACE}/{name} and {owner}")
            seen[(group, obj["kind"], item["namespace"], item["name"])] = item  # a later duplicate wins
        plan = list(seen.values())
        kinds = dict.fromkeys([*self.kinds, *((i["object"]["apiVersion"], i["kind"]) for i in plan)])
        for api_version, kind in kinds:
            resource = self._resource(api_version, kind)
            if resource is None:
                continue
            status, listed = self._call("GET", self._url(api_version, resource, None))
            if status != 200:
                continue  # not the controller's to see (RBAC): not its to prune either
            for live in listed.get("items", []):
                live = {"apiVersion": api_version, "kind": kind, **live}
                meta = live["metadata"]
                key = (api_version.rpartition("/")[0], kind, meta.get("namespace"), meta["name"])
                if key in seen or (meta.get("annotations") or {}).get(TRACKING) != tracking_id(name, live):
                    continue
                plan.append({"file": None, "object": None, "resource": resource, "problem": None, "live": live,
                             "group": key[0], "kind": kind, "namespace": key[2], "name": key[3]})
        return plan

    # --- the project -------------------------------------------------------------------------------------------
    def _invalid_spec(self, app: dict) -> str | None:
        """Why the Application's project does not take it (argo-cd ValidatePermissions), or None."""
        if self.projects is None:
            return None
        spec = app["spec"]
        name = spec.get("project", "default")
        project = self.projects.get(name)
        if project is None:
            return f"Application referencing project {name} which does not exist"
        url = spec["source"]["repoURL"]
        if not any(_url_matches(pattern, url) for pattern in project["spec"].get("sourceRepos") or []):
            return f"application repo {url} is not permitted in project '{name}'"
        destination = spec["destination"]
        if not _destination_permitted(project["spec"], destination, destination.get("namespace", "")):
            return (f"application destination server '{destination.get('server', '')}' and namespace "
                    f"'{destination.get('namespace', '')}' do not match any of the allowed destinations in project "
                    f"'{name}'")
        return None

    def _not_permitted(self, app: dict, group: str, kind: str, namespace: str | None, name: str | None) -> str | None:
        """Why the project refuses an object (namespace None: cluster-scoped), or None (controller
        validateSyncPermissions: the kind first, then the namespace)."""
        spec = app["spec"]
        project = spec.get("project", "default")
        if self.projects is None:  # the project this stand-in plays without projects (the module's docstring)
            if self.project_permits_any_namespace:
                return None
            if namespace is None:
                return f"resource {group}:{kind} is not permitted in project {project}"
            if namespace != spec["destination"].get("namespace"):
                return f"namespace {namespace} is not permitted in project '{project}'"
            return None
        rules = self.projects[project]["spec"]
        if not _kind_permitted(rules, group, kind, name or "", namespaced=namespace is not None):
            return f"resource {group}:{kind} is not permitted in project {project}"
        if namespace is not None and not _destination_permitted(rules, spec["destination"], namespace):
            return f"namespace {namespace} is not permitted in project '{project}'"
        return None

    def _wanted(self, app_name: str, obj: dict) -> tuple[dict, dict]:
        meta = obj["metadata"]
        return dict(meta.get("labels") or {}), {**(meta.get("annotations") or {}), TRACKING: tracking_id(app_name, obj)}

    def _compare(self, app_name: str, plan: list[dict]) -> list[dict]:
        """Each resource's sync status: Synced (the cluster holds Git's), OutOfSync, RequiresPruning."""
        out = []
        for item in plan:
            entry = {k: item[k] for k in ("group", "kind", "namespace", "name", "file")}
            live, obj = item["live"], item["object"]
            if obj is None and live is None:
                continue  # pruned
            if obj is None:
                status = "RequiresPruning"
            elif live is None or item["problem"]:
                status = "OutOfSync"
            else:
                labels, annotations = self._wanted(app_name, obj)
                live_meta = live["metadata"]
                same = _body(live) == _body(obj) \
                    and labels.items() <= (live_meta.get("labels") or {}).items() \
                    and annotations.items() <= (live_meta.get("annotations") or {}).items() \
                    and not self._dropped(annotations[TRACKING], labels, annotations, live_meta)
                status = "Synced" if same else "OutOfSync"
            out.append({**entry, "status": status, "message": item["problem"] or ""})
        return out

    def _dropped(self, tid: str, labels: dict, annotations: dict, live_meta: dict) -> set[tuple[str, str]]:
        """The label and annotation keys this controller applied that Git no longer has but the object still does."""
        wanted = {"labels": labels, "annotations": annotations}
        return {(where, key) for where, key in self._applied_keys.get(tid, set())
                if key not in wanted[where] and key in (live_meta.get(where) or {})}

    def _operate(self, app: dict, plan: list[dict], *, prune: bool) -> tuple[str, str, list[dict]]:
        """The sync operation: (phase, message, per-resource results)."""
        name = app["metadata"]["name"]
        entries = [{k: item[k] for k in ("group", "kind", "namespace", "name", "file")} for item in plan]
        if any(item["problem"] for item in plan):
            results = [{**e, "status": "SyncFailed" if item["problem"] else "OutOfSync",
                        "message": item["problem"] or ""} for e, item in zip(entries, plan)]
            return "Failed", "one or more synchronization tasks are not valid", results
        results, failures = [], []
        for entry, item in zip(entries, plan):
            if item["object"] is None:
                continue
            code, message = self._apply(name, item)
            if code:
                failures.append(message)
            results.append({**entry, "status": "SyncFailed" if code else "Synced", "message": message})
        propagation = "Foreground"
        for option in (app["spec"].get("syncPolicy") or {}).get("syncOptions") or []:
            if option.startswith("PrunePropagationPolicy="):
                propagation = option.partition("=")[2].capitalize()
        for entry, item in zip(entries, plan):
            if item["object"] is not None:
                continue
            if not prune:
                results.append({**entry, "status": "PruneSkipped", "message": "ignored (requires pruning)"})
                continue
            live = item["live"]
            code, answer = self._call("DELETE", self._url(live["apiVersion"], item["resource"], entry["namespace"],
                                                          entry["name"]),
                                      {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation})
            if code >= 400 and code != 404:
                failures.append(answer.get("message", f"HTTP {code}"))
                results.append({**entry, "status": "SyncFailed", "message": answer.get("message", "")})
            else:
                self._applied_keys.pop(tracking_id(name, live), None)
                item["live"] = None
                results.append({**entry, "status": "Pruned", "message": "pruned"})
        if failures:
            return "Failed", "one or more objects failed to apply, reason: " + ", ".join(failures), results
        return "Succeeded", "", results

    def _apply(self, app_name: str, item: dict) -> tuple[int, str]:
        """Create or update one object as server-side apply would leave it; (0, "") or (HTTP status, message)."""
        obj = item["object"]
        tid = tracking_id(app_name, obj)
        labels, annotations = self._wanted(app_name, obj)
        url = self._url(obj["apiVersion"], item["resource"], item["namespace"], item["name"])
        for _ in range(3):
            live = item["live"]
            if live is None:
                body = copy.deepcopy(obj)
                body["metadata"]["annotations"] = annotations
                if labels:
                    body["metadata"]["labels"] = labels
                code, answer = self._call("POST", self._url(obj["apiVersion"], item["resource"], item["namespace"]),
                                          body)
                verb = "created"
            else:
                live_meta = live["metadata"]
                meta = {k: copy.deepcopy(v) for k, v in live_meta.items()}
                for key, value in obj["metadata"].items():
                    if key not in ("labels", "annotations", *SERVER_METADATA):
                        meta[key] = copy.deepcopy(value)
                dropped = self._dropped(tid, labels, annotations, live_meta)
                for where, wanted in (("labels", labels), ("annotations", annotations)):
                    merged = {k: v for k, v in (live_meta.get(where) or {}).items() if (where, k) not in dropped}
                    merged.update(wanted)
                    if merged:
                        meta[where] = merged
                    else:
                        meta.pop(where, None)
                body = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": meta, **_body(obj)}
                code, answer = self._call("PUT", url, body)
                verb = "configured"
            if code == 409:  # someone wrote it since it was read (or made it): read it again, once more
                status, live = self._call("GET", url)
                item["live"] = live if status == 200 else None
                continue
            break
        if code >= 400:
            return code, answer.get("message") or f"HTTP {code}"
        item["live"] = answer
        self._applied_keys[tid] = {("labels", k) for k in labels} | {("annotations", k) for k in annotations}
        return 0, f"{obj['kind'].lower()}.{item['group'] or 'core'}/{item['name']} {verb}"

    # --- in the background -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def running(self, interval: float = 0.3) -> Iterator[ArgoCd]:
        """Automated sync every `interval` seconds in a background thread until the block ends; an exception in
        a pass is kept in .last_error (the thread goes on)."""
        stop = threading.Event()

        def loop():
            while True:
                try:
                    self.sync()
                except Exception as error:  # noqa: BLE001 - kept for the test to see, the controller goes on
                    self.last_error = error
                    with self._pass_done:
                        self._pass_done.notify_all()
                if stop.wait(interval):
                    return

        self._running = True
        thread = threading.Thread(target=loop, name="argocd-controller", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(30)
            self._running = False

    def wait_synced(self, revision: str | None = None, timeout: float = 10, apps: list[str] | None = None,
                    ) -> dict[str, dict]:
        """Until every Application (or `apps`) is Synced (at `revision`, when given); syncing here when not
        running(). TimeoutError naming each status otherwise."""
        names = apps or [a["metadata"]["name"] for a in self.applications]
        deadline = time.monotonic() + timeout
        while True:
            if not self._running:
                self.sync()
            with self._lock:
                current = copy.deepcopy(self.status)
            if all(current.get(n, {}).get("sync") == "Synced"
                   and revision in (None, current[n].get("revision")) for n in names):
                return current
            left = deadline - time.monotonic()
            if left <= 0:
                shown = {n: {k: current.get(n, {}).get(k) for k in ("sync", "revision", "phase", "message")}
                         for n in names}
                raise TimeoutError(f"Argo CD stand-in: not synced{' to ' + revision if revision else ''} within "
                                   f"{timeout} s: {shown}; last error: {self.last_error!r}")
            if self._running:
                with self._pass_done:
                    self._pass_done.wait(min(left, 1.0))
            else:
                time.sleep(min(left, 0.05))
