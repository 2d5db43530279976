"""The broker's membership bookkeeping, with an injected clock: groups are read from the realm at most
`membership_max_age` apart, a failed read counts as none, and a user who left a team loses its cache."""

from __future__ import annotations

import asyncio

import pytest
from mlplatform_core.catalog import load_catalog

from hub_config.catalog import DEFAULT_CATALOG
from hub_config.s3_broker import S3CredentialBroker


class STS:
    """The STS boundary: each call issues new keys."""

    def __init__(self):
        self.calls = 0

    def assume_role_with_web_identity(self, **request):
        self.calls += 1
        return {"Credentials": {"AccessKeyId": f"AKIA{self.calls}", "SecretAccessKey": "s", "SessionToken": "t"}}


@pytest.fixture
def broker():
    clock = [1000.0]
    sts = STS()
    b = S3CredentialBroker(load_catalog(DEFAULT_CATALOG, environ={}), sts_client=lambda: sts, clock=lambda: clock[0])
    b.advance = lambda seconds: clock.__setitem__(0, clock[0] + seconds)
    return b


async def test_groups_are_read_again_only_when_older_than_the_bound(broker):
    reads = []

    async def refresh():
        reads.append(broker.clock())

    assert broker.membership_max_age == 60
    await broker.confirm_membership("alice", refresh)
    broker.advance(59)
    await broker.confirm_membership("alice", refresh)
    assert reads == [1000.0]
    broker.advance(1)
    await broker.confirm_membership("alice", refresh)
    await broker.confirm_membership("bob", refresh)  # per user
    assert reads == [1000.0, 1060.0, 1060.0]


async def test_a_bound_of_zero_reads_on_every_request(broker):
    broker.membership_max_age = 0
    reads = []

    async def refresh():
        reads.append(1)

    for _ in range(3):
        await broker.confirm_membership("alice", refresh)
    assert len(reads) == 3


async def test_a_failed_read_counts_as_none(broker):
    async def refused():
        raise RuntimeError("refused")

    with pytest.raises(RuntimeError):
        await broker.confirm_membership("alice", refused)
    reads = []

    async def refresh():
        reads.append(1)

    await broker.confirm_membership("alice", refresh)
    assert reads == [1]


async def test_concurrent_requests_read_once(broker):
    reads = []

    async def refresh():
        reads.append(1)
        await asyncio.sleep(0.01)

    await asyncio.gather(*(broker.confirm_membership("alice", refresh) for _ in range(5)))
    assert reads == [1]


async def test_forget_drops_the_teams_cached_credentials_only(broker):
    async def token():
        return "id-token"

    vision = await broker.credentials("alice", "team-vision", token)
    nlp = await broker.credentials("alice", "team-nlp", token)
    assert await broker.credentials("alice", "team-vision", token) is vision  # cached
    broker.forget("alice", "team-vision")
    assert broker.cached("alice", "team-vision") is None
    assert broker.cached("alice", "team-nlp") is nlp
    again = await broker.credentials("alice", "team-vision", token)
    assert (again.access_key_id, broker.sts_calls) == ("AKIA3", 3)
