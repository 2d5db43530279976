"""MLflow stopping part-way through a promotion or a deploy, against the real MLflow server behind a
TCP proxy that stops at a chosen request (tests/support/tcp_proxy.py). MLflow's client is bounded as
in every notebook and in the platform service (the contract's constants), so each failure is an error
in seconds.

What it proves:
- promotion (the platform service's engine) writes its audit intent before anything changes and moves
  the alias last: stopped before the alias request, the alias has not moved and the intent is settled
  as failed at the model's next action, and a retry completes; stopped after MLflow moved the alias but
  before its answer, the intent is settled as succeeded, so the move is in the trail; stopped before the
  description (the card), the attempt is recorded as failed at once. Each is an MlflowUnavailable (503)
  saying which of these it is, never an alias move without its audit record.
- MLflow stopping while the gates read the model is a 503, not a "no signature" refusal (409).
- a deploy whose model lookup is cut part-way is a 503 "nothing was deployed", with no application
  recorded and no Ray head started.
"""

from __future__ import annotations

import time

import pytest
from mlflow import MlflowClient

from hub_config.catalog import DEFAULT_CATALOG
from mlplatform import serving
from mlplatform.mlflow_health import MlflowUnavailable
from mlplatform.registry.errors import NotFound
from mlplatform_core.catalog import Promotion, load_catalog
from mlplatform_service.rollouts import Rollouts
from mlplatform_core.contract import CONSTANTS

from ..support.mlflow_models import register_model, unique_name
from ..support.promotion import TEAM, caller, engine
from ..support.tcp_proxy import TcpProxy

POLICY = Promotion(alias="champion", metric_gates=[{"metric": "accuracy", "op": ">=", "threshold": 0.9}],
                   compare_with_champion=True, require_signature=True, model_card_fields=["owner"])
BOUND_SECONDS = 15
ALICE, BOB = caller("alice"), caller("bob")


@pytest.fixture
def bounded_mlflow(monkeypatch):
    """MLflow's client settings of every notebook server and of the platform service."""
    for key, value in CONSTANTS.items():
        if key.startswith("MLFLOW_"):
            monkeypatch.setenv(key, value)


@pytest.fixture
def proxy(platform, bounded_mlflow):
    with TcpProxy(platform.mlflow_url) as proxy:
        yield proxy


@pytest.fixture
def service(platform, proxy, tmp_path):
    """The engine, talking to MLflow through the proxy."""
    return engine(platform, tmp_path, tracking_uri=proxy.url, promotion=POLICY)


@pytest.fixture
def champion_and_challenger(platform, service):
    """v1 holds @champion; v2 passes every gate."""
    name = unique_name("faults")
    register_model(platform.mlflow_url, name, metrics={"accuracy": 0.91}, model_tags={"owner": "team-vision"})
    register_model(platform.mlflow_url, name, metrics={"accuracy": 0.95})  # v2
    service.promote(ALICE, TEAM, name, "1")
    return name


def promote_through(service, proxy, name, version="2"):
    started = time.monotonic()
    with pytest.raises(MlflowUnavailable) as e:
        service.promote(BOB, TEAM, name, version)
    assert time.monotonic() - started < BOUND_SECONDS
    assert proxy.stopped
    proxy.restore()
    return str(e.value)


def state(platform, service, name):
    """(the alias's holder read straight from MLflow, [(action, version, user)] of the trail, [outcome] of the
    audit records). Reading the history settles open intents first."""
    holder = MlflowClient(platform.mlflow_url).get_registered_model(name).aliases.get("champion")
    trail = service.history(ALICE, TEAM, name)["events"]
    records = [r["outcome"] for r in service.audit.query(team=TEAM, limit=10**9) if r["target"].endswith(f"/{name}")]
    return holder, [(e["action"], e["version"], e["user"]) for e in trail], records


def test_stopped_before_the_alias_moves_leaves_the_alias_and_a_retry_completes(platform, proxy, service,
                                                                               champion_and_challenger):
    name = champion_and_challenger
    proxy.stop_before("POST", "/registered-models/alias")
    message = promote_through(service, proxy, name)
    assert message.startswith(f"MLflow at {proxy.url} stopped answering (ConnectionError) during the promote of "
                              f"{name!r} version 2 to @champion: @champion may have moved; audit record ")
    assert message.endswith("holds the intent, and the platform records what happened at the model's next action "
                            "or history. Check the history when MLflow is back")
    # The alias did not move (the request never reached MLflow); the open intent is settled as failed.
    assert state(platform, service, name) == (
        "1", [("promote", "1", "alice")], ["intent", "succeeded", "intent", "failed"])

    service.promote(BOB, TEAM, name, "2")
    assert state(platform, service, name)[:2] == ("2", [("promote", "1", "alice"), ("promote", "2", "bob")])
    assert service.rollback(BOB, TEAM, name)["version"] == "1"


