"""The audit log: append-only and hash-chained, in the service's database.

Each record holds `hash = sha256(prev_hash + canonical JSON of its other fields)`, where the
canonical JSON is `json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`
encoded as UTF-8 and `details` is a JSON object inside it. The first record links to `GENESIS`.
Anyone can recompute the chain from an export: a changed, removed or reordered record breaks it.

The database refuses UPDATE and DELETE on the table itself (triggers), except the DELETE of
`prune`, which marks its own transaction in `mlplatform_audit_pruning` and leaves the seq and hash
of the last pruned record in `mlplatform_audit_anchor`, where `verify` starts. Someone with SQL
access can drop the triggers; `verify` still finds what they changed. What the chain alone cannot
show is a rewrite from some record to the head, or the oldest records removed with the anchor moved
to match: `verify` reports the head's hash and the anchor's seq and time for that; keep the head
hash somewhere else (a ticket, another system) and compare.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from mlplatform_core.timestamps import format_time
from sqlalchemy import DDL, BigInteger, Integer, String, Text, delete, event, func, insert, select
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from .database import Base, write_lock

ACTIONS = ("login", "spawn", "stop", "credentials", "deploy", "redeploy", "delete", "submit", "cancel",
           "promote", "rollback", "rollout", "budget-refusal", "budget-override")
# admitted: the API server's admission let a write through (it may still fail to store it)
OUTCOMES = ("intent", "succeeded", "failed", "refused", "admitted")
GENESIS = "0" * 64  # the prev_hash of the first record ever appended
FORMATS = ("csv", "jsonl")
FIELDS = ("seq", "time", "actor", "action", "team", "target", "outcome", "details", "prev_hash", "hash")
MAX_PROBLEMS = 10  # verify lists this many problems; the count covers them all
# A record whose hash fails is tried at this many seqs either side: found there, it was moved (reordered).
REORDER_WINDOW = 64
_STREAM = 5000  # rows per fetch when streaming (server-side cursor on PostgreSQL)


class AuditRecord(Base):
    __tablename__ = "mlplatform_audit"
    # INTEGER on SQLite: the rowid itself, the cheapest key there.
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                     autoincrement=False)
    time: Mapped[str] = mapped_column(String(24), index=True)  # RFC 3339 UTC, ms: sorts in time order
    actor: Mapped[str] = mapped_column(String(255), index=True)
    action: Mapped[str] = mapped_column(String(32))
    team: Mapped[str | None] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16))
    details: Mapped[str] = mapped_column(Text)  # canonical JSON object
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditAnchor(Base):
    """Where the chain starts after `prune`: the seq, hash and time of the last pruned record (one row)."""

    __tablename__ = "mlplatform_audit_anchor"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    time: Mapped[str] = mapped_column(String(24))


class AuditPruning(Base):
    """Holds a row only inside `prune`'s transaction: the one DELETE the triggers let through."""

    __tablename__ = "mlplatform_audit_pruning"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)


_REFUSED = "the audit log is append-only"
_SQLITE_TRIGGERS = (
    f"CREATE TRIGGER mlplatform_audit_no_update BEFORE UPDATE ON mlplatform_audit "
    f"BEGIN SELECT RAISE(ABORT, '{_REFUSED}: UPDATE refused'); END",
    f"CREATE TRIGGER mlplatform_audit_no_delete BEFORE DELETE ON mlplatform_audit "
    f"WHEN NOT EXISTS (SELECT 1 FROM mlplatform_audit_pruning) "
    f"BEGIN SELECT RAISE(ABORT, '{_REFUSED}: DELETE refused (only retention prunes it)'); END",
)
_POSTGRES_TRIGGERS = (  # %% is one %: DDL() formats its statement
    f"""CREATE OR REPLACE FUNCTION mlplatform_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'DELETE' AND EXISTS (SELECT 1 FROM mlplatform_audit_pruning) THEN
        RETURN OLD;
      END IF;
      RAISE EXCEPTION '{_REFUSED}: %% refused', TG_OP;
    END $$""",
    "CREATE TRIGGER mlplatform_audit_append_only BEFORE UPDATE OR DELETE ON mlplatform_audit "
    "FOR EACH ROW EXECUTE FUNCTION mlplatform_audit_append_only()",
    "CREATE TRIGGER mlplatform_audit_no_truncate BEFORE TRUNCATE ON mlplatform_audit "
    "FOR EACH STATEMENT EXECUTE FUNCTION mlplatform_audit_append_only()",
)
# With the table, so they are made once, by whoever creates the table (and SQLite resolves the
# pruning table a trigger reads when it fires, not when it is created).
for _statement in _SQLITE_TRIGGERS:
    event.listen(AuditRecord.__table__, "after_create", DDL(_statement).execute_if(dialect="sqlite"))
