"""A rollout's inference log switched on and off and its sample rate set through the platform service (issue 12):
the rollout's record changes (the gateway records the evidence at its sample rate), the change is audited, bad input
is a 400 naming the field, and the log cannot go off while the live gates need it (shadow, canary).

The service's `Rollouts` acts on a stand-in backend that keeps the Serve application as the serving backends do
(spec.with_candidate, with_rollout, with_inference_log); the audit log is the real one on SQLite."""

from __future__ import annotations

import pytest
from mlplatform.registry.errors import Forbidden
from mlplatform.serving import rollouts as notebook_rollouts
from mlplatform.serving.errors import InvalidServingRequest, ServingConflict
from mlplatform.serving.rollout import Rollout, log_switch
from mlplatform.serving.spec import (ServingRequest, candidate_of, serve_application, with_candidate,
                                     with_inference_log, with_rollout)
from mlplatform_core.catalog import load_catalog

from hub_config.catalog import DEFAULT_CATALOG
from mlplatform_service.audit_log import AuditLog
from mlplatform_service.database import connect
from mlplatform_service.rollouts import Rollouts

from ..support.gitops_service import caller

TEAM = "team-vision"
CATALOG = load_catalog(DEFAULT_CATALOG)
LOG = CATALOG.serving.inference_log.model_dump()
ALICE, BOB = caller("alice", TEAM), caller("bob", "team-nlp")


class StandIn:
    """The rollout backend's part the service uses, on one application kept in memory."""

    def __init__(self, mode: str = "shadow", share: float | None = None):
        app = serve_application(ServingRequest(name="iris", model_uri="models:/iris@champion"), model_version="3")
        self.app = with_candidate(app, model_version="4", requested_uri="models:/iris/4",
                                  rollout=Rollout(mode=mode, share=share or 0.0, since=1.0), inference_log=LOG)
        self.changes: list[str] = []

    def status(self, team, name):
        return {"name": name, "model_uri": "models:/iris@champion", "model_version": "3",
                "rollout": candidate_of(self.app)}

    def change(self, team, name, rollout, *, actor="platform"):
        self.app = with_rollout(self.app, rollout)
        self.changes.append(f"{actor}: mode {rollout.mode}")
        return self.status(team, name)

    def set_inference_log(self, team, name, inference_log, *, actor="platform"):
        self.app = with_inference_log(self.app, inference_log)
        self.changes.append(f"{actor}: log {inference_log and inference_log['sample_rate']}")
        return self.status(team, name)

    def last_commit(self, team, name):
        return None


@pytest.fixture
def audit(tmp_path):
    return AuditLog(connect(f"sqlite:///{tmp_path / 'audit.db'}"))


def service(backend: StandIn, audit: AuditLog) -> Rollouts:
    return Rollouts(catalog=lambda: CATALOG, audit=audit, promotions=None, backend=backend, s3=lambda: None)


def user_config(backend: StandIn) -> dict:
    return backend.app["deployments"][0]["user_config"]


def test_the_sample_rate_changes_in_place_and_is_audited(audit):
    backend = StandIn("canary", 0.05)
    status = service(backend, audit).set_inference_log(ALICE, TEAM, "iris", sample_rate=0.1)
    assert status["rollout"]["inference_log"] == {**LOG, "sample_rate": 0.1}
    assert user_config(backend)["inference_log"] == {**LOG, "sample_rate": 0.1}
    assert user_config(backend)["rollout"]["mode"] == "canary"  # the routing is as it was
    [record] = audit.query(action="rollout")
    assert (record["actor"], record["target"], record["details"]) == ("alice", f"model:{TEAM}/iris", {
        "endpoint": "iris", "change": "inference_log", "candidate_version": "4", "enabled": True, "sample_rate": 0.1,
        "was_enabled": True})


