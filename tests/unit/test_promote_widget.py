"""PromoteModel's rough edges (issue 13): buttons as wide as their labels, Roll back only when the alias has an
earlier holder to return to, and a failing model-card gate that shows the line of code setting the tag.

Registered models come from MLflow on a SQLite file. The platform service (a hub-authenticated server, run for
real in tests/integration/test_widgets.py) is played by a small HTTP server at MLPLATFORM_SERVICE_URL that
answers as the service does: the trail's `rollback_to` from the service's own `trail.rollback_target`, gate
reports from the registry's own `evaluate_gates`, a refused promotion as the service's 409 with the report."""

from __future__ import annotations

import re
import threading
from http.server import ThreadingHTTPServer
from urllib.parse import unquote, urlparse

import pytest
from mlflow import MlflowClient
from mlplatform_core.catalog import Promotion

from mlplatform.registry import PromotionRefused, RollbackRefused
from mlplatform.registry.gates import evaluate_gates
from mlplatform.widgets import PromoteModel
from mlplatform_service.trail import rollback_target

from ..support.json_handler import JsonHandler

# MLflow's SQLite store uses a SQLAlchemy loader that SQLAlchemy deprecates: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")

MODEL = "Iris_Model"
POLICY = Promotion(alias="champion", metric_gates=[], compare_with_champion=False, require_signature=False,
                   model_card_fields=["intended_use"])


class PlatformService:
    """What the widget asks the platform service, answered from `events` (the model's trail, oldest first),
    `holder` (the version holding @champion) and `version_tags` (the model-card tags of each version)."""

    def __init__(self):
        self.events: list[dict] = []
        self.holder: str | None = "1"
        self.version_tags: dict[str, dict] = {}

    def trail(self, name: str) -> dict:
        try:
            target = rollback_target(self.events, name, POLICY.alias, self.holder)
        except RollbackRefused:
            target = None
        return {"events": self.events, "holder": self.holder, "rollback_to": target}

    def gates(self, name: str, version: str) -> dict:
        return evaluate_gates(POLICY, model=name, version=version, metrics={}, signature=None,
                              version_tags=self.version_tags.get(version, {}), model_tags={})

    def answer(self, method: str, path: str) -> tuple[int, dict]:
        if m := re.fullmatch(r"/services/platform/api/models/([^/]+)/history", path):
            return 200, self.trail(unquote(m[1]))
        if m := re.fullmatch(r"/services/platform/api/models/([^/]+)/versions/([^/]+)/(gates|promote)", path):
            report = self.gates(unquote(m[1]), unquote(m[2]))
            if m[3] == "gates":
                return 200, report
            if not report["passed"]:
                return 409, {"error": "PromotionRefused", **PromotionRefused(report).to_dict()}
        return 404, {"message": f"{method} {path}: not played by this test"}


@pytest.fixture
def service(monkeypatch):
    played = PlatformService()

    class Handler(JsonHandler):
        def reply(self):
            self.answer(*played.answer(self.command, urlparse(self.path).path))

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.reply()

        do_GET = reply

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("MLPLATFORM_SERVICE_URL", f"http://127.0.0.1:{server.server_port}/services/platform")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "test-token")
    monkeypatch.setenv("MLPLATFORM_TEAM", "team-vision")
    yield played
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture
def widget(tmp_path, service):
    """PromoteModel on a registry with versions 1, 2 and 3 of Iris_Model, @champion → 1."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(MODEL)
    for _ in range(3):
        client.create_model_version(MODEL, "file:///nowhere/model")
    client.set_registered_model_alias(MODEL, "champion", "1")
    widget = PromoteModel(client=client, user="alice", promotion=POLICY)
    assert widget.wait(30)
    yield widget
    widget.close()


def promotion(seq: int, version: str, previous: str | None) -> dict:
    return {"seq": seq, "action": "promote", "model": MODEL, "team": "team-vision", "version": version,
            "alias": "champion", "user": "alice", "time": f"2026-12-03T07:00:{seq:02d}Z", "previous_version": previous,
            "gates": [], "card": None}


def test_buttons_are_as_wide_as_their_labels(widget):
    # The default button width (148px) cut "Promote to @champion" and "Roll back @champion" in JupyterLab.
    buttons = (widget.check_button, widget.promote_button, widget.rollback_button)
    assert [b.description for b in buttons] == ["Check gates", "Promote to @champion", "Roll back @champion"]
    assert [b.layout.width for b in buttons] == ["auto", "auto", "auto"]


def test_roll_back_is_enabled_only_when_an_earlier_holder_exists(widget, service):
    # @champion → 1, set before the platform kept a trail: nothing to go back to.
    assert widget.errors.lines == [] and widget.holder.value == "@champion → version 1"
    assert widget.rollback_version is None and widget.rollback_button.disabled
    assert widget.rollback_button.tooltip == "nothing to roll back to: no earlier version held the alias"

    # The platform promoted 1, then 2: a rollback goes back to 1.
    service.events, service.holder = [promotion(1, "1", None), promotion(2, "2", "1")], "2"
    widget.refresh()
    assert widget.wait(30) and widget.errors.lines == []
    assert widget.rollback_version == "1" and not widget.rollback_button.disabled
    assert widget.rollback_button.tooltip == "move @champion back to version 1"

    # Only the first promotion on record: version 1 is the first holder, again nothing to go back to.
    service.events, service.holder = [promotion(1, "1", None)], "1"
    widget.refresh()
    assert widget.wait(30) and widget.rollback_version is None and widget.rollback_button.disabled


def test_a_missing_model_card_tag_shows_the_line_that_sets_it(widget, service):
    code = """MlflowClient().set_model_version_tag('Iris_Model', '3', 'intended_use', "...")"""
    widget.version.value = "3"
    widget.check_button.click()
    assert widget.wait(30) and widget.report["failed"] == ["model card: intended_use"]
    assert code.replace('"', "&quot;").replace("'", "&#x27;") in widget.gates.value  # in the gate table
    assert widget.promote_button.disabled

    # The tag goes missing between the check and Promote: the refusal's red line carries the code too.
    service.version_tags["3"] = {"intended_use": "fraud screening"}
    widget.check_button.click()
    assert widget.wait(30) and widget.report["passed"] and not widget.promote_button.disabled
    service.version_tags["3"] = {}
    widget.promote_button.click()
    assert widget.wait(30)
    assert widget.errors.lines == [
        f"version 3 of 'Iris_Model' was not promoted to @champion: 1 of 1 gates failed: model card: intended_use: "
        f"tag 'intended_use' is missing; set it on the version with {code} (or on the registered model with "
        "set_registered_model_tag)"]
