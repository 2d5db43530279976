"""The platform's GitOps writer against the local platform's Git server: real `git http-backend` over HTTP
with Basic authentication, the real git CLI. What each commit holds is read back from the bare repository
with `git show`, never through the writer."""

from __future__ import annotations

import base64
import dataclasses
import os
import secrets
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml
from mlplatform_service.gitops import (Commit, Credentials, GitOpsConflict, GitOpsError, GitOpsNotFound,
                                       GitOpsRefused, GitOpsRepository, Identity)

from hub_config.local import git_server

from ..support.git_server import git_server as running_git_server

PORT = int(os.environ.get("MLPLATFORM_TEST_PORT_BASE", "25800")) + 6200
REPO = Path(__file__).parent.parent.parent
USER, TOKEN = "platform", secrets.token_urlsafe(32)
PLATFORM = Identity("mlplatform", "mlplatform@example.org")
ALICE = Identity("Alice Liddell", "alice@example.org")
BOB = Identity("Bob Builder", "bob@example.org")
PATH = "teams/vision/serving/iris.yaml"


def ray_service(name: str, replicas: int = 1) -> dict:
    return {"apiVersion": "ray.io/v1", "kind": "RayService",
            "metadata": {"name": name, "namespace": "team-vision", "labels": {"mlplatform/team": "vision"}},
            "spec": {"serveConfigV2": "applications: []\n",
                     "rayClusterConfig": {"workerGroupSpecs": [{"groupName": "gpu", "replicas": replicas}]}}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_git_server(tmp_path_factory.mktemp("git"), PORT, {USER: TOKEN}) as running:
        yield running


@pytest.fixture
def repo(server, request):
    """A fresh bare repository (its first commit on main) for this test, named after it."""
    name = request.node.name.replace("[", "-").replace("]", "")
    server.new_repository(name)
    return name


def writer(server, repo, tmp_path, clone="clone", token=TOKEN, **options) -> GitOpsRepository:
    return GitOpsRepository(f"{server.url}/{repo}.git", "main", Credentials(USER, token), PLATFORM, tmp_path / clone,
                            **options)


def committed(server, repo, rev: str, path: str) -> dict:
    return yaml.safe_load(server.git(repo, "show", f"{rev}:{path}"))


def test_write_commits_the_object_as_the_user_and_pushes_it(server, repo, tmp_path):
    gitops = writer(server, repo, tmp_path, commit_url="https://git.example.org/deploy/commit/{sha}")
    commit = gitops.write(PATH, ray_service("iris"), author=ALICE, message="Deploy iris (model iris/4)\n\nfor a demo")
    head = server.git(repo, "rev-parse", "main").strip()
    time = server.git(repo, "log", "-1", "--format=%cI", "main").strip()
    assert commit == Commit(sha=head, branch="main", path=PATH, author=ALICE,
                            message="Deploy iris (model iris/4)\n\nfor a demo",
                            url=f"https://git.example.org/deploy/commit/{head}", change="added", time=time)
    assert gitops.file(PATH) == (ray_service("iris"), Commit(
        sha=head, branch="main", path=PATH, author=ALICE, message="Deploy iris (model iris/4)\n\nfor a demo",
        url=f"https://git.example.org/deploy/commit/{head}", change="modified", time=time))
    assert committed(server, repo, "main", PATH) == ray_service("iris")
    assert server.git(repo, "show", f"main:{PATH}").startswith("apiVersion: ray.io/v1\nkind: RayService\n")
    assert server.git(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%B", "main").strip() == (
        "Alice Liddell <alice@example.org>|mlplatform <mlplatform@example.org>|Deploy iris (model iris/4)\n\nfor a demo")
    assert server.git(repo, "show", "--name-status", "--format=", "main").split() == ["A", PATH]

    # A redeploy is a new commit, the same file or not; read() gives what the server's branch holds.
    again = gitops.write(PATH, ray_service("iris"), author=BOB, message="Redeploy iris")
    scaled = gitops.write(PATH, ray_service("iris", replicas=3), author=BOB, message="Scale iris to 3")
    assert server.git(repo, "log", "--format=%H %an: %s", "main").splitlines() == [
        f"{scaled.sha} Bob Builder: Scale iris to 3", f"{again.sha} Bob Builder: Redeploy iris",
        f"{commit.sha} Alice Liddell: Deploy iris (model iris/4)", server.git(repo, "rev-parse", "main~3").strip()
        + " mlplatform: The platform's GitOps repository"]
    assert gitops.read(PATH) == ray_service("iris", replicas=3)
    assert gitops.read("teams/vision/serving/none.yaml") is None
    with pytest.raises(GitOpsError, match=f"^README.md in main of {server.url}/{repo}.git is not YAML "):
        gitops.read("README.md")


def test_remove_deletes_the_file(server, repo, tmp_path):
    gitops = writer(server, repo, tmp_path)
    gitops.write(PATH, ray_service("iris"), author=ALICE, message="Deploy iris")
    gone = gitops.remove(PATH, author=BOB, message="Delete iris")
    assert gone.change == "removed"
    assert server.git(repo, "ls-tree", "-r", "--name-only", "main").split() == ["README.md"]
    assert gitops.file(PATH) == (None, gone)  # the file's last commit is its removal
    assert server.git(repo, "log", "-1", "--format=%H|%an|%cn|%s", "main").strip() == (
        f"{gone.sha}|Bob Builder|mlplatform|Delete iris")
    assert gitops.read(PATH) is None
    with pytest.raises(GitOpsNotFound, match=f"^{PATH} is not in main of .*: nothing to remove$"):
        gitops.remove(PATH, author=BOB, message="Delete iris again")
    assert server.git(repo, "rev-parse", "main").strip() == gone.sha


def test_a_kept_file_is_added_once_with_the_first_object(server, repo, tmp_path):
    gitops = writer(server, repo, tmp_path)
    keep = ("teams/vision/README.md", "# vision\n")
    first = gitops.write(PATH, ray_service("iris"), author=ALICE, message="Deploy iris", keep=keep)
    assert server.git(repo, "show", f"{first.sha}:teams/vision/README.md") == "# vision\n"
    second = gitops.write(PATH, ray_service("iris", 2), author=ALICE, message="Scale iris",
                          keep=("teams/vision/README.md", "another text"))
    assert server.git(repo, "diff", "--name-only", first.sha, second.sha).split() == [PATH]
    gitops.remove(PATH, author=BOB, message="Delete iris")
    assert server.git(repo, "ls-tree", "-r", "--name-only", "main").split() == ["README.md", "teams/vision/README.md"]


def test_a_change_of_another_branch_starts_from_the_repositorys(server, repo, tmp_path):
    """A review branch (the catalog's `mode: review`) that the server does not have yet starts at main."""
    gitops = writer(server, repo, tmp_path)
    on_main = gitops.write(PATH, ray_service("iris", 3), author=BOB, message="Deploy iris")
    assert gitops.file(PATH, "mlplatform/vision/iris") == (ray_service("iris", 3), dataclasses.replace(
        on_main, change="modified"))  # not there yet: main's, where it will start
    commit = gitops.write(PATH, ray_service("iris"), author=ALICE, message="Deploy iris", branch="mlplatform/vision/iris")
    assert commit.branch == "mlplatform/vision/iris"
    assert gitops.file(PATH, "mlplatform/vision/iris")[1].sha == commit.sha
    assert server.git(repo, "rev-parse", "mlplatform/vision/iris^").strip() == server.git(repo, "rev-parse", "main").strip()
    assert committed(server, repo, "mlplatform/vision/iris", PATH) == ray_service("iris")
    gitops.write(PATH, ray_service("iris", 2), author=ALICE, message="Scale iris", branch="mlplatform/vision/iris")
    assert server.git(repo, "rev-list", "--count", "main..mlplatform/vision/iris").strip() == "2"


def concurrently(*calls):
    """Run the calls at once (one thread each); each one's result or exception."""
    barrier, results = threading.Barrier(len(calls)), [None] * len(calls)

    def run(i, call):
        barrier.wait()
        try:
            results[i] = call()
        except Exception as e:  # noqa: BLE001  (the test looks at it)
            results[i] = e
    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_two_users_writing_different_files_at_once_both_land(server, repo, tmp_path):
    """Two service processes (two clones): a push overtaken by the other's is rebased and pushed again."""
    alice, bob = writer(server, repo, tmp_path, "alice"), writer(server, repo, tmp_path, "bob")

    def deploys(gitops, author, names):
        return lambda: [gitops.write(f"teams/vision/serving/{n}.yaml", ray_service(n), author=author,
                                     message=f"Deploy {n}") for n in names]
    results = concurrently(deploys(alice, ALICE, ["a1", "a2", "a3"]), deploys(bob, BOB, ["b1", "b2", "b3"]))
    assert not [r for r in results if isinstance(r, Exception)], results  # none may fail
    commits = [c for result in results for c in result]
    log = server.git(repo, "log", "--format=%H %an: %s", "main").splitlines()
    assert sorted(log[:6]) == sorted(f"{c.sha} {c.author.name}: {c.message}" for c in commits)
    for name in ("a1", "a2", "a3", "b1", "b2", "b3"):
        assert committed(server, repo, "main", f"teams/vision/serving/{name}.yaml") == ray_service(name)
    assert server.git(repo, "rev-list", "--merges", "main") == ""  # a straight line: rebased, never merged


@pytest.mark.parametrize("clones", ["one-clone", "two-clones"])
def test_two_users_writing_the_same_file_at_once_lose_nothing(server, repo, tmp_path, clones):
    """One service (one clone, its lock) or two: each change is in the history, or its user got a conflict."""
    alice = writer(server, repo, tmp_path, "alice")
    bob = alice if clones == "one-clone" else writer(server, repo, tmp_path, "bob")
    results = concurrently(lambda: alice.write(PATH, ray_service("iris", 2), author=ALICE, message="Scale to 2"),
                           lambda: bob.write(PATH, ray_service("iris", 5), author=BOB, message="Scale to 5"))
    landed = [(r, replicas) for r, replicas in zip(results, (2, 5)) if isinstance(r, Commit)]
    conflicts = [r for r in results if isinstance(r, GitOpsConflict)]
    assert len(landed) + len(conflicts) == 2, results
    assert landed, results  # the first push always lands
    for commit, replicas in landed:
        assert committed(server, repo, commit.sha, PATH) == ray_service("iris", replicas)
    history = server.git(repo, "log", "--format=%H", "main").split()
    assert all(commit.sha in history for commit, _ in landed)
    newest = min(landed, key=lambda landed: history.index(landed[0].sha))
    assert committed(server, repo, "main", PATH) == ray_service("iris", newest[1])
    for conflict in conflicts:
        assert conflict.path == PATH
        assert str(conflict).startswith(f"{PATH} in main of {server.url}/{repo}.git was changed by someone else while "
                                        "this change was being committed (")
        assert str(conflict).endswith("); nothing was committed: look at the current version and try again")
    if clones == "one-clone":
        assert not conflicts  # the lock serializes them: the second builds on the first


@pytest.mark.parametrize("bobs", ["same-file", "another-file"])
def test_a_push_overtaken_while_the_server_takes_another(server, repo, tmp_path, bobs):
    """Bob pushes while the server still takes Alice's push (its hook holds each for a second), so the server
    refuses Bob's ref update: his change of another file is rebased onto hers and lands; his change of the
    same file is a conflict that names her commit, and his clone is back at the remote branch."""
    alice, bob = writer(server, repo, tmp_path, "alice"), writer(server, repo, tmp_path, "bob")
    bobs_path = PATH if bobs == "same-file" else "teams/vision/serving/rose.yaml"
    reject_pushes(server, repo, "sleep 1")  # exits 0: each push lands after a second
    first = threading.Thread(target=lambda: alice.write(PATH, ray_service("iris", 2), author=ALICE,
                                                        message="Scale to 2"))
    first.start()
    time.sleep(0.3)
    try:
        result = concurrently(lambda: bob.write(bobs_path, ray_service("rose", 5), author=BOB, message="Scale to 5"))[0]
    finally:
        first.join(30)
    theirs = server.git(repo, "log", "--format=%h", "--author=Alice", "main").strip()
    if bobs == "another-file":
        assert server.git(repo, "log", "--format=%H %s", "main~2..main").splitlines() == [
            f"{result.sha} Scale to 5", f"{server.git(repo, 'rev-parse', theirs).strip()} Scale to 2"]
        assert committed(server, repo, "main", bobs_path) == ray_service("rose", 5)
        assert committed(server, repo, "main", PATH) == ray_service("iris", 2)
        return
    assert isinstance(result, GitOpsConflict), result
    assert str(result) == (f"{PATH} in main of {server.url}/{repo}.git was changed by someone else while this change "
                           f"was being committed ({theirs} by Alice Liddell: Scale to 2); nothing was committed: look "
                           "at the current version and try again")
    assert committed(server, repo, "main", PATH) == ray_service("iris", 2)
    clone = ["git", "-C", str(tmp_path / "bob")]
    assert subprocess.run([*clone, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() == theirs
    assert subprocess.run([*clone, "status", "--porcelain"], capture_output=True, text=True).stdout == ""


def reject_pushes(server, repo, script: str) -> None:
    hook = server.bare(repo) / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\n{script}\n")
    hook.chmod(0o755)


def test_a_push_the_server_refuses_commits_nothing_and_says_why(server, repo, tmp_path):
    gitops = writer(server, repo, tmp_path)
    before = gitops.write(PATH, ray_service("iris"), author=ALICE, message="Deploy iris").sha
    reject_pushes(server, repo, 'echo "main is protected: changes go through a review branch" >&2; exit 1')
    with pytest.raises(GitOpsRefused) as refused:
        gitops.write(PATH, ray_service("iris", 4), author=BOB, message="Scale iris")
    assert refused.value.reason == "main is protected: changes go through a review branch; (pre-receive hook declined)"
    assert str(refused.value) == (f"the Git server refused the change of {PATH} to main of {server.url}/{repo}.git: "
                                  f"{refused.value.reason}; nothing was committed")
    assert server.git(repo, "rev-parse", "main").strip() == before  # the remote unchanged
    # The writer's clone is back at the remote branch: no commit, no changed file.
    clone = ["git", "-C", str(tmp_path / "clone")]
    assert subprocess.run([*clone, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() == before
    assert subprocess.run([*clone, "status", "--porcelain"], capture_output=True, text=True).stdout == ""
    # Once the server accepts again, the next change builds on the remote branch.
    (server.bare(repo) / "hooks" / "pre-receive").unlink()
    assert server.git(repo, "rev-parse", "main^").strip() != before
    after = gitops.write(PATH, ray_service("iris", 4), author=BOB, message="Scale iris")
    assert server.git(repo, "rev-parse", "main^").strip() == before and after.sha != before


def test_wrong_credentials_are_refused_without_the_token_anywhere(server, repo, tmp_path):
    wrong = "not-" + secrets.token_urlsafe(24)
    gitops = writer(server, repo, tmp_path, token=wrong)
    with pytest.raises(GitOpsRefused) as refused:
        gitops.write(PATH, ray_service("iris"), author=ALICE, message="Deploy iris")
    assert refused.value.reason == "authentication failed"
    assert str(refused.value) == (f"the Git server at {server.url}/{repo}.git refused the platform's GitOps credential "
                                  "(authentication failed) on fetch main; nothing was committed: a platform "
                                  "administrator must renew the credential")
    assert server.git(repo, "rev-list", "--count", "main").strip() == "1"
    log = server.log.read_text()
    assert f"401 GET /platform/{repo}.git/info/refs?service=git-upload-pack user=-" in log
    for secret in (wrong, TOKEN, base64.b64encode(f"{USER}:{wrong}".encode()).decode(),
                   base64.b64encode(f"{USER}:{TOKEN}".encode()).decode()):
        assert secret not in log and secret not in repr(refused.value)


def test_an_unreachable_server_is_named(tmp_path):
    gitops = GitOpsRepository(f"http://127.0.0.1:{PORT + 2}/platform/gitops.git", "main", Credentials(USER, TOKEN),
                              PLATFORM, tmp_path / "clone")
    with pytest.raises(GitOpsError) as e:
        gitops.write(PATH, ray_service("iris"), author=ALICE, message="Deploy iris")
    assert str(e.value).startswith(f"could not fetch main at http://127.0.0.1:{PORT + 2}/platform/gitops.git: fatal: "
                                   f"unable to access 'http://127.0.0.1:{PORT + 2}/platform/gitops.git/': Failed to "
                                   f"connect to 127.0.0.1 port {PORT + 2}")
    assert str(e.value).endswith("; nothing was committed") and not isinstance(e.value, GitOpsRefused)


def test_the_server_asks_for_credentials(server, repo):
    url = f"{server.url}/{repo}.git/info/refs?service=git-upload-pack"
    for auth in (None, (USER, "wrong"), ("someone", TOKEN)):
        r = requests.get(url, auth=auth, timeout=5)
        assert (r.status_code, r.headers["WWW-Authenticate"]) == (401, 'Basic realm="mlplatform GitOps", charset="UTF-8"')
    r = requests.get(url, auth=(USER, TOKEN), timeout=5)
    assert (r.status_code, r.headers["Content-Type"]) == (200, "application/x-git-upload-pack-advertisement")
    # Nothing but 127.0.0.1: the port is closed on the machine's other addresses.
    assert subprocess.run(["ss", "-Hltn", f"sport = :{PORT}"], capture_output=True, text=True).stdout.split()[3] == (
        f"127.0.0.1:{PORT}")


def test_the_token_is_on_no_command_line(server, repo, tmp_path):
    """Sampled while a push runs (the server's hook holds it for a moment): no git process shows the token."""
    gitops = writer(server, repo, tmp_path)
    reject_pushes(server, repo, "sleep 1")  # exits 0: the push lands after a second
    seen, done = [], threading.Event()

    def sample():
        while not done.is_set():
            seen.extend(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines())
            time.sleep(0.05)
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        gitops.write(PATH, ray_service("iris"), author=ALICE, message="Deploy iris")
    finally:
        done.set()
        sampler.join()
    assert any(line.startswith("git push") for line in seen)  # the sampling saw the push
    assert any("git-remote-http" in line for line in seen)  # and the process that talks to the server
    basic = base64.b64encode(f"{USER}:{TOKEN}".encode()).decode()
    assert [line for line in seen if TOKEN in line or basic in line] == []


def test_the_server_starts_in_well_under_a_second(tmp_path):
    cmd, env = git_server.command(tmp_path, PORT + 1, {USER: TOKEN})
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        while True:
            try:
                requests.get(f"http://127.0.0.1:{PORT + 1}/healthz", timeout=1).raise_for_status()
                break
            except requests.RequestException:
                assert proc.poll() is None
                time.sleep(0.02)
        assert time.monotonic() - started < 1.5  # ~0.3 s on an idle machine
        # Its environment holds the token's digest, never the token.
        assert TOKEN not in Path(f"/proc/{proc.pid}/environ").read_text(errors="replace")
        assert git_server.token_digest(TOKEN) in env[git_server.USERS_VARIABLE]
    finally:
        proc.terminate()
        proc.wait(10)
