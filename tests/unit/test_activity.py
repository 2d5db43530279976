"""Local workloads in the audit log without the hub: the service's `POST api/activity` (the caller as the
hub would say, patched in), the notebook side's best-effort `platform_service.report`, and the local
backends reporting deploy, redeploy, delete, submit and cancel after they succeed."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import pytest
from mlplatform import platform_service
from mlplatform.serving import local as serving_local
from mlplatform.serving.local import LocalRayConfig, LocalServing
from mlplatform.serving.spec import serving_request
from mlplatform.spark import LocalSparkBackend, SparkJob
from mlplatform.spark import local as spark_local
from mlplatform_core.catalog import PlatformSettings, cached_catalog
from mlplatform_core.contract import PlatformEnvironment
from mlplatform_service import activity
from mlplatform_service.activity import ActivityHandler
from mlplatform_service.app import Platform, make_app
from mlplatform_service.promotion import Caller
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from hub_config.catalog import DEFAULT_CATALOG

PREFIX = "/services/mlplatform/"
TEAMS = {"alice": ("team-vision",), "bob": ("team-nlp",)}


class Service:
    def __init__(self, platform: Platform, port: int):
        self.platform, self.port = platform, port
        self.url = f"http://127.0.0.1:{port}{PREFIX.rstrip('/')}"

    async def post(self, body, token: str | None = "alice", raw: bytes | None = None):
        headers = {"Content-Type": "application/json", **({"Authorization": f"token {token}"} if token else {})}
        return await AsyncHTTPClient().fetch(f"{self.url}/api/activity", method="POST", headers=headers,
                                             body=raw if raw is not None else json.dumps(body), raise_error=False)

    def environ(self, user: str = "alice", team: str = "team-vision") -> dict[str, str]:
        """A server's variables, as report() reads them."""
        return {"MLPLATFORM_SERVICE_URL": self.url, "JUPYTERHUB_API_TOKEN": user, "MLPLATFORM_TEAM": team}

    def records(self) -> list[dict]:
        return self.platform.audit.query()


@pytest.fixture
async def service(tmp_path, monkeypatch):
    """The service's app on a free port; the token names the user (the hub's part, patched in)."""
    def current_user(handler):
        token = handler.request.headers.get("Authorization", "").partition(" ")[2]
        return {"name": token} if token in TEAMS else None

    async def caller(handler, server=None):
        name = handler.current_user["name"]
        return Caller(name=name, teams=TEAMS[name])

    monkeypatch.setattr(ActivityHandler, "get_current_user", current_user)
    monkeypatch.setattr(ActivityHandler, "caller", caller)
    platform = Platform(str(DEFAULT_CATALOG), f"sqlite:///{tmp_path / 'platform.sqlite'}", None)
    sock, port = bind_unused_port()
    server = HTTPServer(make_app(platform, PREFIX))
    server.add_sockets([sock])
    yield Service(platform, port)
    server.stop()
    await server.close_all_connections()


def message(response) -> str:
    return json.loads(response.body)["message"]


BODY = {"action": "deploy", "kind": "model", "name": "iris", "team": "team-vision", "details": {"model_version": "3"}}


async def test_a_report_is_recorded_as_the_tokens_user_with_its_source(service):
    r = await service.post(BODY)
    assert r.code == 201
    record = json.loads(r.body)["record"]
    assert (record["actor"], record["action"], record["team"], record["target"], record["outcome"]) == (
        "alice", "deploy", "team-vision", "model:team-vision/iris", "succeeded")
    assert record["details"] == {"model_version": "3", "via": "local", "reported_by": "server"}
    assert service.records() == [record]
    assert service.platform.audit.verify().ok


@pytest.mark.parametrize("field", ["actor", "user"])
async def test_the_body_cannot_name_the_actor(service, field):
    r = await service.post({**BODY, field: "bob"})
    assert r.code == 400
    assert message(r) == (f"{field}: 'bob' is not allowed; allowed: no {field} field: the actor is the user the hub "
                          "authenticated for this request (alice); the fields are action, kind, name, team, details")
    assert service.records() == []


