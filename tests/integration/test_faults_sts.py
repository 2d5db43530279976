"""STS stopped or hung, seen by the hub's S3 credential broker (in process, its default settings): a
503 naming STS and the kind of failure, without the ID token or a traceback, well within the time the
notebook's credential process waits for the hub (so the user reads the hub's reason, not a timeout of
their own). STS stopped with the real hub and credential process: test_s3_broker.py."""

from __future__ import annotations

import asyncio
import time

import pytest

from hub_config.catalog import DEFAULT_CATALOG
from hub_config.s3_broker import CredentialsUnavailable, S3CredentialBroker
from mlplatform.aws_credentials import HUB_TIMEOUT_SECONDS
from mlplatform_core.catalog import load_catalog

ID_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"


def broker_with_sts(port: int) -> S3CredentialBroker:
    catalog = load_catalog(DEFAULT_CATALOG)
    s3 = catalog.storage.s3.model_copy(update={"sts_endpoint_url": f"http://127.0.0.1:{port}"})
    return S3CredentialBroker(catalog.model_copy(update={"storage": catalog.storage.model_copy(update={"s3": s3})}))


@pytest.mark.parametrize("sts, reason, bound", [("stopped_port", "EndpointConnectionError", 5),
                                                ("silent_port", "ReadTimeoutError", HUB_TIMEOUT_SECONDS / 2)])
def test_sts_down_is_a_clear_503_within_the_credential_process_wait(request, sts, reason, bound):
    port = request.getfixturevalue(sts)
    broker = broker_with_sts(port)

    async def id_token():
        return ID_TOKEN

    started = time.monotonic()
    with pytest.raises(CredentialsUnavailable) as e:
        asyncio.run(broker.credentials("alice", "team-vision", id_token))
    assert time.monotonic() - started < bound
    assert (e.value.status, str(e.value)) == (503, f"STS at http://127.0.0.1:{port} is unreachable: {reason}")
    assert e.value.__cause__ is None and e.value.__suppress_context__  # no traceback of boto's to show
    assert broker.cached("alice", "team-vision") is None  # nothing cached: the next ask calls STS again
