"""The Rollout widget against a stand-in platform service (HTTP, as `mlplatform.serving.rollouts` calls it): shadow's
mirror rate is set when starting and when applying, follows the rollout as the service reports it, and in GitOps
mode the rollout's last commit is shown, linked (issue 12). The real service drives the widget in
tests/integration/test_rollouts_service.py."""

from __future__ import annotations

import copy
import json
import os
import threading
from http.server import ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from mlplatform import serving
from mlplatform.widgets import Rollout

from ..support.json_handler import JsonHandler

PORT = int(os.environ.get("MLPLATFORM_TEST_PORT_BASE", "8500")) + 371
COMMIT = {"sha": "0123456789abcdef0123456789abcdef01234567", "short": "0123456", "branch": "main",
          "path": "teams/team-vision/serving/iris.yaml", "author": "alice", "change": "modified", "time": None,
          "message": "Rollout iris: candidate version 4 in shadow, 25% mirrored\n\nMlplatform-User: alice",
          "url": "https://git.example.org/platform/gitops/commit/0123456789abcdef0123456789abcdef01234567"}


class Service:
    """The service's rollout of one endpoint: what the widget sent, what a report answers."""

    def __init__(self):
        self.requests: list[tuple[str, dict | None]] = []
        self.rollout: dict | None = None
        self.commit: dict | None = None

    def status(self) -> dict:
        return {"name": "iris", "state": "running", "model_uri": "models:/iris@champion", "model_version": "3",
                "rollout": copy.deepcopy(self.rollout)}

    def report(self) -> dict:
        return {"status": self.status(), "live": None, "commit": self.commit}

    def handler(self):
        service = self

        class Handler(JsonHandler):
            def do_GET(self):
                self.answer(200, service.report())

            def do_POST(self):
                body = self.body()
                service.requests.append(("POST", body))
                service.rollout = {"model_version": str(body["version"]), "rollout": {
                    "mode": body["mode"], "share": body["share"] or 0.0, "mirror_rate": body["mirror_rate"]}}
                service.commit = COMMIT
                self.answer(201, {**service.status(), "commit": COMMIT})

            def do_PATCH(self):
                body = self.body()
                service.requests.append(("PATCH", body))
                service.rollout["rollout"] = {"mode": body["mode"], "share": body["share"] or 0.0,
                                              "mirror_rate": body["mirror_rate"]}
                self.answer(200, service.status())

            def body(self) -> dict:
                return json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        return Handler


@pytest.fixture
def service(monkeypatch):
    stand_in = Service()
    server = ThreadingHTTPServer(("127.0.0.1", PORT), stand_in.handler())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("MLPLATFORM_SERVICE_URL", f"http://127.0.0.1:{PORT}")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "token")
    monkeypatch.setenv("MLPLATFORM_TEAM", "team-vision")
    monkeypatch.setattr(serving, "deployments", lambda: [stand_in.status()])
    yield stand_in
    server.shutdown()
    server.server_close()


class Registry:
    """The MlflowClient calls the widget lists candidate versions with."""

    def get_registered_model(self, name):
        return SimpleNamespace(aliases={"champion": "3"})

    def search_model_versions(self, filter_string):
        return [SimpleNamespace(version=v, tags={}) for v in ("4", "3")]


@pytest.fixture
def widget(service):
    rollout = Rollout("iris", client=Registry(), poll_interval=0.05)
    assert rollout.wait(30)
    yield rollout
    rollout.close()


def test_shadow_starts_and_changes_with_the_mirrored_share_and_shows_the_commit(widget, service):
    assert widget.mirror.layout.display is None and widget.share.layout.display == "none"
    assert widget.commit_line.value == ""  # no rollout, no commit (and none outside GitOps mode)
    widget.version.value = "4"
    widget.mirror.value = 25
    widget.start_button.click()
    assert widget.wait(30) and widget.errors.lines == []
    assert service.requests == [("POST", {"version": "4", "mode": "shadow", "share": None, "mirror_rate": 0.25})]
    assert "candidate version 4 — shadow: 25 % of the requests mirrored to it" in widget.endpoint_line.value
    assert "shadow, 25 % of the requests mirrored to the candidate" in widget.result.value
    # GitOps mode: the step's commit, its short sha linked to the repository's page, and its subject.
    assert widget.commit_line.sha == COMMIT["sha"]
    assert widget.commit_line.value == (
        f'Git: commit <a href="{COMMIT["url"]}" target="_blank" rel="noopener" style="color:#1565c0"><code>0123456'
        "</code></a> on <code>main</code> (teams/team-vision/serving/iris.yaml) — Rollout iris: candidate version 4 "
        "in shadow, 25% mirrored")

    widget.mirror.value = 50
    widget.apply_button.click()
    assert widget.wait(30)
    widget.mode_choice.value = "canary"
    assert widget.mirror.layout.display == "none" and widget.share.layout.display is None
    widget.share.value = 5
    widget.apply_button.click()
    assert widget.wait(30) and widget.errors.lines == []
    assert service.requests[1:] == [("PATCH", {"mode": "shadow", "share": None, "mirror_rate": 0.5}),
                                    ("PATCH", {"mode": "canary", "share": 0.05, "mirror_rate": 1.0})]


def test_the_mirror_field_follows_the_rollout_the_service_reports(widget, service):
    service.rollout = {"model_version": "4", "rollout": {"mode": "shadow", "share": 0.0, "mirror_rate": 0.4},
                       "inference_log": {"sample_rate": 0.1}}
    widget.refresh()
    assert widget.wait(30)
    assert widget.mirror.value == 40 and widget.mode_choice.value == "shadow"
    assert "40 % of the requests mirrored to it" in widget.endpoint_line.value
    assert "inference log samples 10 % of the requests" in widget.endpoint_line.value
    service.rollout["rollout"]["mirror_rate"] = 0.8  # changed elsewhere (another notebook, the API)
    assert widget.wait_for_reports(3, timeout=30)
    assert widget.mirror.value == 80
    service.rollout["inference_log"] = None
    assert widget.wait_for_reports(3, timeout=30)
    assert "inference log off (the live gates have no evidence)" in widget.endpoint_line.value
