"""The ServeModel widget shows each step of a deploy with the seconds since Deploy was clicked. The serving
API is scripted here (the integration test, tests/integration/test_widgets.py, deploys for real)."""

from __future__ import annotations

import threading

import pytest
from mlflow import MlflowClient

from mlplatform import serving
from mlplatform.widgets import ServeModel
from mlplatform.widgets.serve_model import steps_html

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")


@pytest.fixture
def registry(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("iris")
    client.create_model_version("iris", "file:///nowhere/model")
    return client


def status(state: str, version: str) -> dict:
    return {"name": "iris", "state": state, "message": "", "model_uri": "models:/iris/1", "model_version": version,
            "replicas": {"running": 1, "target": 1}, "url": "http://127.0.0.1:9/iris"}


def test_the_steps_of_a_redeploy_with_their_seconds(registry, monkeypatch):
    now = [100.0]
    returned = threading.Event()
    polls_before = threading.Event()
    after = iter([(101.0, "deploying"), (104.2, "running")])

    def deploy(**request):
        assert polls_before.wait(10)
        now[0] = 100.4
        returned.set()
        return status("deploying", "2")

    def read_status(name):
        if not returned.is_set():  # the version deployed before still runs: not a step of this deploy
            polls_before.set()
            return status("running", "1")
        now[0], state = next(after, (now[0], "running"))
        return status(state, "2")

    monkeypatch.setattr(serving, "deploy", deploy)
    monkeypatch.setattr(serving, "status", read_status)
    widget = ServeModel(client=registry, poll_interval=0.05, clock=lambda: now[0])
    try:
        assert widget.wait(30)
        widget.deploy_button.click()
        assert widget.wait(30)
        assert widget.steps == [("submitted", 0.0), ("config sent", pytest.approx(0.4)),
                                ("replica starting", 1.0), ("running", pytest.approx(4.2))]
        assert widget.steps_line.value == ("<small>submitted · 0.0 s → config sent · 0.4 s → replica starting · 1.0 s"
                                           " → running · 4.2 s</small>")
        assert widget.state == "running"
    finally:
        widget.close()


def test_steps_are_escaped_and_rounded():
    assert steps_html([("committed <abc>", 0.25), ("running", 12.04)]) == \
        "<small>committed &lt;abc&gt; · 0.2 s → running · 12.0 s</small>"
