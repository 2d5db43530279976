"""Budgets on a real PostgreSQL server: concurrent admissions from OS processes and threads never together
exceed the budget (the team's row lock), and usage clips intervals in SQL as on SQLite."""

from __future__ import annotations

from datetime import UTC, datetime

from mlplatform_service.budgets import Budgets
from mlplatform_service.database import connect
from mlplatform_service.usage import UsageLedger

from ..support.postgres import postgres_server, postgres_url  # noqa: F401 (fixtures)
from ..unit.test_budgets import race_processes, race_threads
from ..unit.test_usage_ledger import Setup, catalog_with, server, utc


def test_concurrent_processes_never_together_exceed_the_budget(postgres_url):  # noqa: F811
    connect(postgres_url)  # the tables, before the racers
    assert race_processes(postgres_url, n=6) == ["admitted"] + ["refused"] * 5
    ledger = UsageLedger(connect(postgres_url), catalog_with)
    assert [a.gpus for a in ledger.open_allocations()] == [2]


def test_concurrent_threads_never_together_exceed_the_budget(postgres_url):  # noqa: F811
    assert race_threads(postgres_url) == (["admitted"] * 3 + ["refused"] * 5, 6)


def test_usage_across_a_month_boundary_and_the_status_line(postgres_url):  # noqa: F811
    s = Setup(postgres_url, utc(2026, 12, 1, 3), catalog_with({"team-vision": {"gpu_hours": 500, "cost": 2000}}))
    server(s.ledger, "alice", gpus=2, at=utc(2026, 11, 30, 22))
    server(s.ledger, "bob", gpus=1, gpu_type="t4", at=utc(2026, 12, 1, 1))
    s.ledger.close("server:alice/", at=utc(2026, 12, 1, 2))
    assert s.ledger.usage(utc(2026, 11, 1), utc(2026, 12, 1)) == [{"team": "team-vision", "gpu_hours": 4.0,
                                                                   "cost": 10.0}]
    assert s.ledger.usage(utc(2026, 12, 1), utc(2027, 1, 1), by=("user", "gpu_type")) == [
        {"user": "alice", "gpu_type": "a100", "gpu_hours": 4.0, "cost": 10.0},
        {"user": "bob", "gpu_type": "t4", "gpu_hours": 2.0, "cost": 1.0}]
    status = Budgets(s.ledger).status("team-vision", at=datetime(2026, 12, 1, 3, tzinfo=UTC))
    assert status.line == "team-vision: 6 of 500 GPU-hours and $11 of $2,000 used in December"
    assert (status.held_gpu_hours, status.held_cost, status.running) == (1.0, 0.5, 1)
