"""The usage ledger: exact allocation intervals of GPUs (servers, served models, Spark jobs), not samples.

An allocation is identified by its key ("server:alice/", "model:team-vision/iris",
"spark:team-vision/job-1"). While it runs, the ledger holds one open interval for it (enforced by a
partial unique index); a resize ends that interval and starts another, so every interval has one
GPU count and one price. Usage over any window is the sum of the intervals clipped to the window,
open ones counted up to now: an interval spanning a month's end counts partially in each month.

Every write of a team's intervals holds `lock_team` (the same lock budget admission takes), so a
budget check and the ledger write it guards are one atomic step across processes.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import Double, Index, Integer, String, case, func, literal, select, text, union_all
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from mlplatform_core.catalog import Catalog

from .database import Base, write_lock

log = logging.getLogger(__name__)

KINDS = ("server", "model", "spark")
GROUP_FIELDS = ("team", "user", "kind", "profile", "model", "gpu_type", "key")
OPEN = "ended_at IS NULL"


class Interval(Base):
    """One allocation at one size, from `started_at` to `ended_at` (NULL while it runs)."""

    __tablename__ = "mlplatform_usage"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))
    team: Mapped[str] = mapped_column(String(63))
    user: Mapped[str] = mapped_column(String(255))
    profile: Mapped[str | None] = mapped_column(String(63))
    model: Mapped[str | None] = mapped_column(String(255))
    gpu_type: Mapped[str | None] = mapped_column(String(63))
    gpus: Mapped[int] = mapped_column(Integer)
    # The GPU type's price when the interval started: a price change applies from then on, not to
    # what was already used.
    price_per_hour: Mapped[float] = mapped_column(Double)
    # Seconds since the epoch (UTC): clipping and summing stay plain arithmetic in SQLite and PostgreSQL.
    started_at: Mapped[float] = mapped_column(Double)
    ended_at: Mapped[float | None] = mapped_column(Double)

    __table_args__ = (
        Index("mlplatform_usage_open_key", "key", unique=True,
              sqlite_where=text(OPEN), postgresql_where=text(OPEN)),
        # usage(): the intervals overlapping a window are those ending after its start (or open).
        Index("mlplatform_usage_end", "ended_at", "started_at"),
        Index("mlplatform_usage_team_end", "team", "ended_at", "started_at"),
    )


@dataclass(frozen=True)
class Allocation:
    """An open allocation (what runs now)."""

    key: str
    kind: str
    team: str
    user: str
    profile: str | None
    model: str | None
    gpu_type: str | None
    gpus: int
    price_per_hour: float
    started_at: datetime


def lock_team(session: Session, team: str) -> None:
    """The one lock over a team's allocations: ledger writes and budget admission both take it first."""
    write_lock(session, f"budget:{team}")


