"""The audit log on SQLite: the chain, filters, export, bad input, retention, the database's refusals,
tampering found by verify, two processes appending at once, and `mlplatform audit` as a user runs it.
(tests/integration/test_audit_log_postgres.py runs the same on PostgreSQL.)"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from mlplatform_service.audit_log import ACTIONS, GENESIS, MAX_PROBLEMS, AuditLog
from mlplatform_service.database import connect

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self):
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


def independent_hash(record: dict) -> str:
    """The documented hash, computed here without the module's code: what an external checker does."""
    fields = {k: v for k, v in record.items() if k not in ("prev_hash", "hash")}
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((record["prev_hash"] + body).encode("utf-8")).hexdigest()


def fill(log: AuditLog, count: int, **fields) -> list[dict]:
    defaults = {"actor": "alice", "target": "server alice/", "outcome": "succeeded", "team": "team-vision"}
    return [log.append("spawn", **{**defaults, **fields}, details={"n": n}) for n in range(count)]


# Two OS processes append at the same moment (both wait for `go`): the lock must keep one gap-free chain.
WRITER = """
import sys, time
from pathlib import Path
from mlplatform_service.audit_log import AuditLog
from mlplatform_service.database import connect
url, actor, count, flags = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
log = AuditLog(connect(url))
(flags / f"ready-{actor}").touch()
while not (flags / "go").exists():
    time.sleep(0.005)
start = time.time()
for n in range(count):
    log.append("spawn", actor=actor, target=f"server {actor}/", outcome="intent", details={"n": n})
print(start, time.time())
"""


def concurrent_writers(url: str, flags: Path, actors=("alice", "bob"), count: int = 100) -> None:
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, url, actor, str(count), str(flags)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for actor in actors]
    deadline = time.monotonic() + 60
    while not all((flags / f"ready-{actor}").exists() for actor in actors):
        assert time.monotonic() < deadline and all(w.poll() is None for w in writers), \
            [w.stderr.read() for w in writers if w.poll() is not None]
        time.sleep(0.01)
    (flags / "go").touch()
    spans = []
    for writer in writers:
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        spans.append([float(t) for t in out.split()])
    # Both were appending at once (the lock may still let one finish first: SQLite's is not fair).
    assert max(start for start, _ in spans) < min(end for _, end in spans), "the writers did not overlap"


def assert_one_chain_of_both(log: AuditLog, actors=("alice", "bob"), count: int = 100) -> None:
    result = log.verify()
    assert result.ok, result.problems
    assert (result.checked, result.first_seq, result.last_seq) == (len(actors) * count, 1, len(actors) * count)
    records = log.query(limit=10_000)
    assert [r["seq"] for r in records] == list(range(1, len(actors) * count + 1))
    for actor in actors:  # each writer's records in its own order
        assert [r["details"]["n"] for r in records if r["actor"] == actor] == list(range(count))


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'service.sqlite'}"


@pytest.fixture
def sessions(url):
    return connect(url)


@pytest.fixture
def log(sessions, clock):
    return AuditLog(sessions, clock=clock)


def tamper(sessions, *statements: str) -> None:
    """What someone with SQL access does: drop the triggers first, then change the table."""
    with sessions.begin() as session:
        session.execute(text("DROP TRIGGER IF EXISTS mlplatform_audit_no_update"))
        session.execute(text("DROP TRIGGER IF EXISTS mlplatform_audit_no_delete"))
        for statement in statements:
            session.execute(text(statement))


def test_append_chains_records_with_the_documented_hash(log, clock):
    first = log.append("login", actor="alice", target="hub", outcome="succeeded")
    clock.advance(seconds=1.5)
    second = log.append("promote", actor="platform", target="model team-vision/iris v3", outcome="succeeded",
                        team="team-vision", details={"gates": {"accuracy": 0.93}, "previous": "v2", "ü": "é"})
    assert first == {"seq": 1, "time": "2026-05-04T09:00:00.000Z", "actor": "alice", "action": "login",
                     "team": None, "target": "hub", "outcome": "succeeded", "details": {},
                     "prev_hash": GENESIS, "hash": independent_hash(first)}
    assert second["seq"] == 2 and second["time"] == "2026-05-04T09:00:01.500Z"
    assert second["prev_hash"] == first["hash"] and second["hash"] == independent_hash(second)
    assert log.query() == [first, second]  # stored as returned
    odd = log.append("deploy", actor="ålice", target='model "q"\\x\t\u2028 🚀 \x00', outcome="failed",
                     details={"b": [1.5, None, True], "a": {"z": "\n"}, "big": 10**20})
    assert odd["hash"] == independent_hash(odd) and log.verify().ok