@pytest.mark.parametrize(("change", "start"), [
    ({"kind": "pod"}, "kind: 'pod' is not allowed; allowed: model, spark"),
    ({"kind": ["model"]}, "kind: ['model'] is not allowed; allowed: model, spark"),
    ({"action": "submit"}, "action: 'submit' is not allowed; allowed: for kind 'model': deploy, redeploy, delete"),
    ({"action": "promote"}, "action: 'promote' is not allowed; allowed: for kind 'model'"),
    ({"name": "../etc"}, "name: '../etc' is not allowed; allowed: a DNS label of at most 63"),
    ({"name": "iris\n"}, "name: 'iris\\n' is not allowed"),
    ({"name": "a" * 64}, "name: 'aaaaaaaa"),
    ({"team": "team-x"}, ("team: 'team-x' is not allowed; allowed: the team of the server that did it, one of: "
                          "team-vision, team-nlp")),
    ({"team": None}, "team: None is not allowed"),
    ({"extra": 1}, "extra: 1 is not allowed; allowed: the fields action, kind, name, team, details"),
    ({"details": [1]}, "details: [1] is not allowed; allowed: an object of at most 20 values"),
    ({"details": {f"k{i}": i for i in range(21)}}, "details: {'k0': 0"),
    ({"details": {"via": "kubernetes"}}, "details key: 'via' is not allowed"),
    ({"details": {"reported_by": "hub"}}, "details key: 'reported_by' is not allowed"),
    ({"details": {"bad key": 1}}, "details key: 'bad key' is not allowed"),
    ({"details": {"nested": {"a": 1}}}, "details.nested: {'a': 1} is not allowed"),
    ({"details": {"list": [1]}}, "details.list: [1] is not allowed"),
    ({"details": {"long": "x" * 257}}, "details.long: 'xxxx"),
    ({"details": {"big": 2**60}}, "details.big: 1152921504606846976 is not allowed; allowed: whole numbers"),
])
async def test_bad_input_is_400_naming_the_field_the_value_and_what_is_allowed(service, change, start):
    r = await service.post({**BODY, **change})
    assert r.code == 400 and message(r).startswith(start), message(r)
    assert service.records() == []


@pytest.mark.parametrize(("raw", "start"), [
    (b"[]", "the request body must be a JSON object"),
    (b"{", "the request body is not JSON"),
    (b'{"action": "deploy", "kind": "model", "name": "iris", "team": "team-vision", "details": {"x": NaN}}',
     "details.x: nan is not allowed"),
    (b'{"action": "deploy", "kind": "model", "name": "iris", "team": "team-vision", "details": {"x": "\\ud800"}}',
     "details.x: '\\ud800' is not allowed"),
])
async def test_bodies_that_are_no_report_are_400(service, raw, start):
    r = await service.post(None, raw=raw)
    assert r.code == 400 and message(r).startswith(start), message(r)
    assert service.records() == []


async def test_another_teams_report_is_403_and_the_refusal_is_recorded(service):
    r = await service.post(BODY, token="bob")
    assert r.code == 403
    assert message(r) == ("bob may not report deploy of model:team-vision/iris: it is not a team of bob's (team-nlp); "
                          "a server reports what it did for its own team")
    [refused] = service.records()
    assert (refused["actor"], refused["action"], refused["target"], refused["outcome"]) == (
        "bob", "deploy", "model:team-vision/iris", "refused")
    assert refused["details"] == {"reason": message(r), "via": "local", "reported_by": "server"}


async def test_without_a_login_nothing_is_recorded(service):
    r = await service.post(BODY, token=None)
    assert r.code == 403
    r = await service.post(BODY, token="mallory")  # a token the hub does not know
    assert r.code == 403 and message(r).startswith("the platform service needs a hub token")
    assert service.records() == []


async def test_on_kubernetes_the_webhook_records_these_409(service):
    k8s = cached_catalog(DEFAULT_CATALOG).model_copy(update={"platform": PlatformSettings(backend="kubernetes")})
    service.platform.catalog = lambda: k8s
    r = await service.post(BODY)
    assert r.code == 409 and message(r).startswith("on Kubernetes the API server's admission webhook records these")
    assert service.records() == []


async def test_a_body_over_the_limit_is_413(service):
    r = await service.post(None, raw=b" " * (activity.MAX_BODY + 1))
    assert r.code == 413
    assert service.records() == []


# --- the notebook side -----------------------------------------------------------------------------------

async def test_report_records_through_the_service(service):
    record = await asyncio.to_thread(platform_service.report, "submit", "spark", "etl-0a1b2c3d",
                                     details={"job": "etl", "text": "x" * 1000}, environ=service.environ())
    assert (record["actor"], record["target"], record["outcome"]) == ("alice", "spark:team-vision/etl-0a1b2c3d",
                                                                      "succeeded")
    assert record["details"]["text"] == "x" * 256  # cut to what the service keeps
    assert service.records() == [record]


async def test_report_logs_a_refusal_and_goes_on(service, caplog):
    with caplog.at_level(logging.WARNING, logger="mlplatform.platform_service"):
        answer = await asyncio.to_thread(platform_service.report, "deploy", "model", "iris",
                                         environ=service.environ(team="team-nlp"))
    assert answer is None
    assert ("The platform service did not record deploy of model:team-nlp/iris in the audit log (403): alice may "
            "not report deploy of model:team-nlp/iris") in caplog.text


def test_report_without_a_service_does_nothing(monkeypatch):
    def no_call(*args, **kwargs):
        raise AssertionError("no request without a service")

    monkeypatch.setattr(platform_service.requests, "post", no_call)
    assert platform_service.report("deploy", "model", "iris", environ={"MLPLATFORM_TEAM": "team-vision"}) is None
    assert platform_service.report("deploy", "model", "iris", environ={
        "MLPLATFORM_SERVICE_URL": "http://127.0.0.1:9/services/mlplatform", "MLPLATFORM_TEAM": "team-vision"}) is None