class UsageLedger:
    """The ledger on a database (`database.connect(url)`), pricing with the catalog `catalog()` returns."""

    def __init__(self, sessions: sessionmaker[Session], catalog: Callable[[], Catalog],
                 clock: Callable[[], datetime] | None = None):
        self.sessions = sessions
        self.catalog = catalog
        self.clock = clock or (lambda: datetime.now(UTC))

    # -- writing -------------------------------------------------------------------------------------

    def open(self, key: str, *, kind: str, team: str, user: str, gpu_type: str | None, gpus: int,
             profile: str | None = None, model: str | None = None,
             at: datetime | None = None) -> Literal["opened", "unchanged", "changed"]:
        """Record that `key` runs from `at` (now): the same open allocation again changes nothing; a
        different size or GPU type (or owner) ends the open interval at `at` and starts a new one."""
        fields = self.allocation(kind=kind, team=team, user=user, gpu_type=gpu_type, gpus=gpus,
                                 profile=profile, model=model)
        at = self.moment(at)
        with self.sessions.begin() as session:
            lock_team(session, team)
            return self.open_in(session, key, fields, at)

    def close(self, key: str, at: datetime | None = None) -> bool:
        """End `key`'s open interval at `at` (now); False when none is open."""
        at = self.moment(at)
        with self.sessions() as session:  # which team's lock to take (SQLite: the lock must come first)
            team = session.scalar(select(Interval.team).where(Interval.key == key, Interval.ended_at.is_(None)))
        if team is None:
            return False
        with self.sessions.begin() as session:
            lock_team(session, team)
            return self.close_in(session, key, at)

    def reconcile(self, observed: Mapping[str, Mapping], at: datetime | None = None, *,
                  grace: timedelta = timedelta(seconds=60), gpus_only: bool = False) -> dict[str, list[str]]:
        """Make the open intervals what is observed running: `observed` maps each running allocation's
        key to its fields (as `open` takes them). Opens the missing, resizes the changed, closes the
        vanished, except those opened less than `grace` before `at` (admitted; their pod not yet seen).
        An entry the ledger cannot take is left out and reported under "refused" (and logged).
        `gpus_only`: the observer sees only allocations holding GPUs (the hub's cache of GPU pods on
        Kubernetes), so open intervals of 0 GPUs (CPU servers) are not closed for being unseen."""
        at = self.moment(at)
        wanted, refused = {}, {}
        for key, fields in observed.items():
            try:
                wanted[key] = self.allocation(**fields)
            except (TypeError, ValueError) as e:
                refused[key] = str(e)
                log.warning("usage: not recording %s: %s", key, e)
        with self.sessions() as session:
            teams = set(session.scalars(select(Interval.team).where(Interval.ended_at.is_(None)).distinct()))
        teams |= {fields["team"] for fields in wanted.values()}
        report: dict[str, list[str]] = {"opened": [], "changed": [], "closed": [], "refused": sorted(refused)}
        with self.sessions.begin() as session:
            for team in sorted(teams):  # one order everywhere: no deadlock between reconcilers
                lock_team(session, team)
            current = {i.key: i for i in session.scalars(select(Interval).where(Interval.ended_at.is_(None)))}
            for key, fields in sorted(wanted.items()):
                change = self._apply(session, key, fields, current.get(key), at)
                if change != "unchanged":
                    report[change].append(key)
            for key, interval in sorted(current.items()):
                # A team opened since the first read is not locked: the next reconcile sees it.
                vanished = key not in wanted and (interval.gpus > 0 or not gpus_only)
                if vanished and interval.team in teams and interval.started_at <= at - grace.total_seconds():
                    interval.ended_at = max(at, interval.started_at)
                    report["closed"].append(key)
        return report

    def open_in(self, session: Session, key: str, fields: dict, at: float) -> str:
        """`open` inside the caller's transaction, which holds `lock_team` (budget admission uses it)."""
        return self._apply(session, key, fields, self.open_interval(session, key), at)

    def close_in(self, session: Session, key: str, at: float) -> bool:
        interval = self.open_interval(session, key)
        if interval is None:
            return False
        interval.ended_at = max(at, interval.started_at)
        return True

    def open_interval(self, session: Session, key: str) -> Interval | None:
        return session.scalar(select(Interval).where(Interval.key == key, Interval.ended_at.is_(None)))

    def _apply(self, session: Session, key: str, fields: dict, current: Interval | None, at: float) -> str:
        if current is not None:
            if all(getattr(current, name) == value for name, value in fields.items() if name != "price_per_hour"):
                return "unchanged"
            current.ended_at = max(at, current.started_at)
            session.flush()  # the open-key index allows the new interval only once this one has ended
        session.add(Interval(key=key, started_at=at, **fields))
        session.flush()
        return "changed" if current is not None else "opened"

    def allocation(self, *, kind: str, team: str, user: str, gpu_type: str | None, gpus: int,
                   profile: str | None = None, model: str | None = None) -> dict:
        """The interval's columns for an allocation, checked against the catalog (ValueError lists every problem)."""
        catalog = self.catalog()
        problems = []
        if kind not in KINDS:
            problems.append(f"kind {kind!r} is not allowed; allowed: {', '.join(KINDS)}")
        if team not in catalog.teams:
            problems.append(f"team {team!r} is not a team of the catalog; allowed: {', '.join(catalog.teams)}")
        if not user:
            problems.append("user is empty; name the user the allocation is for")
        if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
            problems.append(f"gpus {gpus!r} is not allowed; allowed: a whole number, 0 or more")
        elif gpus and gpu_type not in catalog.gpu_types:
            problems.append(f"gpu_type {gpu_type!r} is not a GPU type of the catalog; allowed: "
                            f"{', '.join(catalog.gpu_types) or '(none declared)'}")
        if problems:
            raise ValueError("; ".join(problems))
        price = catalog.gpu_types[gpu_type].price_per_hour if gpus else 0.0
        return {"kind": kind, "team": team, "user": user, "profile": profile, "model": model,
                "gpu_type": gpu_type if gpus else None, "gpus": gpus, "price_per_hour": price}

    def moment(self, at: datetime | None) -> float:
        """`at` (now when None) as the ledger stores time."""
        return _seconds(self.clock() if at is None else at, "at")

    # -- reading -------------------------------------------------------------------------------------

    def open_allocations(self, team: str | None = None) -> list[Allocation]:
        query = select(Interval).where(Interval.ended_at.is_(None)).order_by(Interval.key)
        if team is not None:
            query = query.where(Interval.team == team)
        with self.sessions() as session:
            return [Allocation(i.key, i.kind, i.team, i.user, i.profile, i.model, i.gpu_type, i.gpus,
                               i.price_per_hour, _datetime(i.started_at)) for i in session.scalars(query)]

    def usage(self, since: datetime, until: datetime, *, by: Sequence[str] = ("team",), team: str | None = None,
              user: str | None = None) -> list[dict]:
        """GPU-hours and cost in [since, until), open intervals up to now, one row per group of `by`:
        [{"team": "team-vision", "gpu_hours": 12.5, "cost": 31.25}, ...], sorted by the group."""
        with self.sessions() as session:
            return self.usage_in(session, since, until, by=by, team=team, user=user, now=self.moment(None))

    def usage_in(self, session: Session, since: datetime, until: datetime, *, by: Sequence[str] = ("team",),
                 team: str | None = None, user: str | None = None, now: float) -> list[dict]:
        by = _check_by(by)
        since_s, until_s = _seconds(since, "since"), _seconds(until, "until")
        # Each interval clipped to [since, min(until, now)): closed ones and open ones apart, so that each
        # half is one range of an index (an OR of both makes SQLite scan the table).
        closed = self._clipped(Interval.ended_at, since_s, until_s, by, team, user,
                               Interval.ended_at > since_s, Interval.started_at < until_s)
        parts = [closed]
        if now > since_s:
            parts.append(self._clipped(literal(now), since_s, until_s, by, team, user,
                                       Interval.ended_at.is_(None), Interval.started_at < min(until_s, now)))
        rows_of = union_all(*parts).subquery() if len(parts) > 1 else closed.subquery()
        groups = [rows_of.c[name] for name in by]
        query = (select(*groups, func.sum(rows_of.c.hours), func.sum(rows_of.c.hours * rows_of.c.price))
                 .group_by(*groups).having(func.sum(rows_of.c.hours) > 0))  # zero-length intervals alone
        rows = [{**dict(zip(by, row[:-2])), "gpu_hours": row[-2], "cost": row[-1]} for row in session.execute(query)]
        return sorted(rows, key=lambda r: [(r[name] is not None, r[name] or "") for name in by])

    @staticmethod
    def _clipped(end, since_s: float, until_s: float, by, team, user, *where):
        end = case((end > until_s, until_s), else_=end)
        start = case((Interval.started_at < since_s, since_s), else_=Interval.started_at)
        hours = ((end - start) * Interval.gpus / 3600.0).label("hours")
        query = select(*(getattr(Interval, name) for name in by), hours, Interval.price_per_hour.label("price")) \
            .where(*where, Interval.gpus > 0)
        if team is not None:
            query = query.where(Interval.team == team)
        if user is not None:
            query = query.where(Interval.user == user)
        return query

    def held_in(self, session: Session, team: str | None = None) -> dict[str, tuple[int, float, int]]:
        """Per team with open GPU allocations: (GPUs, their price per hour together, how many allocations)."""
        query = (select(Interval.team, func.sum(Interval.gpus), func.sum(Interval.gpus * Interval.price_per_hour),
                        func.count()).where(Interval.ended_at.is_(None), Interval.gpus > 0).group_by(Interval.team))
        if team is not None:
            query = query.where(Interval.team == team)
        return {t: (int(gpus), float(price), n) for t, gpus, price, n in session.execute(query)}

    def series(self, since: datetime, until: datetime, *, step: Literal["day", "week"] = "day",
               by: Sequence[str] = ("team",), team: str | None = None, user: str | None = None) -> list[dict]:
        """`usage` per day or ISO week (UTC) for charts: [{"start": datetime, "team": ..., "gpu_hours": ...,
        "cost": ...}, ...]; the first and last buckets are clipped to [since, until)."""
        if step not in ("day", "week"):
            raise ValueError(f"step {step!r} is not allowed; allowed: day, week")
        points = []
        with self.sessions() as session:
            now = self.moment(None)
            bucket = _floor(since, step)
            while bucket < until:
                following = bucket + timedelta(days=1 if step == "day" else 7)
                lo, hi = max(bucket, since), min(following, until)
                points += [{"start": lo, **row} for row in
                           self.usage_in(session, lo, hi, by=by, team=team, user=user, now=now)]
                bucket = following
        return points

    def digest(self, week_start: datetime, teams: Sequence[str] | None = None) -> tuple[str, str]:
        """The week's cost attribution (the ISO week holding `week_start`), per team, user, kind, profile,
        served model and GPU type: (CSV text, Markdown text); only `teams`' rows when given."""
        start, end = period_bounds("week", week_start)
        rows = self.usage(start, end, by=("team", "user", "kind", "profile", "model", "gpu_type"))
        if teams is not None:
            rows = [r for r in rows if r["team"] in teams]
        currency = self.catalog().platform_service.currency
        return _digest_csv(rows, start, currency), _digest_markdown(rows, start, end, currency)