def test_details_are_hashed_as_stored(log, sessions):
    fill(log, 2)
    tamper(sessions, """UPDATE mlplatform_audit SET details = '{ "n": 0 }' WHERE seq = 1""")  # same JSON, not canonical
    assert log.verify().problems == ["seq 1: hash mismatch (changed)"]


@pytest.mark.parametrize("change, message", [
    ({"action": "hack"}, "audit action 'hack': allowed: login, spawn"),
    ({"outcome": "maybe"}, "audit outcome 'maybe': allowed: intent, succeeded, failed, refused"),
    ({"actor": ""}, "audit actor '': allowed: a non-empty string"),
    ({"actor": "x" * 256}, "allowed: a non-empty string of at most 255 characters"),
    ({"target": None}, "audit target None: allowed: a non-empty string"),
    ({"team": ""}, "audit team '': allowed: a team name"),
    ({"details": ["a"]}, "audit details ['a']: allowed: a JSON object"),
    ({"details": {1: "a"}}, "allowed: a JSON object (a dict with string keys)"),
    ({"details": {"at": datetime(2026, 1, 1)}}, "allowed: JSON values only"),
    ({"details": {"x": float("nan")}}, "allowed: JSON values only"),
    ({"target": "bad \udc80"}, "audit target 'bad \\udc80': allowed: text without lone surrogates"),
])
def test_bad_input_is_refused_naming_the_field_the_value_and_what_is_allowed(log, change, message):
    record = {"action": "deploy", "actor": "alice", "target": "model m v1", "outcome": "intent", **change}
    with pytest.raises(ValueError) as refused:
        log.append(record.pop("action"), **record)
    assert message in str(refused.value)
    assert log.query() == []  # nothing written


def test_every_documented_action_is_accepted(log):
    for action in ACTIONS:
        log.append(action, actor="platform", target="t", outcome="intent")
    assert [r["action"] for r in log.query()] == list(ACTIONS)


def test_query_filters(log, clock):
    log.append("deploy", actor="alice", team="team-vision", target="model team-vision/iris v3", outcome="intent")
    clock.advance(hours=1)
    log.append("deploy", actor="alice", team="team-vision", target="model team-vision/iris v3", outcome="failed")
    clock.advance(hours=1)
    log.append("submit", actor="bob", team="team-nlp", target="spark team-nlp/job-1", outcome="succeeded")
    clock.advance(hours=1)
    log.append("budget-refusal", actor="bob", team="team-nlp", target="server bob/ 50%", outcome="refused")

    def seqs(**filters):
        return [r["seq"] for r in log.query(**filters)]

    assert seqs() == [1, 2, 3, 4]
    assert seqs(actor="bob") == [3, 4] and seqs(team="team-vision") == [1, 2]
    assert seqs(action="deploy") == [1, 2] and seqs(outcome="refused") == [4]
    assert seqs(target="iris") == [1, 2] and seqs(target="50%") == [4] and seqs(target="%") == [4]  # literal %
    assert seqs(since=START + timedelta(hours=1)) == [2, 3, 4]  # since inclusive
    assert seqs(until="2026-05-04T11:00:00Z") == [1, 2]  # until exclusive
    assert seqs(since="2026-05-04T10:30:00+00:00", until=START + timedelta(hours=3, seconds=1)) == [3, 4]
    assert seqs(after_seq=2) == [3, 4] and seqs(after_seq=1, limit=2) == [2, 3]
    assert seqs(actor="alice", outcome="failed") == [2]
    for bad, message in [({"action": "hack"}, "action filter 'hack': allowed: login"),
                         ({"outcome": "x"}, "outcome filter 'x': allowed: intent"),
                         ({"since": "yesterday"}, "since 'yesterday': allowed: an RFC 3339 time"),
                         ({"until": datetime(2026, 1, 1)}, "allowed: a timezone-aware datetime"),
                         ({"limit": 0}, "limit 0: allowed: a whole number of at least 1")]:
        with pytest.raises(ValueError, match=message):
            log.query(**bad)


def test_export_csv_and_jsonl_hold_every_field_and_recheck(log):
    fill(log, 3)
    log.append("cancel", actor="bob", target='spark team-nlp/job "1", quoted', outcome="succeeded",
               details={"reason": "line\nbreak"})
    lines = "".join(log.export("jsonl")).splitlines()
    records = [json.loads(line) for line in lines]
    assert records == log.query() and all(independent_hash(r) == r["hash"] for r in records)

    rows = list(csv.DictReader(io.StringIO("".join(log.export("csv", actor="bob")), newline="")))
    assert len(rows) == 1
    assert rows[0]["target"] == 'spark team-nlp/job "1", quoted' and rows[0]["team"] == ""
    assert json.loads(rows[0]["details"]) == {"reason": "line\nbreak"} and rows[0]["hash"] == records[3]["hash"]
    assert list(rows[0]) == ["seq", "time", "actor", "action", "team", "target", "outcome", "details",
                             "prev_hash", "hash"]


