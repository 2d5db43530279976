"""Benchmark of the audit log: what the chain and the lock cost, on SQLite and on PostgreSQL.

  append                --appends records through AuditLog.append, one transaction each (lock, head,
                        hash, insert, commit), against the alternative a user would pick: plain INSERTs
                        into a table of the same columns, no chain, no lock, one transaction each
  verify                AuditLog.verify() over --records records (filled in bulk with a valid chain),
                        against reading every record (the same streamed SELECT, nothing checked)

SQLite is a file in a temp dir (WAL, as the service opens it); PostgreSQL is a throwaway server
from tests/support/postgres.py (fsync off, like the tests: production's commits cost more, for
both columns alike).

    .venv/bin/python bench/audit_log.py --records 1000000 --appends 2000

Measured on the development machine (2 cores, shared: load ~3), 1,000,000 records:

    backend     measure                                    s     per s vs                  s      ×
    SQLite      append (2000, one transaction each)     2.36       849 plain INSERT     0.97   2.43
    SQLite      verify (1,000,000 records)              8.21   121,798 reading them     5.43   1.51
    PostgreSQL  append (2000, one transaction each)     2.87       697 plain INSERT     1.48   1.94
    PostgreSQL  verify (1,000,000 records)              9.06   110,409 reading them     5.87   1.54

An append costs 1.2 ms (SQLite) / 1.4 ms (PostgreSQL), about twice a plain INSERT: the lock, reading
the head and the hash. Verifying a million records takes 8-9 s, 1.5x just reading them (it streams:
memory stays flat). Filling the million in bulk took 30 s (SQLite) and 46 s (PostgreSQL).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import Column, Integer, MetaData, String, Table, Text, insert, select  # noqa: E402

from mlplatform_core.timestamps import format_time  # noqa: E402
from mlplatform_service.audit_log import (  # noqa: E402
    AuditLog, AuditRecord, canonical_json, record_hash)
from mlplatform_service.database import connect  # noqa: E402
from tests.support.postgres import create_database, running_postgres  # noqa: E402

BATCH = 10_000
# The unchained table a user would write instead: the same columns, nothing else.
_plain = MetaData()
PLAIN = Table("bench_plain_audit", _plain, Column("id", Integer, primary_key=True), Column("time", String(24)),
              Column("actor", String(255)), Column("action", String(32)), Column("team", String(64)),
              Column("target", Text), Column("outcome", String(16)), Column("details", Text))


def record(n: int) -> dict:
    return {"actor": f"user{n % 50}", "action": "deploy", "team": f"team-{n % 7}",
            "target": f"model team-{n % 7}/model-{n % 100} v{n}", "outcome": "succeeded",
            "details": {"replicas": n % 4 + 1, "profile": "gpu-a100"}}


def bench_append(sessions, count: int) -> tuple[float, float]:
    log = AuditLog(sessions)
    _plain.create_all(sessions.kw["bind"])
    t = time.perf_counter()
    for n in range(count):
        fields = record(n)
        log.append(fields.pop("action"), **fields)
    chained = time.perf_counter() - t
    t = time.perf_counter()
    for n in range(count):
        with sessions.begin() as session:
            session.execute(insert(PLAIN).values(time=format_time(datetime.now(UTC)),
                                                 **{**record(n), "details": canonical_json(record(n)["details"])}))
    return chained, time.perf_counter() - t


def fill(sessions, count: int) -> float:
    """`count` chained records after whatever is there, in bulk (appending them one by one takes hours)."""
    log = AuditLog(sessions)
    start = log.verify()
    seq, prev_hash = start.last_seq or 0, start.head_hash
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    t = time.perf_counter()
    while seq < count:
        rows = []
        for seq in range(seq + 1, min(seq + BATCH, count) + 1):
            row = {"seq": seq, "time": format_time(moment + timedelta(milliseconds=seq)), **record(seq)}
            row["prev_hash"], row["hash"] = prev_hash, record_hash(prev_hash, row)
            prev_hash = row["hash"]
            rows.append({**row, "details": canonical_json(row["details"])})
        with sessions.begin() as session:
            session.execute(insert(AuditRecord), rows)
    return time.perf_counter() - t


def bench_verify(sessions) -> tuple[float, float, int]:
    log = AuditLog(sessions)
    t = time.perf_counter()
    result = log.verify()
    verified = time.perf_counter() - t
    assert result.ok, result.problems
    t = time.perf_counter()
    with sessions() as session:
        read = sum(1 for _ in session.execute(select(AuditRecord.__table__).order_by(AuditRecord.seq)
                                              .execution_options(yield_per=5000)))
    assert read == result.checked
    return verified, time.perf_counter() - t, result.checked


@contextmanager
def databases():
    with tempfile.TemporaryDirectory(prefix="mlplatform-bench-audit-") as tmp:
        sqlite = f"sqlite:///{Path(tmp) / 'service.sqlite'}"
        with running_postgres() as admin:
            yield {"SQLite": sqlite, "PostgreSQL": create_database(admin, "bench_audit")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=1_000_000, help="records to verify")
    p.add_argument("--appends", type=int, default=2000, help="appends to time, one transaction each")
    args = p.parse_args()
    rows = []
    with databases() as urls:
        for backend, url in urls.items():
            sessions = connect(url)
            chained, plain = bench_append(sessions, args.appends)
            rows.append((backend, f"append ({args.appends}, one transaction each)", args.appends, chained,
                         plain, "plain INSERT"))
            filled = fill(sessions, args.records)
            print(f"{backend}: filled {args.records:,} records in bulk in {filled:.1f} s", file=sys.stderr)
            verified, scanned, checked = bench_verify(sessions)
            rows.append((backend, f"verify ({checked:,} records)", checked, verified, scanned, "reading them"))
            sessions.kw["bind"].dispose()
    print(f"\n{'backend':<11} {'measure':<36} {'s':>7} {'per s':>9} {'vs':<13} {'s':>7} {'×':>6}")
    for backend, name, count, seconds, other, label in rows:
        print(f"{backend:<11} {name:<36} {seconds:>7.2f} {count / seconds:>9,.0f} {label:<13} {other:>7.2f} "
              f"{seconds / other:>6.2f}")
    print("\n×: the audit log's time over the alternative's (1.00: it costs nothing more)")


if __name__ == "__main__":
    main()