for _statement in _POSTGRES_TRIGGERS:
    event.listen(AuditRecord.__table__, "after_create", DDL(_statement).execute_if(dialect="postgresql"))
_TABLES = [AuditRecord.__table__, AuditAnchor.__table__, AuditPruning.__table__]
_COLUMNS = [getattr(AuditRecord, name) for name in FIELDS]


def canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


_string = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) writes for a str


def record_hash(prev_hash: str, record: dict) -> str:
    """The hash of `record` (its fields other than prev_hash and hash; details a dict or its canonical JSON)."""
    details = record["details"]
    details = details if isinstance(details, str) else canonical_json(details)
    # canonical_json of the fields written out (keys in sorted order), details' text inlined: the same
    # bytes without parsing details back, which verify would do a million times (5x slower).
    team = "null" if record["team"] is None else _string(record["team"])
    body = (f'{{"action":{_string(record["action"])},"actor":{_string(record["actor"])},"details":{details},'
            f'"outcome":{_string(record["outcome"])},"seq":{record["seq"]:d},"target":{_string(record["target"])},'
            f'"team":{team},"time":{_string(record["time"])}}}')
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int  # records read
    first_seq: int | None
    last_seq: int | None
    head_hash: str  # the hash a next record would link to: compare with a copy kept elsewhere
    anchor_seq: int = 0  # records up to this seq were pruned (0: none)
    anchor_time: str | None = None  # the time of the last pruned record
    problems: list[str] = field(default_factory=list)  # the first MAX_PROBLEMS
    problem_count: int = 0