def test_export_refuses_a_bad_format_or_filter_before_the_first_chunk(log):
    with pytest.raises(ValueError, match="export format 'xml': allowed: csv, jsonl"):
        log.export("xml")
    with pytest.raises(ValueError, match="action filter"):
        log.export("csv", action="hack")


def test_verify_an_intact_log(log):
    assert log.verify().ok and log.verify().checked == 0
    records = fill(log, 5)
    result = log.verify()
    assert (result.ok, result.checked, result.first_seq, result.last_seq, result.problems) == (True, 5, 1, 5, [])
    assert result.head_hash == records[-1]["hash"]


def test_prune_keeps_the_chain_verifiable_from_its_anchor(log, clock):
    fill(log, 3)  # day 0
    clock.advance(days=10)
    kept = fill(log, 2)  # day 10
    clock.advance(days=2)
    with pytest.raises(ValueError, match="retention_days 0: allowed: a whole number of days"):
        log.prune(0)
    assert log.prune(5) == 3
    result = log.verify()
    assert (result.ok, result.checked, result.first_seq, result.anchor_seq) == (True, 2, 4, 3)
    assert log.prune(5) == 0  # nothing more is old enough
    assert log.append("stop", actor="alice", target="server alice/", outcome="succeeded")["prev_hash"] == \
        kept[-1]["hash"]
    clock.advance(days=30)
    assert log.prune(5) == 3  # everything: the anchor now holds the head
    assert log.verify().ok and log.verify().anchor_seq == 6
    after = log.append("login", actor="bob", target="hub", outcome="succeeded")
    assert after["seq"] == 7 and log.verify().ok and log.verify().first_seq == 7


def test_a_moved_anchor_is_found(log, clock, sessions):
    fill(log, 5)
    clock.advance(days=10)
    assert log.prune(5) == 5
    log.append("login", actor="bob", target="hub", outcome="succeeded")
    tamper(sessions, "UPDATE mlplatform_audit_anchor SET seq = 6")
    assert log.verify().problems == ["seq 6: at or before the retention anchor (seq 6): the anchor or the "
                                     "records were changed"]


def test_prune_removes_a_prefix_of_the_chain_even_if_the_clock_went_back(log, clock):
    fill(log, 1)
    clock.advance(days=-20)  # seq 2 is "older" than seq 1: pruning it alone would cut the chain
    fill(log, 1)
    clock.advance(days=25)
    assert log.prune(10) == 0 and log.verify().ok


def test_the_database_refuses_update_and_delete(log, sessions):
    fill(log, 3)
    for statement in ("UPDATE mlplatform_audit SET actor = 'mallory' WHERE seq = 2",
                      "DELETE FROM mlplatform_audit WHERE seq = 2", "DELETE FROM mlplatform_audit"):
        with pytest.raises(DBAPIError, match="the audit log is append-only"), sessions.begin() as session:
            session.execute(text(statement))
    assert [r["actor"] for r in log.query()] == ["alice"] * 3 and log.verify().ok


def test_a_changed_record_is_found(log, sessions):
    fill(log, 5)
    tamper(sessions, "UPDATE mlplatform_audit SET outcome = 'failed' WHERE seq = 3")
    assert log.verify().problems == ["seq 3: hash mismatch (changed)"]


def test_a_changed_and_rehashed_record_is_found_at_its_successor(log, sessions):
    records = fill(log, 5)
    forged = {**records[2], "actor": "mallory"}
    tamper(sessions, f"UPDATE mlplatform_audit SET actor = 'mallory', hash = '{independent_hash(forged)}' "
                     "WHERE seq = 3")
    assert log.verify().problems == ["seq 4: prev_hash does not link to seq 3 (a record before it was removed, "
                                     "reordered, or changed and rehashed)"]


def test_a_removed_record_is_found(log, sessions):
    fill(log, 5)
    tamper(sessions, "DELETE FROM mlplatform_audit WHERE seq IN (2, 3)")
    result = log.verify()
    assert not result.ok and result.problems == ["seq 2 to 3: missing (removed)"]


def test_a_removed_record_with_the_rest_renumbered_is_found(log, sessions):
    fill(log, 5)
    tamper(sessions, "DELETE FROM mlplatform_audit WHERE seq = 2",
           *(f"UPDATE mlplatform_audit SET seq = {seq - 1} WHERE seq = {seq}" for seq in (3, 4, 5)))
    problems = log.verify().problems
    assert problems[0] == "seq 2: holds the record appended as seq 3 (reordered or renumbered)"
    assert len(problems) == 3


