"""Team isolation of model serving over the REST API, on the local backend, as the servers of two
teams see it: the jupyter server with the extension runs in this process and the serving API reads
the environment contract from os.environ, so each request is made with the environment of alice's
server (team-vision) or bob's (team-nlp). No Ray head runs: the applications are records in the Ray
root (what a deploy leaves), and status reads them back ("the head is not running").

A guard against mistakes, not a wall: on the local platform every notebook runs as the same OS user
(see mlplatform.serving.local). The cells are printed as an authorization matrix.
"""

from __future__ import annotations

import json
import os

import pytest
from mlplatform_core.contract import PlatformEnvironment

from mlplatform.handlers import PREFIX
from mlplatform.serving.local import LocalRayConfig, LocalServing
from mlplatform.serving.spec import serving_request

from ..support.authz import authorization_matrix
from .rest_fixtures import server_config_fixture  # noqa: F401  (fixture jp_server_config)

# Nothing listens here during these tests: the head counts as not running.
RAY_PORT = int(os.environ.get("MLPLATFORM_TEST_PORT_BASE", "25800")) + 920
ALICE = PlatformEnvironment(user="alice", team="team-vision", backend="local")
BOB = PlatformEnvironment(user="bob", team="team-nlp", backend="local")


class Answer:
    """A tornado response as the authorization matrix reads responses (status_code, json(), text)."""

    def __init__(self, response):
        self.status_code, self.text = response.code, (response.body or b"").decode()

    def json(self):
        return json.loads(self.text)


@pytest.fixture(scope="module")
def authz(request):
    yield from authorization_matrix(request)


@pytest.fixture
def ray_root(tmp_path, monkeypatch):
    """The Ray root, with team-vision's application `iris` and team-nlp's `qa-bot` recorded."""
    root = tmp_path / "ray"
    monkeypatch.setenv("MLPLATFORM_RAY_PORT", str(RAY_PORT))
    monkeypatch.setenv("MLPLATFORM_RAY_DIR", str(root))
    for environment, name in ((ALICE, "iris"), (BOB, "qa-bot")):
        backend = LocalServing(LocalRayConfig(port=RAY_PORT, root=root), environment=environment)
        root.mkdir(mode=0o700, exist_ok=True)
        backend.apps.mkdir(exist_ok=True)
        request = serving_request(name=name, model_uri=f"models:/{name}/1")
        (backend.apps / f"{name}.json").write_text(json.dumps({
            "name": name, "request": request.to_dict(), "model_version": "1", "application": {}, "phase": "applied",
            "owner": {"user": environment.user, "team": environment.team}, "submitted_at": "2026-11-22T20:00:00+00:00"}))
    return root


@pytest.fixture
def as_server(monkeypatch, http_server_client, jp_auth_header, jp_base_url, jp_asyncio_loop):
    """Send a request as the server of an environment: (environment, method, raw path below the API) → Answer.
    The path is sent as it is (jp_fetch would escape a `%2F`)."""
    def send(environment: PlatformEnvironment, method: str, path: str) -> Answer:
        for name, value in environment.to_environ().items():
            monkeypatch.setenv(name, value)
        response = jp_asyncio_loop.run_until_complete(http_server_client.fetch(
            f"{jp_base_url.rstrip('/')}{PREFIX}/{path}", method=method, headers=jp_auth_header, raise_error=False,
            allow_nonstandard_methods=True))
        return Answer(response)
    return send


def test_a_team_sees_only_its_own_applications(ray_root, as_server, authz):
    listed = as_server(ALICE, "GET", "serving")
    authz.check("team-vision member", "GET serving", listed, allowed=True)
    assert [d["name"] for d in listed.json()["deployments"]] == ["iris"]
    listed = as_server(BOB, "GET", "serving")
    authz.check("team-nlp member", "GET serving", listed, allowed=True)
    assert [d["name"] for d in listed.json()["deployments"]] == ["qa-bot"]

    own = as_server(ALICE, "GET", "serving/iris")
    authz.check("team-vision member", "GET serving/<team-vision app>", own, allowed=True)
    assert own.json()["owner"] == {"user": "alice", "team": "team-vision"}
    other = as_server(BOB, "GET", "serving/iris")
    authz.check("team-nlp member", "GET serving/<team-vision app>", other, allowed=False, status=404)
    assert other.json()["message"] == ("no serving application 'iris' on the local Ray head; applications of team "
                                       "team-nlp: qa-bot")


def test_a_team_cannot_delete_another_teams_application(ray_root, as_server, authz):
    refused = as_server(BOB, "DELETE", "serving/iris")
    authz.check("team-nlp member", "DELETE serving/<team-vision app>", refused, allowed=False, status=404)
    assert (ray_root / "apps" / "iris.json").exists()
    assert [d["name"] for d in as_server(ALICE, "GET", "serving").json()["deployments"]] == ["iris"]
    deleted = as_server(ALICE, "DELETE", "serving/iris")
    authz.check("team-vision member", "DELETE serving/<team-vision app>", deleted, allowed=True)
    assert deleted.json() == {"name": "iris", "backend": "local", "state": "deleted"}
    assert not (ray_root / "apps" / "iris.json").exists()


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_name_never_becomes_a_path_outside_the_apps_folder(ray_root, as_server, authz, method):
    victim = ray_root.parent / "victim.json"  # where apps/../../victim.json points
    victim.write_text((ray_root / "apps" / "iris.json").read_text())
    refused = as_server(ALICE, method, "serving/..%2F..%2Fvictim")
    authz.check("team-vision member", f"{method} serving/..%2F..%2Fvictim", refused, allowed=False, status=400)
    assert refused.json()["message"].endswith("name: '../../victim' is not a serving application's name; allowed: "
                                              "a DNS label of at most 63 lowercase letters, digits and '-', starting "
                                              "with a letter and ending with a letter or digit")
    assert victim.exists()
