"""Usage-ledger benchmark: query latency over a year of allocation intervals at 2,000 servers.

    .venv/bin/python bench/usage.py                                   # full: 2,000 servers, 365 days
    .venv/bin/python bench/usage.py --servers 200 --days 60           # small

Generates the intervals (each server: `--sessions` sessions a day of 0.5–5 h, 0–4 GPUs of one of two
types; 40 teams; each server's last session still open), loads them into SQLite (and PostgreSQL, when
tests/support/postgres.py can start a throwaway server) and measures p50/p99 over `--runs` runs of

  usage(month) by team / by user     the latest month, and a month of the past (January)
  budgets.status(team)               what every admission reads (one team's month, its open holds)
  digest(week)                       the latest week by team, user, kind, profile, model, GPU type

against what a user would write instead: (a) all rows into Python, clipped and summed there;
(b) one SQL GROUP BY of the intervals started in the window, unclipped (fast, but wrong at the edges:
"off by" says how much). "÷ledger" is the alternative's p50 over the ledger's: above 1, the ledger is faster.
p99 of 10–20 runs is close to their maximum. One run each on 2 cores shared with other work.

The ledger answers the current month (budget checks, dashboards) from the intervals ending in it (the
ended_at index); a month of the past reads the index from that month on, so it costs more the older it
is (January: 3× December on SQLite). Sums of a year at this scale would want daily roll-ups.

Full scale (`bench/usage.py --runs 10 --python-runs 1`; the machine shared with test runs during SQLite's):

    SQLite: 2,190,000 intervals (2,000 open; 2,000 servers × 3 sessions/day × 365 days)
    loaded in 33 s, 10 runs each (alternative (a): 1)

    query                                p50 ms   p99 ms | (a) Python p50 ÷ledger | (b) GROUP BY p50 ÷ledger  (b) off by
    ------------------------------------------------------------------------------------------------------------------------
    usage(month) by team, December        356.5    984.1 |        22162.8   62.2x |           4320.4  12.12x     +2.37%
    usage(month) by user, December        752.5   1019.8 |        13101.6   17.4x |            520.8   0.69x     +2.37%
    usage(month) by team, January        1125.2   1261.6 |        10031.2    8.9x |           1122.2   1.00x     -0.00%
    usage(month) by user, January         433.7    751.3 |         8660.5   20.0x |            631.2   1.46x     -0.00%
    budgets.status(team), December         29.5     36.4 |   (no alternative: one team's slice of the same query)
    digest(week)                          369.2    859.7 |        31901.9   86.4x |            426.8   1.16x     -0.00%

    PostgreSQL: 2,190,000 intervals (2,000 open; 2,000 servers × 3 sessions/day × 365 days)
    loaded in 18 s, 10 runs each (alternative (a): 1)

    query                                p50 ms   p99 ms | (a) Python p50 ÷ledger | (b) GROUP BY p50 ÷ledger  (b) off by
    ------------------------------------------------------------------------------------------------------------------------
    usage(month) by team, December         62.9     74.8 |         8725.3  138.7x |            224.5   3.57x     +2.37%
    usage(month) by user, December        112.4    245.1 |        10867.9   96.7x |            283.1   2.52x     +2.37%
    usage(month) by team, January         287.5    301.9 |         7302.3   25.4x |            201.9   0.70x     +0.00%
    usage(month) by user, January         199.2    424.2 |         8010.0   40.2x |            195.7   0.98x     +0.00%
    budgets.status(team), December          9.0     12.7 |   (no alternative: one team's slice of the same query)
    digest(week)                           68.2     80.5 |        10611.6  155.6x |            188.7   2.77x     -0.00%

Small scale (`--servers 200 --days 60 --runs 20`):

    SQLite: 36,000 intervals (200 open; 200 servers × 3 sessions/day × 60 days)
    loaded in 0 s, 20 runs each (alternative (a): 3)

    query                                p50 ms   p99 ms | (a) Python p50 ÷ledger | (b) GROUP BY p50 ÷ledger  (b) off by
    ------------------------------------------------------------------------------------------------------------------------
    usage(month) by team, December         14.5     29.3 |          153.9   10.6x |             28.2   1.95x     +2.34%
    usage(month) by user, December         17.9     26.7 |           73.0    4.1x |             12.0   0.67x     +2.34%
    usage(month) by team, January           4.1      5.6 |           77.9   18.9x |              4.0   0.98x  (no data)
    usage(month) by user, January           3.9      4.2 |           70.8   18.3x |              4.4   1.13x  (no data)
    budgets.status(team), December          2.3      5.6 |   (no alternative: one team's slice of the same query)
    digest(week)                           11.9     14.2 |          106.6    9.0x |             10.5   0.89x     -0.00%

    PostgreSQL: 36,000 intervals (200 open; 200 servers × 3 sessions/day × 60 days)
    loaded in 0 s, 20 runs each (alternative (a): 3)

    query                                p50 ms   p99 ms | (a) Python p50 ÷ledger | (b) GROUP BY p50 ÷ledger  (b) off by
    ------------------------------------------------------------------------------------------------------------------------
    usage(month) by team, December          9.5     14.7 |          107.4   11.4x |              8.7   0.92x     +2.34%
    usage(month) by user, December         10.5     23.8 |          113.5   10.8x |              8.8   0.84x     +2.34%
    usage(month) by team, January           4.4      8.5 |          168.7   38.5x |              4.2   0.95x  (no data)
    usage(month) by user, January           2.4      9.4 |          144.9   60.3x |             10.0   4.15x  (no data)
    budgets.status(team), December          8.4     18.0 |   (no alternative: one team's slice of the same query)
    digest(week)                           16.0     27.0 |          159.1    9.9x |             15.6   0.97x     -0.00%
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "extensions"))

import yaml  # noqa: E402
from sqlalchemy import case, func, select  # noqa: E402

from hub_config.catalog import DEFAULT_CATALOG  # noqa: E402
from mlplatform_core.catalog import parse_catalog  # noqa: E402
from mlplatform_service.budgets import Budgets  # noqa: E402
from mlplatform_service.database import connect  # noqa: E402
from mlplatform_service.usage import Interval, UsageLedger, period_bounds  # noqa: E402

END = datetime(2027, 1, 1, 6, tzinfo=UTC)  # "now": a year of data behind it
COLUMNS = ("key", "kind", "team", "user", "profile", "model", "gpu_type", "gpus", "price_per_hour",
           "started_at", "ended_at")
TEAMS = 40
GPUS = [(0, None, 0.0), (1, "t4", 0.5), (1, "a100", 2.5), (2, "a100", 2.5), (4, "a100", 2.5)]


def intervals(servers: int, days: int, sessions: int, seed: int = 7):
    """Rows in COLUMNS order, oldest first."""
    rng = random.Random(seed)
    first = (END - timedelta(days=days)).replace(hour=0).timestamp()
    for day in range(days):
        base = first + day * 86400
        for s in range(servers):
            slot = 86400 / sessions
            for k in range(sessions):
                start = base + k * slot + rng.uniform(0, slot / 3)
                end = start + rng.uniform(0.5, 5) * 3600  # within its slot: a server's sessions do not overlap
                gpus, gpu_type, price = GPUS[rng.randrange(len(GPUS))]
                kind = "server" if s % 10 else "model"
                yield (f"{kind}:u{s}/", kind, f"team-{s % TEAMS}", f"u{s}", gpu_type and f"gpu-{gpu_type}" or "cpu",
                       f"m{s % 7}" if kind == "model" else None, gpu_type, gpus, price, start,
                       None if (day, k) == (days - 1, sessions - 1) else end)  # one open per key


def load(sessions_factory, rows) -> None:
    engine = sessions_factory.kw["bind"]
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        if engine.dialect.name == "postgresql":
            with cur.copy(f"COPY mlplatform_usage ({', '.join(map(quote, COLUMNS))}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            cur.execute("BEGIN")
            cur.executemany(f"INSERT INTO mlplatform_usage ({', '.join(map(quote, COLUMNS))}) "
                            f"VALUES ({', '.join('?' * len(COLUMNS))})", rows)
        raw.commit()
        cur.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()


def quote(name: str) -> str:
    return f'"{name}"'


def python_all_rows(ledger, since, until, by, team=None):
    """Alternative (a): every row into Python, clipped and summed there."""
    s, u, now = since.timestamp(), until.timestamp(), END.timestamp()
    cols = [getattr(Interval, c) for c in (*by, "gpus", "price_per_hour", "started_at", "ended_at", "team")]
    out: dict[tuple, list[float]] = {}
    with ledger.sessions() as session:
        for *group, gpus, price, start, end, t in session.execute(select(*cols)):
            if team is not None and t != team:
                continue
            hours = (min(end if end is not None else now, u) - max(start, s)) * gpus / 3600
            if hours > 0:
                acc = out.setdefault(tuple(group), [0.0, 0.0])
                acc[0] += hours
                acc[1] += hours * price
    return out


def sql_unclipped(ledger, since, until, by, team=None):
    """Alternative (b): one GROUP BY of the intervals started in the window, whole durations."""
    s, u, now = since.timestamp(), until.timestamp(), END.timestamp()
    hours = (case((Interval.ended_at.is_(None), now), else_=Interval.ended_at) - Interval.started_at) \
        * Interval.gpus / 3600.0
    groups = [getattr(Interval, c) for c in by]
    query = select(*groups, func.sum(hours), func.sum(hours * Interval.price_per_hour)) \
        .where(Interval.started_at >= s, Interval.started_at < u).group_by(*groups)
    if team is not None:
        query = query.where(Interval.team == team)
    with ledger.sessions() as session:
        return {tuple(r[:-2]): [r[-2], r[-1]] for r in session.execute(query)}


def timed(fn, runs: int) -> tuple[float, float, object]:
    times, result = [], None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
    return statistics.median(times), p99, result


def catalog_of_teams(n: int):
    """The default catalog with teams team-0 … team-<n-1>, each with a budget (as status reads it)."""
    data = yaml.safe_load(DEFAULT_CATALOG.read_text())
    data["teams"] = {f"team-{i}": {"group": f"team-{i}", "namespace": f"team-{i}", "budget": {"gpu_hours": 5000}}
                     for i in range(n)}
    for profile in data["profiles"].values():
        profile["teams"] = list(data["teams"])
    return parse_catalog(data, environ={})


def bench(name: str, url: str, args, out: list[str]) -> None:
    catalog = catalog_of_teams(TEAMS)
    sessions = connect(url)
    t = time.perf_counter()
    load(sessions, intervals(args.servers, args.days, args.sessions))
    loaded = time.perf_counter() - t
    ledger = UsageLedger(sessions, lambda: catalog, clock=lambda: END)
    budgets = Budgets(ledger)
    with sessions() as s:
        count = s.scalar(select(func.count()).select_from(Interval))
        open_count = s.scalar(select(func.count()).select_from(Interval).where(Interval.ended_at.is_(None)))
    month, january = period_bounds("month", END - timedelta(days=2)), (datetime(2026, 1, 1, tzinfo=UTC),
                                                                         datetime(2026, 2, 1, tzinfo=UTC))
    week = period_bounds("week", END - timedelta(days=7))
    digest_by = ("team", "user", "kind", "profile", "model", "gpu_type")
    cases = [
        ("usage(month) by team, December", lambda: ledger.usage(*month), (month, ("team",), None)),
        ("usage(month) by user, December", lambda: ledger.usage(*month, by=("user",)), (month, ("user",), None)),
        ("usage(month) by team, January", lambda: ledger.usage(*january), (january, ("team",), None)),
        ("usage(month) by user, January", lambda: ledger.usage(*january, by=("user",)), (january, ("user",), None)),
        ("budgets.status(team), December", lambda: budgets.status("team-1", at=END - timedelta(hours=7)), None),
        ("digest(week)", lambda: ledger.digest(week[0]), (week, digest_by, None)),
    ]
    out += [f"{name}: {count:,} intervals ({open_count:,} open; {args.servers:,} servers × {args.sessions} sessions"
            f"/day × {args.days} days)", f"loaded in {loaded:.0f} s, {args.runs} runs each (alternative (a): "
            f"{args.python_runs})", "",
            f"{'query':34} {'p50 ms':>8} {'p99 ms':>8} | {'(a) Python p50':>14} {'÷ledger':>7} | "
            f"{'(b) GROUP BY p50':>16} {'÷ledger':>7} {'(b) off by':>11}",
            "-" * 120]
    for label, run, alternative in cases:
        p50, p99, result = timed(run, args.runs)
        line = f"{label:34} {p50:8.1f} {p99:8.1f} |"
        if alternative is None:
            out.append(line + "   (no alternative: one team's slice of the same query)")
            continue
        (since, until), by, team = alternative
        a50, _, exact = timed(lambda: python_all_rows(ledger, since, until, by, team), args.python_runs)
        b50, _, rough = timed(lambda: sql_unclipped(ledger, since, until, by, team), args.runs)
        ledger_hours = sum(r["gpu_hours"] for r in ledger.usage(since, until, by=by))
        exact_hours = sum(v[0] for v in exact.values())
        assert abs(ledger_hours - exact_hours) < 1e-6 * max(1.0, exact_hours), (label, ledger_hours, exact_hours)
        off = sum(v[0] for v in rough.values()) - exact_hours
        off_text = f"{off / exact_hours:+10.2%}" if exact_hours else f"{'(no data)':>10}"
        out.append(line + f" {a50:14.1f} {a50 / p50:6.1f}x | {b50:16.1f} {b50 / p50:6.2f}x {off_text}")
    out.append("")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", type=int, default=2000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--sessions", type=int, default=3, help="sessions per server and day (default 3)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--python-runs", type=int, default=3, help="runs of alternative (a), slow (default 3)")
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    out: list[str] = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mlplatform-bench-usage-")))
        bench("SQLite", f"sqlite:///{tmp}/usage.sqlite", args, out)
        print("\n".join(out), flush=True)
        if not args.no_postgres:
            try:
                from tests.support.postgres import running_postgres
                url = stack.enter_context(running_postgres())
            except Exception as e:  # noqa: BLE001 (no server here: say so, keep SQLite's table)
                print(f"PostgreSQL: not measured ({e})")
                return
            start = len(out)
            bench("PostgreSQL", url, args, out)
            print("\n".join(out[start:]), flush=True)


if __name__ == "__main__":
    main()