def test_off_is_refused_while_the_gates_need_it_and_allowed_in_mode_off(audit):
    backend = StandIn("shadow")
    rollouts = service(backend, audit)
    with pytest.raises(ServingConflict) as refused:
        rollouts.set_inference_log(ALICE, TEAM, "iris", enabled=False)
    assert str(refused.value).startswith("enabled: false refused: 'iris' is in shadow, and the live gates")
    assert (backend.changes, user_config(backend)["inference_log"]) == ([], LOG)

    rollouts.change(ALICE, TEAM, "iris", mode="off")
    status = rollouts.set_inference_log(ALICE, TEAM, "iris", enabled=False)
    assert status["rollout"]["inference_log"] is None and "inference_log" not in user_config(backend)
    # Traffic back to the candidate needs the log on first, then the settings it had (the catalog's) come back.
    with pytest.raises(ServingConflict, match=r"^mode 'canary' refused: the inference log of 'iris' is off"):
        rollouts.change(ALICE, TEAM, "iris", mode="canary", share=0.1)
    with pytest.raises(ServingConflict, match="is off; switch it on with enabled: true"):
        rollouts.set_inference_log(ALICE, TEAM, "iris", sample_rate=0.5)
    rollouts.set_inference_log(ALICE, TEAM, "iris", enabled=True, sample_rate=0.5)
    rollouts.change(ALICE, TEAM, "iris", mode="canary", share=0.1)
    assert user_config(backend)["inference_log"] == {**LOG, "sample_rate": 0.5}
    assert backend.changes == ["alice: mode off", "alice: log None", "alice: log 0.5", "alice: mode canary"]
    changes = [(r["details"]["change"], r["details"].get("enabled")) for r in audit.query(action="rollout")]
    assert changes == [("change", None), ("inference_log", False), ("inference_log", True), ("change", None)]


@pytest.mark.parametrize(("body", "problems"), [
    ({"enabled": "no"}, [("enabled", "'no' is not a switch; allowed: true (log on) or false (log off)")]),
    ({"sample_rate": 0}, [("sample_rate", "0 is not a sample rate; allowed: a number above 0, at most 1 (e.g. 0.1 "
                                          "logs 10 % of the requests; to log none, enabled: false)")]),
    ({"sample_rate": 1.5}, [("sample_rate", "1.5 is not a sample rate; allowed: a number above 0, at most 1 (e.g. "
                                            "0.1 logs 10 % of the requests; to log none, enabled: false)")]),
    ({"sample_rate": True, "enabled": 1}, [
        ("enabled", "1 is not a switch; allowed: true (log on) or false (log off)"),
        ("sample_rate", "True is not a sample rate; allowed: a number above 0, at most 1 (e.g. 0.1 logs 10 % of the "
                        "requests; to log none, enabled: false)")]),
    ({"enabled": False, "sample_rate": 0.5}, [("sample_rate", "0.5 given with enabled false; allowed: a sample rate "
                                                              "only for a log that is on")]),
    ({}, [("enabled", "neither enabled nor sample_rate given; allowed: enabled true or false, sample_rate above 0 "
                      "and at most 1, or both")]),
])
def test_bad_input_names_the_field_the_value_and_what_is_allowed(audit, body, problems):
    with pytest.raises(InvalidServingRequest) as bad:
        log_switch(**body)
    assert bad.value.problems == problems
    backend = StandIn()
    with pytest.raises(InvalidServingRequest):
        service(backend, audit).set_inference_log(ALICE, TEAM, "iris", **body)
    assert backend.changes == [] and audit.query(action="rollout") == []


def test_another_team_is_refused_and_audited(audit):
    backend = StandIn()
    with pytest.raises(Forbidden) as refused:
        service(backend, audit).set_inference_log(BOB, TEAM, "iris", enabled=False)
    assert str(refused.value).startswith("bob may not switch the inference log of 'iris': the endpoint belongs to team "
                                         "team-vision")
    [record] = audit.query(action="rollout")
    assert (record["outcome"], record["details"]["change"]) == ("refused", "inference_log")
    assert backend.changes == []


def test_the_python_api_sends_only_what_changes(monkeypatch):
    sent = []
    monkeypatch.setattr(notebook_rollouts, "_call", lambda method, name, suffix="", **kw: sent.append(
        (method, name, suffix, kw["json"])) or {})
    notebook_rollouts.inference_log("iris", sample_rate=0.25)
    notebook_rollouts.inference_log("iris", enabled=False)
    assert sent == [("PUT", "iris", "/inference-log", {"sample_rate": 0.25}),
                    ("PUT", "iris", "/inference-log", {"enabled": False})]
