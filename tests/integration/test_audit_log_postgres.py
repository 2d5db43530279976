"""The audit log on a real PostgreSQL server (production's database): the chain, retention, the
triggers' refusals, tampering found by verify, two processes appending at once, the CLI."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from mlplatform_service.audit_log import GENESIS, AuditLog
from mlplatform_service.database import connect

from ..unit.test_audit_log import ROOT, Clock, assert_one_chain_of_both, concurrent_writers, fill, independent_hash


@pytest.fixture
def sessions(postgres_url):
    return connect(postgres_url)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def log(sessions, clock):
    return AuditLog(sessions, clock=clock)


def tamper(sessions, *statements: str) -> None:
    """As someone with SQL access would: drop the trigger, then change the table."""
    with sessions.begin() as session:
        session.execute(text("DROP TRIGGER mlplatform_audit_append_only ON mlplatform_audit"))
        for statement in statements:
            session.execute(text(statement))


def test_append_chains_records_and_filters(log, clock):
    first = log.append("login", actor="alice", target="hub", outcome="succeeded")
    clock.advance(hours=1)
    second = log.append("promote", actor="platform", target="model team-vision/iris v3", outcome="succeeded",
                        team="team-vision", details={"previous": "v2", "gates": {"accuracy": 0.93}})
    assert first["prev_hash"] == GENESIS and second["prev_hash"] == first["hash"]
    assert all(independent_hash(r) == r["hash"] for r in (first, second))
    assert log.query() == [first, second]
    assert log.query(team="team-vision", target="iris v3", since=datetime(2026, 5, 4, 9, 30, tzinfo=UTC)) == [second]
    assert log.query(actor="alice", until="2026-05-04T09:00:00.001Z") == [first]
    assert "".join(log.export("jsonl")).count("\n") == 2
    result = log.verify()
    assert (result.ok, result.checked, result.first_seq, result.last_seq) == (True, 2, 1, 2)


def test_the_triggers_refuse_update_delete_and_truncate(log, sessions):
    fill(log, 3)
    for statement in ("UPDATE mlplatform_audit SET actor = 'mallory'", "DELETE FROM mlplatform_audit WHERE seq = 1",
                      "TRUNCATE mlplatform_audit"):
        with pytest.raises(DBAPIError, match="the audit log is append-only"), sessions.begin() as session:
            session.execute(text(statement))
    assert log.verify().ok and log.verify().checked == 3


def test_prune_keeps_the_chain_verifiable_from_its_anchor(log, clock):
    fill(log, 3)
    clock.advance(days=10)
    kept = fill(log, 2)
    clock.advance(days=2)
    assert log.prune(5) == 3
    result = log.verify()
    assert (result.ok, result.checked, result.first_seq, result.anchor_seq) == (True, 2, 4, 3)
    assert log.append("stop", actor="alice", target="server alice/", outcome="succeeded")["prev_hash"] == \
        kept[-1]["hash"]
    clock.advance(days=30)
    assert log.prune(5) == 3 and log.verify().ok and log.verify().anchor_seq == 6


def test_changed_removed_and_reordered_records_are_found(log, sessions):
    records = fill(log, 8)
    forged = {**records[6], "actor": "mallory"}
    tamper(sessions,
           "UPDATE mlplatform_audit SET outcome = 'failed' WHERE seq = 2",  # changed
           "DELETE FROM mlplatform_audit WHERE seq = 4",  # removed
           "UPDATE mlplatform_audit SET seq = -1 WHERE seq = 5",  # 5 and 6 swapped
           "UPDATE mlplatform_audit SET seq = 5 WHERE seq = 6", "UPDATE mlplatform_audit SET seq = 6 WHERE seq = -1",
           f"UPDATE mlplatform_audit SET actor = 'mallory', hash = '{independent_hash(forged)}' WHERE seq = 7")
    problems = log.verify().problems
    assert "seq 2: hash mismatch (changed)" in problems
    assert "seq 4: missing (removed)" in problems
    assert "seq 5: holds the record appended as seq 6 (reordered or renumbered)" in problems
    assert "seq 6: holds the record appended as seq 5 (reordered or renumbered)" in problems
    assert any(p.startswith("seq 8: prev_hash does not link to seq 7") for p in problems)


def test_two_processes_appending_at_once_leave_one_gap_free_chain(postgres_url, tmp_path):
    connect(postgres_url)  # the tables, before the writers race to make them
    concurrent_writers(postgres_url, tmp_path)
    assert_one_chain_of_both(AuditLog(connect(postgres_url)))


def test_cli_verify_and_export(log, sessions, postgres_url):
    fill(log, 3)

    def mlplatform(*args):
        return subprocess.run([sys.executable, "-m", "hub_config.render.cli", "audit", *args, "--database-url",
                               postgres_url], capture_output=True, text=True, cwd=ROOT, timeout=120)

    done = mlplatform("verify")
    assert done.returncode == 0 and done.stdout.startswith("audit log intact: 3 records, seq 1 to 3\n"), done.stderr
    done = mlplatform("export", "--format", "csv", "--since", str((Clock().now - timedelta(days=1)).date()))
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 4
    tamper(sessions, "DELETE FROM mlplatform_audit WHERE seq = 2")
    done = mlplatform("verify")
    assert done.returncode == 1 and "  seq 2: missing (removed)" in done.stdout.splitlines()
