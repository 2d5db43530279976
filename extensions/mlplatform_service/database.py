"""The platform service's database: SQLite for the local platform, PostgreSQL in production.

Every table of the service is declared on `Base`; `connect(url)` makes the engine and the tables
(idempotent). Writers that must be serialized across processes (the audit log's hash chain, budget
reservations) take `write_lock(session)` as the first statement of their transaction: a row lock on
PostgreSQL, `BEGIN IMMEDIATE` (the database's write lock) on SQLite.
"""

from __future__ import annotations

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
    Base.metadata.create_all(engine)
    return sessionmaker(engine, expire_on_commit=False)


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own BEGIN is deferred and late; SQLAlchemy's documented recipe takes over.
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # transactions begin where the "begin" event says
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not wait for the writer
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def write_lock(session: Session, name: str) -> None:
    """Serialize the writers of `name` (e.g. "audit") across processes until the transaction ends."""
    # A write, first in the transaction: SQLite takes its one write lock (waiting up to the busy timeout)
    # before the transaction has read anything; PostgreSQL locks the row until commit or rollback.
    session.execute(text("INSERT INTO mlplatform_locks (name) VALUES (:name) "
                         "ON CONFLICT (name) DO UPDATE SET name = excluded.name"), {"name": name})
