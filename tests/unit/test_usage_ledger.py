"""The usage ledger on a real SQLite database with an injected clock: exact intervals, clipped to windows."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import yaml
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from hub_config.catalog import DEFAULT_CATALOG
from mlplatform_core.catalog import parse_catalog
from mlplatform_service.database import connect
from mlplatform_service.usage import (Allocation, Interval, UsageLedger, hours_text, money_text, period_bounds,
                                      period_id, period_label)

BASE = yaml.safe_load(DEFAULT_CATALOG.read_text())
A100, T4 = 2.5, 0.5  # prices per GPU-hour in the test catalog


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def catalog_with(budgets: dict | None = None, a100: float = A100, **platform_service):
    """The default catalog with GPU prices, `budgets` ({team: budget}) and platform_service settings."""
    data = copy.deepcopy(BASE)
    data["gpu_types"]["a100"]["price_per_hour"] = a100
    data["gpu_types"]["t4"]["price_per_hour"] = T4
    for team in data["teams"]:  # only the budgets a test names, whatever the example catalog sets
        data["teams"][team].pop("budget", None)
    for team, budget in (budgets or {}).items():
        data["teams"][team]["budget"] = budget
    data["platform_service"] = platform_service
    return parse_catalog(data, "platform.yaml", environ={})


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


class Setup:
    """A ledger on SQLite in tmp_path whose catalog and clock a test may change."""

    def __init__(self, url: str, now: datetime, catalog=None):
        self.url = url
        self.catalog = catalog or catalog_with()
        self.clock = Clock(now)
        self.sessions = connect(url)
        self.ledger = UsageLedger(self.sessions, lambda: self.catalog, clock=self.clock)

    def intervals(self) -> list[tuple]:
        with self.sessions() as s:
            return [(i.key, i.gpus, i.gpu_type, i.started_at, i.ended_at)
                    for i in s.scalars(select(Interval).order_by(Interval.id))]


@pytest.fixture
def setup(tmp_path):
    return Setup(f"sqlite:///{tmp_path}/platform.sqlite", utc(2026, 12, 7, 10))


def server(ledger, user="alice", gpus=2, gpu_type="a100", team="team-vision", **kw):
    return ledger.open(f"server:{user}/", kind="server", team=team, user=user, gpu_type=gpu_type, gpus=gpus,
                       profile=f"gpu-{gpu_type}" if gpus else "cpu", **kw)


DECEMBER = (utc(2026, 12, 1), utc(2027, 1, 1))


def test_a_closed_interval_counts_its_gpu_hours_and_cost(setup):
    ledger, clock = setup.ledger, setup.clock
    assert server(ledger) == "opened"
    clock.advance(hours=3)
    assert ledger.close("server:alice/") is True
    clock.advance(hours=5)  # closed: time passing adds nothing
    assert ledger.usage(*DECEMBER) == [{"team": "team-vision", "gpu_hours": 6.0, "cost": 15.0}]
    assert ledger.close("server:alice/") is False  # nothing open: a no-op
    assert ledger.open_allocations() == []


def test_an_open_interval_counts_up_to_now(setup):
    ledger, clock = setup.ledger, setup.clock
    server(ledger, gpus=1, gpu_type="t4")
    clock.advance(minutes=90)
    assert ledger.usage(*DECEMBER) == [{"team": "team-vision", "gpu_hours": 1.5, "cost": 0.75}]
    assert ledger.open_allocations() == [
        Allocation("server:alice/", "server", "team-vision", "alice", "gpu-t4", None, "t4", 1, T4,
                   utc(2026, 12, 7, 10))]


def test_opening_the_same_allocation_again_changes_nothing(setup):
    ledger, clock = setup.ledger, setup.clock
    server(ledger)
    clock.advance(hours=1)
    assert server(ledger) == "unchanged"
    assert setup.intervals() == [("server:alice/", 2, "a100", utc(2026, 12, 7, 10).timestamp(), None)]


def test_a_resize_ends_the_interval_and_starts_another(setup):
    ledger, clock = setup.ledger, setup.clock
    server(ledger, gpus=1)
    clock.advance(hours=2)
    assert server(ledger, gpus=4) == "changed"
    clock.advance(hours=1)
    ledger.close("server:alice/")
    t = utc(2026, 12, 7, 10).timestamp()
    assert setup.intervals() == [("server:alice/", 1, "a100", t, t + 7200),
                                 ("server:alice/", 4, "a100", t + 7200, t + 10800)]
    assert ledger.usage(*DECEMBER, by=("user",)) == [{"user": "alice", "gpu_hours": 6.0, "cost": 15.0}]


def test_an_interval_across_a_month_boundary_counts_partially_in_each(setup):
    ledger, clock = setup.ledger, setup.clock
    clock.now = utc(2026, 11, 30, 22)
    server(ledger)  # 2 × A100
    clock.now = utc(2026, 12, 1, 1)
    november = (utc(2026, 11, 1), utc(2026, 12, 1))
    assert ledger.usage(*november) == [{"team": "team-vision", "gpu_hours": 4.0, "cost": 10.0}]
    assert ledger.usage(*DECEMBER) == [{"team": "team-vision", "gpu_hours": 2.0, "cost": 5.0}]  # open: up to now
    clock.now = utc(2026, 12, 1, 3)
    ledger.close("server:alice/")
    clock.now = utc(2026, 12, 20)
    assert ledger.usage(*november) == [{"team": "team-vision", "gpu_hours": 4.0, "cost": 10.0}]
    assert ledger.usage(*DECEMBER) == [{"team": "team-vision", "gpu_hours": 6.0, "cost": 15.0}]
    assert ledger.usage(utc(2026, 11, 30, 23), utc(2026, 12, 1, 0, 30)) == [
        {"team": "team-vision", "gpu_hours": 3.0, "cost": 7.5}]


def test_usage_groups_filters_and_leaves_cpu_only_allocations_out(setup):
    ledger, clock = setup.ledger, setup.clock
    server(ledger, "alice", gpus=2)
    server(ledger, "bob", gpus=1, gpu_type="t4")
    server(ledger, "carol", gpus=0, gpu_type=None)
    server(ledger, "dave", gpus=1, team="team-nlp")
    ledger.open("model:team-vision/iris", kind="model", team="team-vision", user="alice", gpu_type="t4", gpus=2,
                model="iris")
    clock.advance(hours=2)
    assert ledger.usage(*DECEMBER) == [{"team": "team-nlp", "gpu_hours": 2.0, "cost": 5.0},
                                       {"team": "team-vision", "gpu_hours": 10.0, "cost": 13.0}]
    assert ledger.usage(*DECEMBER, by=("kind", "model"), team="team-vision") == [
        {"kind": "model", "model": "iris", "gpu_hours": 4.0, "cost": 2.0},
        {"kind": "server", "model": None, "gpu_hours": 6.0, "cost": 11.0}]
    assert ledger.usage(*DECEMBER, by=("user", "gpu_type"), user="alice") == [
        {"user": "alice", "gpu_type": "a100", "gpu_hours": 4.0, "cost": 10.0},
        {"user": "alice", "gpu_type": "t4", "gpu_hours": 4.0, "cost": 2.0}]
    assert ledger.usage(utc(2027, 1, 1), utc(2027, 2, 1)) == []


def test_a_price_change_applies_from_then_on(setup):
    ledger, clock = setup.ledger, setup.clock
    server(ledger, gpus=1)
    clock.advance(hours=1)
    ledger.close("server:alice/")
    setup.catalog = catalog_with(a100=4.0)  # the catalog file changed
    server(ledger, gpus=1)
    clock.advance(hours=1)
    assert ledger.usage(*DECEMBER) == [{"team": "team-vision", "gpu_hours": 2.0, "cost": 6.5}]


def test_series_per_day_and_week(setup):
    ledger, clock = setup.ledger, setup.clock
    clock.now = utc(2026, 12, 6, 20)  # a Sunday
    server(ledger, gpus=1, gpu_type="t4")
    clock.now = utc(2026, 12, 8, 2)
    ledger.close("server:alice/")
    assert ledger.series(utc(2026, 12, 6, 12), utc(2026, 12, 9)) == [
        {"start": utc(2026, 12, 6, 12), "team": "team-vision", "gpu_hours": 4.0, "cost": 2.0},
        {"start": utc(2026, 12, 7), "team": "team-vision", "gpu_hours": 24.0, "cost": 12.0},
        {"start": utc(2026, 12, 8), "team": "team-vision", "gpu_hours": 2.0, "cost": 1.0}]
    assert ledger.series(utc(2026, 12, 1), utc(2026, 12, 15), step="week", by=("user",)) == [
        {"start": utc(2026, 12, 1), "user": "alice", "gpu_hours": 4.0, "cost": 2.0},
        {"start": utc(2026, 12, 7), "user": "alice", "gpu_hours": 26.0, "cost": 13.0}]
    with pytest.raises(ValueError, match=r"step 'month' is not allowed; allowed: day, week"):
        ledger.series(*DECEMBER, step="month")


def test_the_weekly_digest_attributes_cost_per_team_user_profile_and_model(setup):
    ledger, clock = setup.ledger, setup.clock
    clock.now = utc(2026, 11, 29, 23)  # Sunday before week 49: one hour falls outside the week
    server(ledger, "alice", gpus=2)
    clock.now = utc(2026, 11, 30, 9)
    ledger.open("model:team-vision/iris", kind="model", team="team-vision", user="bob", gpu_type="t4", gpus=1,
                model="iris")
    server(ledger, "dave", gpus=1, gpu_type="t4", team="team-nlp")
    clock.now = utc(2026, 11, 30, 11, 30)
    ledger.close("server:alice/")
    ledger.close("server:dave/")
    clock.now = utc(2026, 12, 9)  # the model still runs: counted up to the week's end
    csv_text, markdown = ledger.digest(utc(2026, 12, 2, 15))  # any moment of the week
    assert csv_text == (
        "week,team,user,kind,profile,model,gpu_type,gpu_hours,cost,currency\n"
        "2026-W49,team-nlp,dave,server,gpu-t4,,t4,2.500,1.25,USD\n"
        "2026-W49,team-vision,alice,server,gpu-a100,,a100,23.000,57.50,USD\n"
        "2026-W49,team-vision,bob,model,,iris,t4,159.000,79.50,USD\n")
    assert markdown == """# GPU usage, week 49 of 2026 (Mon 30 Nov – Sun 6 Dec 2026, UTC)

