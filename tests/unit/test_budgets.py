"""Team budgets on a real SQLite database: status lines, admission with holds, overrides, and races between
threads and between OS processes."""

from __future__ import annotations

import multiprocessing
import threading
from datetime import UTC, datetime

import pytest

from mlplatform_service.budgets import Budgets, BudgetExceeded
from mlplatform_service.database import connect
from mlplatform_service.usage import UsageLedger

from .test_usage_ledger import Setup, catalog_with, server, utc

NOW = utc(2026, 12, 7, 10)


def budgeted(tmp_path, **budget) -> tuple[Setup, Budgets]:
    s = Setup(f"sqlite:///{tmp_path}/platform.sqlite", NOW, catalog_with({"team-vision": budget}))
    return s, Budgets(s.ledger)


def used_412_gpu_hours(s: Setup) -> None:
    """4 A100 for 103 hours this month: 412 GPU-hours, $1,030."""
    server(s.ledger, "alice", gpus=4, at=utc(2026, 12, 1))
    s.ledger.close("server:alice/", at=utc(2026, 12, 5, 7))


def test_status_line_with_both_limits(tmp_path):
    s, budgets = budgeted(tmp_path, gpu_hours=500, cost=2000)
    used_412_gpu_hours(s)
    server(s.ledger, "bob", gpus=1, gpu_type="t4")
    status = budgets.status("team-vision")
    assert status.line == "team-vision: 412 of 500 GPU-hours and $1,030 of $2,000 used in December"
    assert (status.period, status.period_label, status.period_id) == ("month", "December 2026", "2026-12")
    assert (status.period_start, status.period_end) == (utc(2026, 12, 1), utc(2027, 1, 1))
    assert (status.used_gpu_hours, status.used_cost) == (412.0, 1030.0)
    assert (status.held_gpu_hours, status.held_cost, status.running) == (1.0, 0.5, 1)  # bob's T4, 1 h ahead
    assert (status.budget_gpu_hours, status.budget_cost, status.currency) == (500, 2000, "USD")
    assert status.fraction == pytest.approx(412 / 500)
    assert (status.warning, status.exceeded, status.has_budget) == (True, False, True)


def test_status_lines_of_each_kind_of_budget(tmp_path):
    s, budgets = budgeted(tmp_path, gpu_hours=20)
    server(s.ledger, gpus=1, at=utc(2026, 12, 7, 8))
    s.clock.advance(minutes=30)  # 2.5 hours
    assert budgets.status("team-vision").line == "team-vision: 2.5 of 20 GPU-hours used in December"
    s.catalog = catalog_with({"team-vision": {"cost": 1500.5, "period": "week"}}, currency="EUR")
    status = budgets.status("team-vision")
    assert status.line == "team-vision: €6.25 of €1,500.50 used in week 50"
    assert (status.period_label, status.period_id, status.currency) == ("week 50 of 2026", "2026-W50", "EUR")
    nlp = budgets.status("team-nlp")
    assert nlp.line == "team-nlp: no budget; 0 GPU-hours (€0) used in December"
    assert (nlp.fraction, nlp.warning, nlp.exceeded, nlp.has_budget) == (None, False, False, False)
    with pytest.raises(ValueError, match=r"team 'team-x' is not a team of the catalog; allowed: team-vision, team-nlp"):
        budgets.status("team-x")


def test_warning_and_exceeded_follow_the_fraction_used(tmp_path):
    s, budgets = budgeted(tmp_path, gpu_hours=10)
    s.catalog = catalog_with({"team-vision": {"gpu_hours": 10}}, budget_warning_at=0.5)
    server(s.ledger, gpus=1, at=utc(2026, 12, 7, 5, 1))
    assert [budgets.status("team-vision").warning, budgets.status("team-vision").exceeded] == [False, False]
    s.clock.advance(minutes=1)  # 5 of 10 GPU-hours
    assert [budgets.status("team-vision").warning, budgets.status("team-vision").exceeded] == [True, False]
    s.clock.advance(hours=5)  # 10 GPU-hours: used up
    assert (budgets.status("team-vision").fraction, budgets.status("team-vision").exceeded) == (1.0, True)