# -- periods --------------------------------------------------------------------------------------------

def period_bounds(period: Literal["month", "week"], at: datetime) -> tuple[datetime, datetime]:
    """The calendar month or ISO week (from Monday) holding `at`, in UTC: [start, end)."""
    at = datetime.fromtimestamp(_seconds(at, "at"), UTC)
    if period == "month":
        start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
        return start, end
    if period == "week":
        start = _floor(at, "week")
        return start, start + timedelta(days=7)
    raise ValueError(f"period {period!r} is not allowed; allowed: month, week")


def period_label(period: str, start: datetime) -> str:
    """"December 2026" or "week 49 of 2026" (the ISO week's year)."""
    if period == "month":
        return start.strftime("%B %Y")
    year, week, _ = start.isocalendar()
    return f"week {week} of {year}"


def period_id(period: str, start: datetime) -> str:
    """"2026-12" or "2026-W49": a metric's label."""
    if period == "month":
        return start.strftime("%Y-%m")
    year, week, _ = start.isocalendar()
    return f"{year}-W{week:02d}"


# -- formatting -----------------------------------------------------------------------------------------

_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


def hours_text(value: float) -> str:
    """412 → "412", 411.96 → "412", 12.34 → "12.3", 1234 → "1,234"."""
    value = round(value, 1)
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def money_text(value: float, currency: str) -> str:
    """1234 → "$1,234", 12.5 → "$12.50" (cents when not whole); no known symbol: "12.50 CHF"."""
    value = round(value, 2)
    number = f"{value:,.0f}" if value == int(value) else f"{value:,.2f}"
    symbol = _SYMBOLS.get(currency)
    return f"{symbol}{number}" if symbol else f"{number} {currency}"


