"""Fixtures and helpers of the REST API tests: a real jupyter server with the extension (pytest-jupyter's
`jp_fetch`), driven from plain tests on pytest-jupyter's own loop.

    from .rest_fixtures import api_fixture, server_config_fixture  # noqa: F401  (fixtures "api", "jp_server_config")
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from mlplatform.handlers import PREFIX

API = tuple(PREFIX.strip("/").split("/"))  # ("mlplatform", "api"), the path segments before a route


@pytest.fixture(name="jp_server_config")  # named apart, so a test's argument does not shadow an import
def server_config_fixture():
    return {"ServerApp": {"jpserver_extensions": {"mlplatform": True}}}


@pytest.fixture(name="api")
def api_fixture(jp_fetch, jp_asyncio_loop):
    """jp_fetch, run on pytest-jupyter's own loop (where its server lives), from a plain test; pytest-asyncio's
    session loop would own an async test."""
    return lambda *path, **kwargs: jp_asyncio_loop.run_until_complete(jp_fetch(*path, **kwargs))


def send(api, method: str, *route: str, body: Any = None, **kwargs) -> Any:
    """The JSON answer of `method` on API/route; `body` is sent as JSON (a str as it is)."""
    if body is not None:
        kwargs["body"] = body if isinstance(body, str) else json.dumps(body)
    return json.loads(api(*API, *route, method=method, **kwargs).body)


def refused(api, method: str, *route: str, body: Any = None, **kwargs) -> tuple[int, dict]:
    """The status and JSON body of a request that must be refused."""
    with pytest.raises(HTTPClientError) as error:
        send(api, method, *route, body=body, **kwargs)
    return error.value.code, json.loads(error.value.response.body)


UNAUTHENTICATED = {"Authorization": ""}  # no token: the server must refuse before any handler runs