def test_admit_opens_the_allocation_within_the_budget(tmp_path):
    s, budgets = budgeted(tmp_path, gpu_hours=10)
    admission = budgets.admit("server:alice/", kind="server", team="team-vision", user="alice", gpu_type="a100",
                              gpus=2, profile="gpu-a100")
    assert (admission.key, admission.team, admission.change, admission.asked_gpu_hours, admission.asked_cost,
            admission.override_by) == ("server:alice/", "team-vision", "opened", 2.0, 5.0, None)
    # The status it was checked against: before this allocation.
    assert (admission.status.line, admission.status.held_gpu_hours) == ("team-vision: 0 of 10 GPU-hours used in "
                                                                        "December", 0.0)
    assert [(a.key, a.gpus) for a in s.ledger.open_allocations()] == [("server:alice/", 2)]
    assert budgets.release("server:alice/") is True
    assert budgets.release("server:alice/") is False
    assert s.ledger.open_allocations() == []


def test_an_allocation_past_the_budget_is_refused_with_the_numbers_and_nothing_is_written(tmp_path):
    s, budgets = budgeted(tmp_path, gpu_hours=500)
    used_412_gpu_hours(s)
    server(s.ledger, "bob", gpus=4)  # holds 4 GPU-hours ahead
    before = s.intervals()
    with pytest.raises(BudgetExceeded) as e:
        budgets.admit("model:team-vision/iris", kind="model", team="team-vision", user="carol", gpu_type="a100",
                      gpus=85, model="iris")
    assert str(e.value) == (
        "team-vision's budget for December 2026 cannot take this allocation: 412 GPU-hours used + 4 held by "
        "1 running allocation + 85 asked (85 a100 GPUs held 1 h ahead) = 501, more than the budget of 500 "
        "GPU-hours. Stop one of the team's running servers, deployments or Spark jobs, or ask a platform admin "
        "to grant an override.")
    assert (e.value.status, e.value.asked_gpu_hours, e.value.budget_status.used_gpu_hours) == (409, 85.0, 412.0)
    assert s.intervals() == before
    # One GPU less fits exactly.
    assert budgets.admit("model:team-vision/iris", kind="model", team="team-vision", user="carol",
                         gpu_type="a100", gpus=84, model="iris").change == "opened"


def test_a_cost_budget_prices_the_hold(tmp_path):
    s, budgets = budgeted(tmp_path, cost=10, period="week")
    budgets.admit("server:alice/", kind="server", team="team-vision", user="alice", gpu_type="t4", gpus=4)  # $2/h
    s.clock.advance(hours=2)  # $4 used, $2 held
    with pytest.raises(BudgetExceeded) as e:
        budgets.admit("server:bob/", kind="server", team="team-vision", user="bob", gpu_type="a100", gpus=2)
    assert str(e.value).startswith(
        "team-vision's budget for week 50 of 2026 cannot take this allocation: $4 used + $2 held by 1 running "
        "allocation + $5 asked (2 a100 GPUs held 1 h ahead) = $11, more than the budget of $10. ")
    assert budgets.admit("server:bob/", kind="server", team="team-vision", user="bob", gpu_type="t4",
                         gpus=8).asked_cost == 4.0  # $4 + $2 + $4 = $10: fits


def test_an_admins_override_admits_and_says_so(tmp_path):
    s, budgets = budgeted(tmp_path, gpu_hours=1)
    admission = budgets.admit("server:alice/", kind="server", team="team-vision", user="alice", gpu_type="a100",
                              gpus=4, override_by="root")
    assert (admission.change, admission.overridden, admission.override_by) == ("opened", True, "root")
    assert admission.status.line == "team-vision: 0 of 1 GPU-hours used in December"
    # Within the budget, an override is not one.
    budgets.release("server:alice/")
    admission = budgets.admit("server:bob/", kind="server", team="team-vision", user="bob", gpu_type="a100",
                              gpus=1, override_by="root")
    assert (admission.overridden, admission.override_by) == (False, None)


def test_cpu_only_allocations_and_teams_without_a_budget_are_admitted_unchecked(tmp_path):
    s, budgets = budgeted(tmp_path, gpu_hours=1)
    server(s.ledger, "alice", gpus=4)  # recorded outside admission (reconcile): the budget is overrun
    cpu = budgets.admit("server:bob/", kind="server", team="team-vision", user="bob", gpu_type=None, gpus=0)
    assert (cpu.change, cpu.asked_gpu_hours, cpu.status) == ("opened", 0.0, None)
    nlp = budgets.admit("server:dave/", kind="server", team="team-nlp", user="dave", gpu_type="a100", gpus=4)
    assert (nlp.change, nlp.asked_gpu_hours, nlp.status) == ("opened", 4.0, None)


