"""Fixtures of the integration tests' fault cases: ports where a service is stopped or does not answer."""

from __future__ import annotations

import socket

import pytest

from ..support.governance import governance_database  # noqa: F401 (autouse: spawners made in this process)


@pytest.fixture
def stopped_port():
    """A port nothing listens on (a stopped service)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.fixture
def silent_port():
    """A port that accepts connections (the kernel queues them) and never answers (a hung service)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]