def test_reordered_records_are_found(log, sessions):
    fill(log, 6)
    tamper(sessions, "UPDATE mlplatform_audit SET seq = -1 WHERE seq = 2",
           "UPDATE mlplatform_audit SET seq = 2 WHERE seq = 5", "UPDATE mlplatform_audit SET seq = 5 WHERE seq = -1")
    problems = log.verify().problems
    assert "seq 2: holds the record appended as seq 5 (reordered or renumbered)" in problems
    assert "seq 5: holds the record appended as seq 2 (reordered or renumbered)" in problems


def test_a_removed_head_is_seen_against_a_kept_head_hash(log, sessions):
    """The chain alone cannot show a missing last record; the head hash kept elsewhere does."""
    fill(log, 3)
    kept = log.verify().head_hash
    tamper(sessions, "DELETE FROM mlplatform_audit WHERE seq = 3")
    assert log.verify().ok and log.verify().head_hash != kept


def test_verify_lists_the_first_problems_and_counts_all(log, sessions):
    fill(log, MAX_PROBLEMS + 5)
    tamper(sessions, "UPDATE mlplatform_audit SET actor = 'mallory'")
    result = log.verify()
    assert len(result.problems) == MAX_PROBLEMS and result.problem_count == MAX_PROBLEMS + 5


def test_two_processes_appending_at_once_leave_one_gap_free_chain(url, tmp_path):
    connect(url)  # the tables, before the writers race to make them
    concurrent_writers(url, tmp_path)
    assert_one_chain_of_both(AuditLog(connect(url)))


def mlplatform(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hub_config.render.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_cli_verify_exits_0_when_intact_and_1_with_the_problems(log, sessions, url, tmp_path):
    fill(log, 4)
    catalog = yaml.safe_load((ROOT / "hub_config" / "platform.yaml").read_text())
    catalog.setdefault("platform_service", {})["database_url"] = url
    (tmp_path / "platform.yaml").write_text(yaml.safe_dump(catalog))
    done = mlplatform("audit", "verify", "--catalog", str(tmp_path / "platform.yaml"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["audit log intact: 4 records, seq 1 to 4",
                                        f"head hash: {log.verify().head_hash}"]

    tamper(sessions, "UPDATE mlplatform_audit SET target = 'server mallory/' WHERE seq = 2")
    done = mlplatform("audit", "verify", "--database-url", url)
    assert done.returncode == 1
    assert done.stdout.splitlines() == ["audit log NOT intact: 1 problem(s) in 4 records",
                                        "  seq 2: hash mismatch (changed)"]


def test_cli_export_writes_the_filtered_records(log, url, tmp_path):
    fill(log, 2)
    log.append("deploy", actor="bob", target="model team-nlp/bert v1", outcome="succeeded", team="team-nlp")
    out = tmp_path / "audit.csv"
    done = mlplatform("audit", "export", "--database-url", url, "--format", "csv", "--team", "team-nlp",
                      "--since", "2026-05-04", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert [r["target"] for r in csv.DictReader(out.open(newline=""))] == ["model team-nlp/bert v1"]
    done = mlplatform("audit", "export", "--database-url", url, "--format", "jsonl", "--actor", "alice")
    assert [json.loads(line)["seq"] for line in done.stdout.splitlines()] == [1, 2]
    done = mlplatform("audit", "export", "--database-url", url, "--format", "jsonl", "--action", "hack")
    assert done.returncode == 2 and "action filter 'hack': allowed: login" in done.stderr


def test_cli_never_shows_the_database_password_and_never_creates_a_database(tmp_path):
    done = mlplatform("audit", "verify", "--database-url", "postgresql+psycopg://svc:s3cret@127.0.0.1:1/audit")
    assert done.returncode == 2 and "postgresql+psycopg://svc:***@127.0.0.1:1/audit" in done.stderr
    assert "s3cret" not in done.stdout + done.stderr
    done = mlplatform("audit", "verify", "--database-url", f"sqlite:///{tmp_path / 'typo.sqlite'}")
    assert done.returncode == 2 and "no SQLite database at" in done.stderr
    assert not (tmp_path / "typo.sqlite").exists()


def test_cli_verify_names_the_retention_anchor(log, clock, url):
    fill(log, 2)
    clock.advance(days=10)
    fill(log, 1)
    assert log.prune(5) == 2
    done = mlplatform("audit", "verify", "--database-url", url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == ("audit log intact: 1 records, seq 3 to 3, after seq 2 (pruned by "
                                           "retention, up to 2026-05-04T09:00:00.000Z)")