def test_report_to_a_stopped_or_hung_service_logs_and_goes_on(monkeypatch, caplog):
    monkeypatch.setattr(platform_service, "REPORT_TIMEOUT", 0.5)
    with socket.socket() as stopped:
        stopped.bind(("127.0.0.1", 0))
        stopped_port = stopped.getsockname()[1]
    with socket.socket() as hung, caplog.at_level(logging.WARNING, logger="mlplatform.platform_service"):
        hung.bind(("127.0.0.1", 0))
        hung.listen(4)
        for port in (stopped_port, hung.getsockname()[1]):
            env = {"MLPLATFORM_SERVICE_URL": f"http://127.0.0.1:{port}/services/mlplatform",
                   "JUPYTERHUB_API_TOKEN": "secret-token", "MLPLATFORM_TEAM": "team-vision"}
            assert platform_service.report("cancel", "spark", "etl-0a1b2c3d", environ=env) is None
    assert caplog.text.count("did not record cancel of spark:team-vision/etl-0a1b2c3d in the audit log: it is "
                             "unreachable") == 2
    assert "secret-token" not in caplog.text


# --- the local backends report what they did ---------------------------------------------------------------

@pytest.fixture
def reports(monkeypatch):
    """The reports the local backends send, instead of sending them."""
    sent = []

    def report(action, kind, name, team=None, details=None, *, environ=None):
        sent.append((action, kind, name, team, details, environ))

    monkeypatch.setattr(serving_local, "report", report)
    monkeypatch.setattr(spark_local, "report", report)
    return sent


def test_local_serving_reports_deploy_redeploy_and_delete(tmp_path, reports, monkeypatch):
    environ = {"JUPYTERHUB_API_TOKEN": "t"}
    local = LocalServing(LocalRayConfig(port=9, root=tmp_path / "ray", num_cpus=4, num_gpus=0),
                         environment=PlatformEnvironment(user="alice", team="team-vision"), environ=environ)
    monkeypatch.setattr(local.head, "ensure", lambda: False)  # no Ray: the head "runs", Serve takes anything
    monkeypatch.setattr(local, "_apply", lambda **_: None)
    local.deploy(serving_request(name="iris", model_uri="models:/iris/1"), model_version="1", env={})
    local.deploy(serving_request(name="iris", model_uri="models:/iris/2", replicas=2), model_version="2", env={})
    local.delete("iris", wait=False)
    assert [(a, k, n, t, e) for a, k, n, t, _, e in reports] == [
        ("deploy", "model", "iris", "team-vision", environ), ("redeploy", "model", "iris", "team-vision", environ),
        ("delete", "model", "iris", "team-vision", environ)]
    assert reports[0][4] == {"model_uri": "models:/iris/1", "model_version": "1", "previous_version": None,
                             "replicas": 1, "cpus": 1.0, "gpus": 0}
    assert reports[1][4]["previous_version"] == "1" and reports[1][4]["replicas"] == 2
    assert reports[2][4] == {"model_version": "2"}


def test_a_failed_deploy_reports_nothing(tmp_path, reports, monkeypatch):
    local = LocalServing(LocalRayConfig(port=9, root=tmp_path / "ray", num_cpus=4, num_gpus=0),
                         environment=PlatformEnvironment(user="alice", team="team-vision"))

    def fails():
        raise serving_local.BackendUnavailable("no head")

    monkeypatch.setattr(local.head, "ensure", fails)
    with pytest.raises(serving_local.BackendUnavailable):
        local.deploy(serving_request(name="iris", model_uri="models:/iris/1"), model_version="1", env={})
    assert reports == []


def test_local_spark_reports_submit_and_cancel_not_cancel_all(tmp_path, reports):
    script = tmp_path / "spark-submit"
    script.write_text("#!/bin/sh\necho 'INFO SparkContext: Running Spark version 4.3.0'\nsleep 600\n")
    script.chmod(0o755)
    main = tmp_path / "job.py"
    main.write_text("print('hello')\n")
    environ = {"PATH": "/usr/bin:/bin", "MLPLATFORM_USER": "alice", "MLPLATFORM_TEAM": "team-vision"}
    backend = LocalSparkBackend(tmp_path / "state", spark_submit=script, environ=environ, cancel_grace=2)
    first = backend.submit(SparkJob(name="etl", main_file=str(main)))["app_id"]
    second = backend.submit(SparkJob(name="etl", main_file=str(main)))["app_id"]
    assert backend.cancel(first)["state"] == "CANCELLED"
    backend.cancel(first)  # already cancelled: nothing to report
    assert backend.cancel_all("the server stopped") == [second]
    assert [(a, k, n, t, e) for a, k, n, t, _, e in reports] == [
        ("submit", "spark", first, None, environ), ("submit", "spark", second, None, environ),
        ("cancel", "spark", first, None, environ)]
    assert reports[0][4] == {"job": "etl", "master": "local[1]", "executors": 1, "executor_cores": 1,
                             "driver_memory": "1g", "server": ""}
    assert reports[2][4]["job"] == "etl" and reports[2][4]["state_before"] in ("SUBMITTED", "RUNNING")