def test_stopped_after_mlflow_moved_the_alias_leaves_the_move_audited(platform, proxy, service,
                                                                      champion_and_challenger):
    name = champion_and_challenger
    proxy.stop_after("POST", "/registered-models/alias")
    message = promote_through(service, proxy, name)
    assert "@champion may have moved; audit record " in message
    assert state(platform, service, name) == (
        "2", [("promote", "1", "alice"), ("promote", "2", "bob")], ["intent", "succeeded", "intent", "succeeded"])


def test_stopped_before_the_card_is_written_moves_nothing(platform, proxy, service, champion_and_challenger):
    name = champion_and_challenger
    proxy.stop_before("PATCH", "/model-versions/update")
    message = promote_through(service, proxy, name)
    assert message.endswith("to @champion: @champion did not move (audit record "
                            f"{service.audit.query(outcome='intent', limit=10**9)[-1]['seq']} says so). "
                            "Try again when MLflow is back")
    assert state(platform, service, name) == (
        "1", [("promote", "1", "alice")], ["intent", "succeeded", "intent", "failed"])


def test_stopped_while_the_gates_read_the_model_is_unavailable_not_refused(platform, proxy, service,
                                                                           champion_and_challenger):
    name = champion_and_challenger
    proxy.stop_before("GET", "MLmodel")
    message = promote_through(service, proxy, name)
    assert message == (f"MLflow at {proxy.url} stopped answering (ConnectionError); no alias was moved. "
                       "Try again when it is back")
    assert state(platform, service, name) == ("1", [("promote", "1", "alice")], ["intent", "succeeded"])


def test_stopped_while_a_deploy_resolves_the_model_deploys_nothing(platform, proxy, monkeypatch, tmp_path):
    mv = register_model(platform.mlflow_url, unique_name("faults-deploy"), metrics={"accuracy": 0.9})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", proxy.url)
    monkeypatch.setenv("MLPLATFORM_BACKEND", "local")
    monkeypatch.setenv("MLPLATFORM_RAY_DIR", str(tmp_path / "ray"))
    monkeypatch.setenv("MLPLATFORM_RAY_PORT", "29793")
    monkeypatch.setenv("MLPLATFORM_CATALOG", str(DEFAULT_CATALOG))
    proxy.stop_before("GET", "/model-versions/get")  # after the registered model was read
    started = time.monotonic()
    with pytest.raises(MlflowUnavailable) as e:
        serving.deploy("faults-deploy", mv.uri)
    assert time.monotonic() - started < BOUND_SECONDS
    assert str(e.value) == (f"MLflow at {proxy.url} stopped answering (ConnectionError) while resolving {mv.uri}; "
                            "nothing was deployed. Try again when it is back")
    assert e.value.status_code == 503
    assert ("GET", f"/api/2.0/mlflow/registered-models/get?name={mv.name}") in proxy.requests
    assert not (tmp_path / "ray").exists()  # no record written, no Ray head started


class ServingEndpoint:
    """One endpoint serving `model`@champion, as a serving backend reports it; records rollout starts."""

    def __init__(self, model: str):
        self.model, self.started = model, []

    def status(self, team, name):
        return {"name": name, "model_uri": f"models:/{self.model}@champion", "state": "running", "rollout": None}

    def start(self, team, name, **rollout):
        self.started.append((team, name, rollout))
        return self.status(team, name)


def test_stopped_when_a_rollout_looks_up_its_candidate_starts_nothing(platform, proxy, service, tmp_path):
    """MLflow gone is a 503 that says so (not "no such version"); a version that is not there is a 404."""
    name = unique_name("faults-rollout")
    register_model(platform.mlflow_url, name)
    endpoint = ServingEndpoint(name)
    rollouts = Rollouts(catalog=lambda: load_catalog(DEFAULT_CATALOG), audit=service.audit, promotions=service,
                        backend=endpoint, s3=lambda: None)
    with pytest.raises(NotFound) as missing:
        rollouts.start(ALICE, TEAM, "iris", version=2)
    assert str(missing.value).startswith(f"model {name!r} has no version 2 in team {TEAM}'s workspace: ")

    proxy.stop_before("GET", "/model-versions/get")
    with pytest.raises(MlflowUnavailable) as gone:
        rollouts.start(ALICE, TEAM, "iris", version=1)
    assert str(gone.value) == (f"MLflow at {proxy.url} stopped answering (ConnectionError); no rollout was "
                               "started. Try again when it is back")
    assert gone.value.status_code == 503
    assert endpoint.started == []
