"""MLflow (or the platform service, which promotes) down or hung: the REST API's routes that need them answer
503 within seconds, change nothing, and the other routes keep answering meanwhile (MLflow's own client
would retry for about four minutes)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest
from tornado.httpclient import HTTPClientError

from hub_config.catalog import DEFAULT_CATALOG

from .rest_fixtures import API
from .rest_fixtures import server_config_fixture  # noqa: F401  (fixture jp_server_config)

ROUTES = [("GET", ("models",), None), ("GET", ("promote", "iris", "1"), None), ("POST", ("rollback", "iris"), ""),
          ("PUT", ("serving", "iris"), json.dumps({"model_uri": "models:/iris/1"}))]


@pytest.fixture
def hung_port():
    """A server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted, stop = [], threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def environment(monkeypatch, tmp_path, mlflow_port: int) -> None:
    """A server whose MLflow and platform service are both at `mlflow_port` (stopped or hung there)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{mlflow_port}")
    monkeypatch.setenv("MLPLATFORM_SERVICE_URL", f"http://127.0.0.1:{mlflow_port}/services/mlplatform")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "the-servers-token")
    monkeypatch.setenv("MLFLOW_WORKSPACE", "team-vision")
    monkeypatch.setenv("MLPLATFORM_BACKEND", "local")
    monkeypatch.setenv("MLPLATFORM_RAY_DIR", str(tmp_path / "ray"))
    monkeypatch.setenv("MLPLATFORM_RAY_PORT", "29993")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MLPLATFORM_CATALOG", str(DEFAULT_CATALOG))  # the gates, as on a server the hub started


async def answer(jp_fetch, method, route, body) -> tuple[int, dict, float]:
    started = time.monotonic()
    try:
        response = await jp_fetch(*API, *route, method=method, body=body, request_timeout=120)
        status, text = response.code, response.body
    except HTTPClientError as e:
        status, text = e.code, e.response.body
    return status, json.loads(text), time.monotonic() - started


@pytest.mark.parametrize("method, route, body", ROUTES)
def test_mlflow_down_is_a_quick_503(jp_fetch, jp_asyncio_loop, monkeypatch, tmp_path, stopped_port, method, route,
                                    body):
    environment(monkeypatch, tmp_path, stopped_port)
    status, reply, seconds = jp_asyncio_loop.run_until_complete(answer(jp_fetch, method, route, body))
    assert status == 503 and "does not answer" in reply["message"] and "nothing was changed" in reply["message"]
    assert seconds < 15
    assert not (tmp_path / "ray").exists()  # no deployment recorded, no Ray head started


def test_a_hung_mlflow_does_not_stall_the_other_routes(jp_fetch, jp_asyncio_loop, monkeypatch, tmp_path,
                                                       hung_port):
    environment(monkeypatch, tmp_path, hung_port)

    async def both():
        models = asyncio.ensure_future(answer(jp_fetch, "GET", ("models",), None))
        await asyncio.sleep(0.2)
        spark = await answer(jp_fetch, "GET", ("spark",), None)
        return spark, models.done(), await models

    (spark_status, _, spark_seconds), models_done_first, (status, reply, seconds) = \
        jp_asyncio_loop.run_until_complete(both())
    assert spark_status == 200 and spark_seconds < 2 and not models_done_first
    assert status == 503 and "does not answer (ReadTimeout)" in reply["message"] and seconds < 15
