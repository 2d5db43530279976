"""Team budgets, checked at every allocation point (spawn, deploy, Spark submit).

A team's budget (`teams.<team>.budget` in the catalog) limits GPU-hours, cost, or both, per calendar
month or ISO week (UTC). An allocation's duration is unknown when it starts, so while open it holds
`platform_service.budget_hold_hours` of its GPUs ahead against the budget. `admit` checks

    used so far + held by the team's open allocations + this allocation's hold  <=  budget

and opens the allocation in the ledger in the same transaction, under the team's lock: concurrent
admissions (threads, processes, hub replicas) never together exceed the budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from .usage import UsageLedger, hours_text, lock_team, money_text, period_bounds, period_id, period_label

# Sums of float GPU-hours: an allocation that exactly fills the budget is admitted.
_EPSILON = 1e-9


@dataclass(frozen=True)
class BudgetStatus:
    team: str
    period: str                  # "month" | "week" (a team without a budget: "month")
    period_label: str            # "December 2026" | "week 49 of 2026"
    period_id: str               # "2026-12" | "2026-W49"
    period_start: datetime
    period_end: datetime
    used_gpu_hours: float        # so far in the period, running allocations up to now
    used_cost: float
    held_gpu_hours: float        # what the team's open allocations hold ahead
    held_cost: float
    running: int                 # open GPU allocations
    budget_gpu_hours: float | None
    budget_cost: float | None
    currency: str
    fraction: float | None       # the larger of used/budget over the budget's limits; None: no budget
    warning: bool                # fraction >= platform_service.budget_warning_at
    exceeded: bool               # fraction >= 1: nothing more can be admitted
    line: str                    # "team-vision: 412 of 500 GPU-hours used in December"

    @property
    def has_budget(self) -> bool:
        return self.fraction is not None


@dataclass(frozen=True)
class Admission:
    key: str
    team: str
    change: str                  # the ledger's: "opened" | "changed" (a resize) | "unchanged"
    asked_gpu_hours: float       # what this allocation adds to the team's hold (a resize: the difference)
    asked_cost: float
    # The admin whose override admitted what the budget refused (audit it); None when within the budget.
    override_by: str | None
    status: BudgetStatus | None  # the team's status before this allocation; None when nothing was checked

    @property
    def overridden(self) -> bool:
        return self.override_by is not None


class BudgetExceeded(Exception):
    """An allocation the team's budget cannot take; nothing was recorded. `status` 409 for the HTTP API."""

    status = 409

    def __init__(self, message: str, budget_status: BudgetStatus, asked_gpu_hours: float, asked_cost: float):
        super().__init__(message)
        self.message = message
        self.budget_status = budget_status
        self.asked_gpu_hours = asked_gpu_hours
        self.asked_cost = asked_cost


class _DryRun(Exception):
    def __init__(self, admission: Admission):
        self.admission = admission