# -- helpers --------------------------------------------------------------------------------------------

def _seconds(at: datetime, name: str) -> float:
    if not isinstance(at, datetime) or at.tzinfo is None:
        raise ValueError(f"{name} {at!r} is not allowed; allowed: a timezone-aware datetime (e.g. in UTC)")
    return at.timestamp()


def _datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _floor(at: datetime, step: str) -> datetime:
    day = datetime.fromtimestamp(_seconds(at, "since"), UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day if step == "day" else day - timedelta(days=day.weekday())


def _check_by(by: Sequence[str]) -> tuple[str, ...]:
    by = (by,) if isinstance(by, str) else tuple(by)
    unknown = [name for name in by if name not in GROUP_FIELDS]
    if unknown or not by:
        raise ValueError(f"by {list(by)!r} is not allowed; allowed: one or more of {', '.join(GROUP_FIELDS)}")
    return by


def _digest_csv(rows: list[dict], start: datetime, currency: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["week", "team", "user", "kind", "profile", "model", "gpu_type", "gpu_hours", "cost", "currency"])
    week = period_id("week", start)
    for r in rows:
        writer.writerow([week, r["team"], r["user"], r["kind"], r["profile"] or "", r["model"] or "", r["gpu_type"],
                         f"{r['gpu_hours']:.3f}", f"{r['cost']:.2f}", currency])
    return out.getvalue()


def _digest_markdown(rows: list[dict], start: datetime, end: datetime, currency: str) -> str:
    last = end - timedelta(days=1)
    days = f"{start:%a} {start.day} {start:%b} – {last:%a} {last.day} {last:%b %Y}"
    lines = [f"# GPU usage, {period_label('week', start)} ({days}, UTC)", ""]
    if not rows:
        return "\n".join(lines + ["No GPU was allocated this week.", ""])
    teams: dict[str, list[dict]] = {}
    for r in rows:
        teams.setdefault(r["team"], []).append(r)
    for team, team_rows in teams.items():
        hours, cost = sum(r["gpu_hours"] for r in team_rows), sum(r["cost"] for r in team_rows)
        lines += [f"## {team}: {hours_text(hours)} GPU-hours, {money_text(cost, currency)}", "",
                  "| user | kind | profile | model | GPU type | GPU-hours | cost |",
                  "|---|---|---|---|---|---:|---:|"]
        for r in sorted(team_rows, key=lambda r: -r["gpu_hours"]):  # stable: ties keep usage()'s order
            lines.append(f"| {r['user']} | {r['kind']} | {r['profile'] or ''} | {r['model'] or ''} | {r['gpu_type']} "
                         f"| {hours_text(r['gpu_hours'])} | {money_text(r['cost'], currency)} |")
        lines.append("")
    return "\n".join(lines)
