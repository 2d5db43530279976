"""The platform service's database: SQLite for the local platform, PostgreSQL in production.

Every table of the service is declared on `Base`; `connect(url)` makes the engine and the tables
(idempotent). Writers that must be serialized across processes (the audit log's hash chain, budget
reservations) take `write_lock(session)` as the first statement of their transaction: a row lock on
PostgreSQL, `BEGIN IMMEDIATE` (the database's write lock) on SQLite.
"""

from __future__ import annotations

import sqlite3
import time

from sqlalchemy import Engine, String, create_engine, event, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


class Base(DeclarativeBase):
    pass


class Lock(Base):
    """One row per serialized writer (`write_lock`)."""

    __tablename__ = "mlplatform_locks"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)


def connect(url: str) -> sessionmaker[Session]:
    """A session factory on `url`, with every table of the service created."""
    engine = _engine(url)
    with engine.connect() as connection:
        # On SQLite the tables are made in a transaction that holds the write lock from its start: a deferred
        # one reads the schema first, and its upgrade to a writer fails at once ("database is locked", no busy
        # wait) when another process (the hub, the service) made a table meanwhile.
        connection.info["begin"] = "BEGIN IMMEDIATE"
        try:
            Base.metadata.create_all(connection)
            connection.commit()
        finally:
            connection.info.pop("begin", None)
    return sessionmaker(engine, expire_on_commit=False)


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own BEGIN is deferred and late; SQLAlchemy's documented recipe takes over.
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql(conn.info.get("begin", "BEGIN")))
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # transactions begin where the "begin" event says
    cursor = dbapi_connection.cursor()
    _wal(cursor)  # readers do not wait for the writer
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _wal(cursor, attempts: int = 100) -> None:
    """Switch to WAL (kept in the file). A new database's switch needs an exclusive lock, for which SQLite does
    not wait (no busy handler): processes starting together on a new file retry it for a few seconds."""
    for attempt in range(attempts):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


def write_lock(session: Session, name: str) -> None:
    """Serialize the writers of `name` (e.g. "audit") across processes until the transaction ends."""
    # A write, first in the transaction: SQLite takes its one write lock (waiting up to the busy timeout)
    # before the transaction has read anything; PostgreSQL locks the row until commit or rollback.
    session.execute(text("INSERT INTO mlplatform_locks (name) VALUES (:name) "
                         "ON CONFLICT (name) DO UPDATE SET name = excluded.name"), {"name": name})
