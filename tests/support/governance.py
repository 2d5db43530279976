"""The platform service's database for spawners made in the test process (unit and Kubernetes tests): a
fresh SQLite file per test, through the variable the hub's Governance reads by default."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def governance_database(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'platform.sqlite'}"
    monkeypatch.setenv("MLPLATFORM_SERVICE_DATABASE_URL", url)
    return url