## team-nlp: 2.5 GPU-hours, $1.25

| user | kind | profile | model | GPU type | GPU-hours | cost |
|---|---|---|---|---|---:|---:|
| dave | server | gpu-t4 |  | t4 | 2.5 | $1.25 |

## team-vision: 182 GPU-hours, $137

| user | kind | profile | model | GPU type | GPU-hours | cost |
|---|---|---|---|---|---:|---:|
| bob | model |  | iris | t4 | 159 | $79.50 |
| alice | server | gpu-a100 |  | a100 | 23 | $57.50 |
"""
    nlp_csv, nlp_markdown = ledger.digest(utc(2026, 12, 2, 15), teams=["team-nlp"])  # a member's: their teams' rows
    assert nlp_csv.splitlines()[1:] == ["2026-W49,team-nlp,dave,server,gpu-t4,,t4,2.500,1.25,USD"]
    assert "team-vision" not in nlp_markdown and "## team-nlp: 2.5 GPU-hours, $1.25" in nlp_markdown


def test_an_empty_weeks_digest_says_so(setup):
    assert setup.ledger.digest(utc(2026, 12, 7)) == (
        "week,team,user,kind,profile,model,gpu_type,gpu_hours,cost,currency\n",
        "# GPU usage, week 50 of 2026 (Mon 7 Dec – Sun 13 Dec 2026, UTC)\n\nNo GPU was allocated this week.\n")


def test_reconcile_makes_the_open_intervals_what_runs(setup):
    ledger, clock = setup.ledger, setup.clock
    server(ledger, "alice", gpus=2)           # still runs
    server(ledger, "bob", gpus=1)             # vanished
    server(ledger, "carol", gpus=1)           # resized outside the widgets
    clock.advance(minutes=30)
    server(ledger, "erin", gpus=1)            # just admitted, its pod not seen yet: within the grace
    clock.advance(seconds=30)
    observed = {
        "server:alice/": dict(kind="server", team="team-vision", user="alice", gpu_type="a100", gpus=2,
                              profile="gpu-a100"),
        "server:carol/": dict(kind="server", team="team-vision", user="carol", gpu_type="a100", gpus=2,
                              profile="gpu-a100"),
        "spark:team-nlp/job-1": dict(kind="spark", team="team-nlp", user="dave", gpu_type="t4", gpus=2),
        "spark:team-x/job-2": dict(kind="spark", team="team-x", user="dave", gpu_type="t4", gpus=2),
    }
    assert ledger.reconcile(observed) == {"opened": ["spark:team-nlp/job-1"], "changed": ["server:carol/"],
                                          "closed": ["server:bob/"], "refused": ["spark:team-x/job-2"]}
    assert [(a.key, a.gpus) for a in ledger.open_allocations()] == [
        ("server:alice/", 2), ("server:carol/", 2), ("server:erin/", 1), ("spark:team-nlp/job-1", 2)]
    assert [(a.key, a.started_at) for a in ledger.open_allocations(team="team-nlp")] == [
        ("spark:team-nlp/job-1", utc(2026, 12, 7, 10, 30, 30))]
    clock.advance(minutes=5)
    assert ledger.reconcile(observed)["closed"] == ["server:erin/"]  # past the grace
    assert ledger.reconcile(observed) == {"opened": [], "changed": [], "closed": [], "refused": ["spark:team-x/job-2"]}


def test_reconcile_of_gpus_only_leaves_unseen_cpu_servers_open(setup):
    ledger, clock = setup.ledger, setup.clock
    server(ledger, "alice", gpus=0)   # a CPU server: no GPU pod the observer could see
    server(ledger, "bob", gpus=1)     # a GPU server whose pod is gone
    clock.advance(minutes=5)
    assert ledger.reconcile({}, gpus_only=True)["closed"] == ["server:bob/"]
    assert [(a.key, a.gpus) for a in ledger.open_allocations()] == [("server:alice/", 0)]
    assert ledger.reconcile({})["closed"] == ["server:alice/"]  # without it: everything unseen ends


def test_allocations_the_catalog_does_not_allow_are_refused_naming_the_field(setup):
    ledger = setup.ledger
    with pytest.raises(ValueError) as e:
        ledger.open("x", kind="notebook", team="team-x", user="", gpu_type="h100", gpus=1)
    assert str(e.value) == ("kind 'notebook' is not allowed; allowed: server, model, spark; "
                            "team 'team-x' is not a team of the catalog; allowed: team-vision, team-nlp; "
                            "user is empty; name the user the allocation is for; "
                            "gpu_type 'h100' is not a GPU type of the catalog; allowed: a100, t4")
    with pytest.raises(ValueError, match=r"^gpus -1 is not allowed; allowed: a whole number, 0 or more$"):
        server(ledger, gpus=-1)
    with pytest.raises(ValueError, match=r"^at datetime.datetime\(2026, 12, 7, 0, 0\) is not allowed; allowed: "
                                         r"a timezone-aware datetime"):
        server(ledger, at=datetime(2026, 12, 7))
    with pytest.raises(ValueError, match=r"^by \['team', 'colour'\] is not allowed; allowed: one or more of "
                                         r"team, user, kind, profile, model, gpu_type, key$"):
        ledger.usage(*DECEMBER, by=("team", "colour"))
    assert setup.intervals() == []


def test_only_one_interval_per_key_is_ever_open(setup):
    server(setup.ledger)
    with pytest.raises(IntegrityError), setup.sessions.begin() as s:
        s.add(Interval(key="server:alice/", kind="server", team="team-vision", user="alice", gpus=1,
                       gpu_type="a100", price_per_hour=A100, started_at=0.0))
        s.flush()
    with setup.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Interval)) == 1


def test_periods_are_calendar_months_and_iso_weeks_in_utc():
    assert period_bounds("month", utc(2026, 12, 31, 23, 59)) == (utc(2026, 12, 1), utc(2027, 1, 1))
    assert period_bounds("month", utc(2026, 2, 1)) == (utc(2026, 2, 1), utc(2026, 3, 1))
    assert period_bounds("week", utc(2027, 1, 1, 12)) == (utc(2026, 12, 28), utc(2027, 1, 4))  # a Friday
    assert period_bounds("week", utc(2026, 12, 7)) == (utc(2026, 12, 7), utc(2026, 12, 14))  # a Monday
    # 01:00 in Berlin on the 1st is still November in UTC.
    berlin = datetime(2026, 12, 1, 0, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    assert period_bounds("month", berlin) == (utc(2026, 11, 1), utc(2026, 12, 1))
    assert period_label("month", utc(2026, 12, 1)) == "December 2026"
    assert period_label("week", utc(2026, 12, 28)) == "week 53 of 2026"
    assert period_id("week", utc(2026, 12, 28)) == "2026-W53"
    assert period_id("month", utc(2026, 2, 1)) == "2026-02"
    with pytest.raises(ValueError, match=r"period 'year' is not allowed; allowed: month, week"):
        period_bounds("year", utc(2026, 1, 1))


def test_numbers_are_whole_or_carry_one_decimal_and_money_its_cents():
    assert [hours_text(v) for v in (412, 411.96, 12.34, 1234.0, 0)] == ["412", "412", "12.3", "1,234", "0"]
    assert [money_text(v, "USD") for v in (1234, 12.5, 0.004)] == ["$1,234", "$12.50", "$0"]
    assert money_text(2000, "EUR") == "€2,000"
    assert money_text(99.9, "CHF") == "99.90 CHF"
