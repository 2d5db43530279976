"""MLflow stopping part-way through a promotion or a deploy, against the real MLflow server behind a
TCP proxy that stops at a chosen request (tests/support/tcp_proxy.py). MLflow's client is bounded as
in every notebook (the contract's constants), so each failure is an error in seconds.

What it proves:
- promotion moves the alias last, after the audit event: stopped before the alias request, the
  alias has not moved (the trail may hold the attempt's event) and a retry completes the promotion;
  stopped after MLflow moved the alias but before its answer, the move is in the audit trail; stopped
  before the audit tags, neither moved. Each is an MlflowUnavailable (503) saying which of these it is,
  never an alias move without its audit event.
- MLflow stopping while the gates read the model is a 503, not a "no signature" refusal (409).
- a deploy whose model lookup is cut part-way is a 503 "nothing was deployed", with no application
  recorded and no Ray head started.
"""

from __future__ import annotations

import time

import pytest
from mlflow import MlflowClient

from hub_config.catalog import DEFAULT_CATALOG
from mlplatform import registry, serving
from mlplatform.mlflow_health import MlflowUnavailable
from mlplatform_core.catalog import Promotion
from mlplatform_core.contract import CONSTANTS

from ..support.mlflow_models import register_model, unique_name
from ..support.tcp_proxy import TcpProxy

POLICY = Promotion(alias="champion", metric_gates=[{"metric": "accuracy", "op": ">=", "threshold": 0.9}],
                   compare_with_champion=True, require_signature=True, model_card_fields=["owner"])
BOUND_SECONDS = 15


@pytest.fixture
def bounded_mlflow(monkeypatch):
    """MLflow's client settings of every notebook server."""
    for key, value in CONSTANTS.items():
        if key.startswith("MLFLOW_"):
            monkeypatch.setenv(key, value)


@pytest.fixture
def proxy(platform, bounded_mlflow):
    with TcpProxy(platform.mlflow_url) as proxy:
        yield proxy


@pytest.fixture
def champion_and_challenger(platform):
    """v1 holds @champion; v2 passes every gate."""
    name = unique_name("faults")
    v1 = register_model(platform.mlflow_url, name, metrics={"accuracy": 0.91}, model_tags={"owner": "team-vision"})
    register_model(platform.mlflow_url, name, metrics={"accuracy": 0.95})  # v2
    registry.promote(name, v1.version, user="alice", promotion=POLICY, tracking_uri=platform.mlflow_url)
    return name


def promote_through(proxy, name, version="2"):
    started = time.monotonic()
    with pytest.raises(MlflowUnavailable) as e:
        registry.promote(name, version, user="bob", promotion=POLICY, client=MlflowClient(proxy.url))
    assert time.monotonic() - started < BOUND_SECONDS
    assert proxy.stopped
    proxy.restore()
    return str(e.value)


def state(platform, name):
    """(the alias's holder, [(seq, action, version)] of the audit trail), read straight from MLflow."""
    holder = MlflowClient(platform.mlflow_url).get_registered_model(name).aliases.get("champion")
    trail = registry.history(name, tracking_uri=platform.mlflow_url)
    return holder, [(e["seq"], e["action"], e["version"]) for e in trail]


def test_stopped_before_the_alias_moves_leaves_the_alias_and_a_retry_completes(platform, proxy,
                                                                               champion_and_challenger):
    name = champion_and_challenger
    proxy.stop_before("POST", "/registered-models/alias")
    message = promote_through(proxy, name)
    assert message.startswith(f"MLflow at {proxy.url} stopped answering (ConnectionError) during the promote of "
                              f"{name!r} version 2 to @champion: @champion may have moved to version 2; if it did, "
                              "audit event 2 records it.")
    holder, trail = state(platform, name)
    assert holder == "1"  # the alias did not move: the request never reached MLflow
    assert trail == [(1, "promote", "1"), (2, "promote", "2")]  # the attempt's event (the undo could not reach it)

    registry.promote(name, "2", user="bob", promotion=POLICY, client=MlflowClient(proxy.url))
    assert state(platform, name) == ("2", [(1, "promote", "1"), (2, "promote", "2"), (3, "promote", "2")])
    assert registry.rollback(name, user="bob", promotion=POLICY, client=MlflowClient(proxy.url))["version"] == "1"


def test_stopped_after_mlflow_moved_the_alias_leaves_the_move_audited(platform, proxy, champion_and_challenger):
    name = champion_and_challenger
    proxy.stop_after("POST", "/registered-models/alias")
    message = promote_through(proxy, name)
    assert "@champion may have moved to version 2; if it did, audit event 2 records it" in message
    assert state(platform, name) == ("2", [(1, "promote", "1"), (2, "promote", "2")])


def test_stopped_before_the_audit_tags_moves_nothing(platform, proxy, champion_and_challenger):
    name = champion_and_challenger
    proxy.stop_before("POST", "/model-versions/set-tag")
    message = promote_through(proxy, name)
    assert message.endswith(": @champion did not move, but the audit trail may hold event 2 of this attempt. "
                            "Try again when MLflow is back")
    assert state(platform, name) == ("1", [(1, "promote", "1")])


def test_stopped_while_the_gates_read_the_model_is_unavailable_not_refused(platform, proxy, champion_and_challenger):
    name = champion_and_challenger
    proxy.stop_before("GET", "MLmodel")
    message = promote_through(proxy, name)
    assert message == (f"MLflow at {proxy.url} stopped answering (ConnectionError); no alias was moved. "
                       "Try again when it is back")
    assert state(platform, name) == ("1", [(1, "promote", "1")])


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