class AuditLog:
    """The audit log on `sessions` (from `database.connect`); `clock` returns an aware UTC datetime."""

    def __init__(self, sessions: sessionmaker[Session], *, clock: Callable[[], datetime] | None = None):
        self._sessions = sessions
        self._clock = clock or (lambda: datetime.now(UTC))
        # Also when the service's other tables were created before this module was imported.
        Base.metadata.create_all(sessions.kw["bind"], tables=_TABLES)

    def append(self, action: str, *, actor: str, target: str, outcome: str, team: str | None = None,
               details: dict | None = None) -> dict:
        """Append one record (its own transaction) and return it as stored."""
        record = _checked(action=action, actor=actor, target=target, outcome=outcome, team=team,
                          details={} if details is None else details)
        with self._sessions.begin() as session:
            write_lock(session, "audit")  # one writer at a time: seq and prev_hash come from the head
            seq, prev_hash = _head(session)
            record = {"seq": seq + 1, "time": self._now(), **record}
            record["prev_hash"], record["hash"] = prev_hash, record_hash(prev_hash, record)
            session.execute(insert(AuditRecord).values({**record, "details": canonical_json(record["details"])}))
        return record

    def query(self, *, since: datetime | str | None = None, until: datetime | str | None = None,
              actor: str | None = None, team: str | None = None, action: str | None = None,
              target: str | None = None, outcome: str | None = None, after_seq: int | None = None,
              limit: int = 1000) -> list[dict]:
        """Matching records, oldest first: since ≤ time < until, `target` a substring, seq > after_seq."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit {limit!r}: allowed: a whole number of at least 1")
        statement = _filtered(since=since, until=until, actor=actor, team=team, action=action, target=target,
                              outcome=outcome, after_seq=after_seq).limit(limit)
        with self._sessions() as session:
            return [_as_dict(row) for row in session.execute(statement)]

    def export(self, fmt: str, **filters) -> Iterator[str]:
        """Text chunks of every matching record (the filters of `query`, without limit), as CSV or JSON lines."""
        if fmt not in FORMATS:
            raise ValueError(f"export format {fmt!r}: allowed: {', '.join(FORMATS)}")
        statement = _filtered(**filters)  # refuses bad filters now, not at the first chunk
        return self._export(fmt, statement)

    def _export(self, fmt: str, statement) -> Iterator[str]:
        if fmt == "csv":
            yield ",".join(FIELDS) + "\r\n"
        with self._sessions() as session:
            for rows in session.execute(statement.execution_options(yield_per=_STREAM)).partitions():
                out = io.StringIO()
                if fmt == "csv":
                    csv.writer(out).writerows(rows)  # details stays its canonical JSON text
                else:
                    out.writelines(canonical_json(_as_dict(row)) + "\n" for row in rows)
                yield out.getvalue()

    def verify(self) -> VerifyResult:
        """Recompute the chain from the anchor (or GENESIS) to the head, streaming."""
        problems: list[str] = []
        checked, first, expected_seq = 0, None, None
        with self._sessions() as session:
            _snapshot(session)  # the anchor and the records as of one moment, though prune may run
            anchor = session.execute(select(AuditAnchor.seq, AuditAnchor.hash, AuditAnchor.time)).first()
            anchor_seq, prev_hash, anchor_time = anchor if anchor else (0, GENESIS, None)
            expected_seq = anchor_seq + 1
            statement = select(*_COLUMNS).order_by(AuditRecord.seq).execution_options(yield_per=_STREAM)
            for row in session.execute(statement):
                record = dict(zip(FIELDS, row))  # details stays the stored text: hashed as stored
                seq, checked = record["seq"], checked + 1
                first = seq if first is None else first
                problems.extend(_check(record, expected_seq, prev_hash))
                prev_hash, expected_seq = record["hash"], seq + 1
        return VerifyResult(ok=not problems, checked=checked, first_seq=first,
                            last_seq=expected_seq - 1 if checked else None, head_hash=prev_hash,
                            anchor_seq=anchor_seq, anchor_time=anchor_time, problems=problems[:MAX_PROBLEMS],
                            problem_count=len(problems))

    def prune(self, retention_days: int) -> int:
        """Delete the records older than `retention_days` (a prefix of the chain); returns how many."""
        if isinstance(retention_days, bool) or not isinstance(retention_days, int) or retention_days < 1:
            raise ValueError(f"retention_days {retention_days!r}: allowed: a whole number of days, at least 1")
        cutoff = format_time(self._aware(self._clock()) - timedelta(days=retention_days))
        with self._sessions.begin() as session:
            write_lock(session, "audit")
            # Up to the first record inside the retention: the chain stays one piece even if the
            # clock ever went back.
            keep_from = session.scalar(select(func.min(AuditRecord.seq)).where(AuditRecord.time >= cutoff))
            last = select(AuditRecord.seq, AuditRecord.hash, AuditRecord.time).order_by(AuditRecord.seq.desc())
            if keep_from is not None:
                last = last.where(AuditRecord.seq < keep_from)
            last = session.execute(last.limit(1)).first()
            if last is None:
                return 0
            session.execute(insert(AuditPruning).values(id=1))  # never visible outside this transaction
            pruned = session.execute(delete(AuditRecord.__table__).where(AuditRecord.seq <= last.seq)).rowcount
            session.execute(delete(AuditPruning.__table__))
            session.execute(delete(AuditAnchor.__table__))
            session.execute(insert(AuditAnchor).values(id=1, seq=last.seq, hash=last.hash, time=last.time))
        return pruned

    def _now(self) -> str:
        return format_time(self._aware(self._clock()))

    @staticmethod
    def _aware(moment: datetime) -> datetime:
        if not isinstance(moment, datetime) or moment.tzinfo is None:
            raise ValueError(f"the audit log's clock returned {moment!r}: allowed: a timezone-aware datetime")
        return moment


def _checked(*, action, actor, target, outcome, team, details) -> dict:
    """The record's fields, or ValueError naming the field, the value and what is allowed."""
    if action not in ACTIONS:
        raise ValueError(f"audit action {action!r}: allowed: {', '.join(ACTIONS)}")
    if outcome not in OUTCOMES:
        raise ValueError(f"audit outcome {outcome!r}: allowed: {', '.join(OUTCOMES)}")
    for name, value, most in (("actor", actor, 255), ("target", target, None)):
        if not isinstance(value, str) or not value.strip() or (most and len(value) > most):
            limit = f" of at most {most} characters" if most else ""
            raise ValueError(f"audit {name} {value!r}: allowed: a non-empty string{limit}")
    if team is not None and (not isinstance(team, str) or not team or len(team) > 64):
        raise ValueError(f"audit team {team!r}: allowed: a team name (1 to 64 characters) or None")
    if not isinstance(details, dict) or not all(isinstance(key, str) for key in details):
        raise ValueError(f"audit details {details!r}: allowed: a JSON object (a dict with string keys)")
    try:
        details = json.loads(canonical_json(details))  # as it is stored and read back
    except (TypeError, ValueError) as e:
        raise ValueError(f"audit details {details!r}: allowed: JSON values only (strings, finite numbers, "
                         f"booleans, null, lists, objects): {e}") from None
    for name, value in (("actor", actor), ("target", target), ("team", team), ("details", details)):
        try:
            canonical_json(value).encode()  # the hash is over UTF-8
        except UnicodeEncodeError:
            raise ValueError(f"audit {name} {value!r}: allowed: text without lone surrogates (UTF-8)") from None
    return {"actor": actor, "action": action, "team": team, "target": target, "outcome": outcome,
            "details": details}