class Budgets:
    """Budget status and admission over a ledger (its database, catalog and clock)."""

    def __init__(self, ledger: UsageLedger):
        self.ledger = ledger

    def status(self, team: str, at: datetime | None = None) -> BudgetStatus:
        """The team's budget status in the period holding `at` (now)."""
        self._check_team(team)
        now = self.ledger.moment(at)
        with self.ledger.sessions() as session:
            return self._statuses(session, [team], now)[0]

    def statuses(self, at: datetime | None = None) -> list[BudgetStatus]:
        """Every team's status, in catalog order (for metrics and the admin page)."""
        now = self.ledger.moment(at)
        with self.ledger.sessions() as session:
            return self._statuses(session, list(self.ledger.catalog().teams), now)

    def admit(self, key: str, *, kind: str, team: str, user: str, gpu_type: str | None, gpus: int,
              profile: str | None = None, model: str | None = None, override_by: str | None = None,
              at: datetime | None = None, dry_run: bool = False) -> Admission:
        """Open `key` in the ledger if the team's budget can take its hold; otherwise raise BudgetExceeded
        and record nothing. `override_by` (an admin) admits anyway. 0 GPUs, a shrink or an unchanged
        allocation is admitted without a check. `dry_run`: the same answer, nothing recorded."""
        try:
            return self._admit(key, kind=kind, team=team, user=user, gpu_type=gpu_type, gpus=gpus, profile=profile,
                               model=model, override_by=override_by, at=at, dry_run=dry_run)
        except _DryRun as done:
            return done.admission

    def _admit(self, key: str, *, kind: str, team: str, user: str, gpu_type: str | None, gpus: int,
               profile: str | None, model: str | None, override_by: str | None, at: datetime | None,
               dry_run: bool) -> Admission:
        ledger = self.ledger
        fields = ledger.allocation(kind=kind, team=team, user=user, gpu_type=gpu_type, gpus=gpus,
                                   profile=profile, model=model)
        now = ledger.moment(at)
        catalog = ledger.catalog()
        budget, hold = catalog.teams[team].budget, catalog.platform_service.budget_hold_hours
        with ledger.sessions.begin() as session:
            lock_team(session, team)  # first: SQLite's write lock, PostgreSQL's row lock for the team
            current = ledger.open_interval(session, key)
            old_gpus, old_price = (current.gpus, current.price_per_hour) if current else (0, 0.0)
            asked_hours = (fields["gpus"] - old_gpus) * hold
            asked_cost = (fields["gpus"] * fields["price_per_hour"] - old_gpus * old_price) * hold
            status, overridden = None, None
            if budget and (asked_hours > 0 or asked_cost > 0):
                status = self._statuses(session, [team], now)[0]
                refusals = _refusals(status, asked_hours, asked_cost, fields, hold)
                if refusals and not override_by:
                    raise BudgetExceeded(
                        f"{team}'s budget for {status.period_label} cannot take this allocation: "
                        + "; ".join(refusals) + ". Stop one of the team's running servers, deployments or "
                        "Spark jobs, or ask a platform admin to grant an override.",
                        status, asked_hours, asked_cost)
                overridden = override_by if refusals else None
            change = ledger.open_in(session, key, fields, now)
            admission = Admission(key, team, change, max(asked_hours, 0.0), max(asked_cost, 0.0), overridden, status)
            if dry_run:
                raise _DryRun(admission)  # leaves the transaction rolled back
        return admission

    def release(self, key: str, at: datetime | None = None) -> bool:
        """The allocation ended: close its interval (its hold goes with it). False when none was open."""
        return self.ledger.close(key, at)

    # ---------------------------------------------------------------------------------------------

    def _check_team(self, team: str) -> None:
        teams = self.ledger.catalog().teams
        if team not in teams:
            raise ValueError(f"team {team!r} is not a team of the catalog; allowed: {', '.join(teams)}")

    def _statuses(self, session, teams: list[str], now: float) -> list[BudgetStatus]:
        catalog = self.ledger.catalog()
        settings = catalog.platform_service
        at = datetime.fromtimestamp(now, UTC)
        held = self.ledger.held_in(session)
        used: dict[str, dict[str, dict]] = {}  # period → team → row: one query per period, not per team
        out = []
        for team in teams:
            budget = catalog.teams[team].budget
            period = budget.period if budget else "month"
            start, end = period_bounds(period, at)
            if period not in used:
                rows = self.ledger.usage_in(session, start, end, by=("team",), now=now,
                                            team=team if len(teams) == 1 else None)
                used[period] = {r["team"]: r for r in rows}
            row = used[period].get(team, {"gpu_hours": 0.0, "cost": 0.0})
            gpus, price, running = held.get(team, (0, 0.0, 0))
            limits = [(row["gpu_hours"], budget.gpu_hours), (row["cost"], budget.cost)] if budget else []
            fractions = [u / b for u, b in limits if b is not None]
            fraction = max(fractions) if fractions else None
            out.append(BudgetStatus(
                team=team, period=period, period_label=period_label(period, start), period_id=period_id(period, start),
                period_start=start, period_end=end, used_gpu_hours=row["gpu_hours"], used_cost=row["cost"],
                held_gpu_hours=float(gpus * settings.budget_hold_hours), held_cost=price * settings.budget_hold_hours,
                running=running, budget_gpu_hours=budget.gpu_hours if budget else None,
                budget_cost=budget.cost if budget else None, currency=settings.currency, fraction=fraction,
                warning=fraction is not None and fraction >= settings.budget_warning_at - _EPSILON,
                exceeded=fraction is not None and fraction >= 1 - _EPSILON,
                line=_line(team, period, start, row["gpu_hours"], row["cost"], budget, settings.currency)))
        return out


def _line(team: str, period: str, start: datetime, hours: float, cost: float, budget, currency: str) -> str:
    """"team-vision: 412 of 500 GPU-hours and $1,234 of $2,000 used in December"."""
    when = start.strftime("%B") if period == "month" else f"week {start.isocalendar()[1]}"
    if budget is None:
        return f"{team}: no budget; {hours_text(hours)} GPU-hours ({money_text(cost, currency)}) used in {when}"
    parts = []
    if budget.gpu_hours is not None:
        parts.append(f"{hours_text(hours)} of {hours_text(budget.gpu_hours)} GPU-hours")
    if budget.cost is not None:
        parts.append(f"{money_text(cost, currency)} of {money_text(budget.cost, currency)}")
    return f"{team}: {' and '.join(parts)} used in {when}"


def _refusals(status: BudgetStatus, asked_hours: float, asked_cost: float, fields: dict, hold: float) -> list[str]:
    """Each limit this allocation adds to and would overrun, with the numbers."""
    gpus = fields["gpus"]
    what = f"{gpus} {fields['gpu_type']} GPU{'s' if gpus != 1 else ''} held {hours_text(hold)} h ahead"
    running = f"{status.running} running allocation{'s' if status.running != 1 else ''}"
    out = []
    if status.budget_gpu_hours is not None and asked_hours > 0:
        total = status.used_gpu_hours + status.held_gpu_hours + asked_hours
        if total > status.budget_gpu_hours + _EPSILON:
            out.append(f"{hours_text(status.used_gpu_hours)} GPU-hours used + {hours_text(status.held_gpu_hours)} "
                       f"held by {running} + {hours_text(asked_hours)} asked ({what}) = {hours_text(total)}, "
                       f"more than the budget of {hours_text(status.budget_gpu_hours)} GPU-hours")
    if status.budget_cost is not None and asked_cost > 0:
        total = status.used_cost + status.held_cost + asked_cost
        if total > status.budget_cost + _EPSILON:
            m = lambda v: money_text(v, status.currency)  # noqa: E731
            out.append(f"{m(status.used_cost)} used + {m(status.held_cost)} held by {running} + {m(asked_cost)} "
                       f"asked ({what}) = {m(total)}, more than the budget of {m(status.budget_cost)}")
    return out