def test_a_resize_counts_only_the_difference(tmp_path):
    s, budgets = budgeted(tmp_path, gpu_hours=4)
    def resize(gpus):
        return budgets.admit("server:alice/", kind="server", team="team-vision", user="alice", gpu_type="a100",
                             gpus=gpus)
    assert (resize(2).change, resize(2).change) == ("opened", "unchanged")
    grown = resize(3)  # 0 used + 2 held + 1 asked
    assert (grown.change, grown.asked_gpu_hours) == ("changed", 1.0)
    with pytest.raises(BudgetExceeded, match=r"0 GPU-hours used \+ 3 held by 1 running allocation \+ 2 asked"):
        resize(5)
    assert (resize(1).change, resize(1).asked_gpu_hours) == ("changed", 0.0)  # a shrink is not checked
    assert [(a.key, a.gpus) for a in s.ledger.open_allocations()] == [("server:alice/", 1)]


def test_usage_of_last_month_does_not_count_against_this_month(tmp_path):
    s, budgets = budgeted(tmp_path, gpu_hours=2)
    server(s.ledger, gpus=2, at=utc(2026, 11, 30, 23))
    s.clock.now = utc(2026, 12, 1, 0, 30)
    s.ledger.close("server:alice/")
    status = budgets.status("team-vision")
    assert (status.used_gpu_hours, status.line) == (1.0, "team-vision: 1 of 2 GPU-hours used in December")
    budgets.admit("server:bob/", kind="server", team="team-vision", user="bob", gpu_type="a100", gpus=1)


# -- races ----------------------------------------------------------------------------------------------

def race_threads(url: str, n: int = 8) -> tuple[list[str], int]:
    """`n` threads admit 2 A100 each at once for team-vision (budget 6 GPU-hours, 1 h hold): their results and
    the GPUs open afterwards."""
    s = Setup(url, NOW, catalog_with({"team-vision": {"gpu_hours": 6}}))
    budgets, start, results = Budgets(s.ledger), threading.Barrier(n), []

    def admit(i):
        start.wait()
        results.append(_admit(budgets, i))

    threads = [threading.Thread(target=admit, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(results), sum(a.gpus for a in s.ledger.open_allocations())


def test_concurrent_threads_never_together_exceed_the_budget(tmp_path):
    assert race_threads(f"sqlite:///{tmp_path}/platform.sqlite") == (["admitted"] * 3 + ["refused"] * 5, 6)


def _admit(budgets: Budgets, i: int) -> str:
    try:
        budgets.admit(f"server:user{i}/", kind="server", team="team-vision", user=f"user{i}", gpu_type="a100", gpus=2)
        return "admitted"
    except BudgetExceeded:
        return "refused"


def _admit_in_process(url: str, i: int, start, results) -> None:
    """In a process of its own: its own engine and connections, as another hub replica would have."""
    catalog = catalog_with({"team-vision": {"gpu_hours": 2}}, budget_hold_hours=1)
    budgets = Budgets(UsageLedger(connect(url), lambda: catalog, clock=lambda: datetime(2026, 12, 7, tzinfo=UTC)))
    start.wait()
    results.put(_admit(budgets, i))


def race_processes(url: str, n: int = 4) -> list[str]:
    """`n` OS processes admit 2 A100 each at once for team-vision (budget 2 GPU-hours, 1 h hold): their results."""
    context = multiprocessing.get_context("spawn")  # no state shared with this process
    start, results = context.Barrier(n), context.Queue()
    processes = [context.Process(target=_admit_in_process, args=(url, i, start, results)) for i in range(n)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(120)
    assert [p.exitcode for p in processes] == [0] * n
    return sorted(results.get(timeout=5) for _ in range(n))


def test_concurrent_processes_never_together_exceed_the_budget_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path}/platform.sqlite"
    connect(url)  # the tables, before the racers
    assert race_processes(url) == ["admitted", "refused", "refused", "refused"]
    ledger = UsageLedger(connect(url), catalog_with)
    assert [a.gpus for a in ledger.open_allocations()] == [2]