def _head(session: Session) -> tuple[int, str]:
    head = session.execute(select(AuditRecord.seq, AuditRecord.hash).order_by(AuditRecord.seq.desc())
                           .limit(1)).first()
    head = head or session.execute(select(AuditAnchor.seq, AuditAnchor.hash)).first()
    return tuple(head) if head else (0, GENESIS)


def _moment(name: str, value: datetime | str) -> str:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{name} {value!r}: allowed: an RFC 3339 time with its offset, "
                             "e.g. 2026-05-04T09:12:03Z") from None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"{name} {value!r}: allowed: a timezone-aware datetime or RFC 3339 time with its offset")
    return format_time(value)


def _filtered(*, since=None, until=None, actor=None, team=None, action=None, target=None, outcome=None,
              after_seq=None):
    if action is not None and action not in ACTIONS:
        raise ValueError(f"action filter {action!r}: allowed: {', '.join(ACTIONS)}")
    if outcome is not None and outcome not in OUTCOMES:
        raise ValueError(f"outcome filter {outcome!r}: allowed: {', '.join(OUTCOMES)}")
    statement = select(*_COLUMNS).order_by(AuditRecord.seq)
    if since is not None:
        statement = statement.where(AuditRecord.time >= _moment("since", since))
    if until is not None:
        statement = statement.where(AuditRecord.time < _moment("until", until))
    for column, value in ((AuditRecord.actor, actor), (AuditRecord.team, team), (AuditRecord.action, action),
                          (AuditRecord.outcome, outcome)):
        if value is not None:
            statement = statement.where(column == value)
    if target is not None:
        statement = statement.where(AuditRecord.target.contains(target, autoescape=True))
    if after_seq is not None:
        statement = statement.where(AuditRecord.seq > after_seq)
    return statement


def _as_dict(row) -> dict:
    record = dict(zip(FIELDS, row))
    record["details"] = json.loads(record["details"])
    return record


def _snapshot(session: Session) -> None:
    # SQLite's read transaction is one snapshot already (WAL); PostgreSQL's READ COMMITTED is not.
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def _check(record: dict, expected_seq: int, prev_hash: str) -> list[str]:
    """What is wrong with `record`, read after a record whose hash is `prev_hash`."""
    seq = record["seq"]
    problems = []
    if seq < expected_seq:  # only the first record can be: the anchor says this seq was pruned
        problems.append(f"seq {seq}: at or before the retention anchor (seq {expected_seq - 1}): the anchor "
                        "or the records were changed")
    elif seq != expected_seq:
        missing = f"seq {expected_seq}" if seq == expected_seq + 1 else f"seq {expected_seq} to {seq - 1}"
        problems.append(f"{missing}: missing (removed)")
    if record_hash(record["prev_hash"], record) != record["hash"]:
        moved = _appended_as(record)
        if moved is None:
            problems.append(f"seq {seq}: hash mismatch (changed)")
        else:
            problems.append(f"seq {seq}: holds the record appended as seq {moved} (reordered or renumbered)")
        return problems
    if record["prev_hash"] != prev_hash and seq == expected_seq:
        problems.append(f"seq {seq}: prev_hash does not link to seq {seq - 1} (a record before it was "
                        "removed, reordered, or changed and rehashed)")
    return problems


def _appended_as(record: dict) -> int | None:
    """The seq the record's hash holds for, if near its place (a moved record), else None."""
    for distance in range(1, REORDER_WINDOW + 1):
        for seq in (record["seq"] + distance, record["seq"] - distance):
            if seq > 0 and record_hash(record["prev_hash"], {**record, "seq": seq}) == record["hash"]:
                return seq
    return None
