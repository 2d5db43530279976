"""A real PostgreSQL server for tests and benchmarks: initdb in a temp dir, started on a free port.

    with running_postgres() as url: ...          # "postgresql+psycopg://mlplatform@127.0.0.1:PORT/postgres"

Fixtures: `postgres_server` (one server per test session, its admin URL) and `postgres_url` (a fresh,
empty database on it for each test). PostgreSQL refuses to run as root: as root, the server runs
as the `postgres` user (or `nobody`) through setpriv. fsync is off: nothing here must survive a crash.
`scripts/install --test` installs PostgreSQL where neither PATH nor /usr/lib/postgresql has initdb.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

FIRST_PORT = 21000  # the project's tests use ports from here up
USER = "mlplatform"  # the database superuser initdb makes
_databases = itertools.count(1)


def postgres_bin() -> Path:
    """The folder of initdb and postgres: on PATH, else the newest /usr/lib/postgresql/*/bin (Debian)."""
    if found := shutil.which("initdb"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not versions:
        raise RuntimeError("PostgreSQL's initdb is neither on PATH nor in /usr/lib/postgresql/*/bin: "
                           "run scripts/install --test (it installs Debian's postgresql)")
    return Path(versions[-1]).parent


def free_port(start: int = FIRST_PORT) -> int:
    for port in range(start, start + 1000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port from {start} to {start + 999}")


def _as_server_user() -> tuple[list[str], int | None]:
    """The command prefix that drops root, and the uid to own the files (None: not root, run as is)."""
    if os.geteuid() != 0:
        return [], None
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"], user.pw_uid
    raise RuntimeError("running as root and neither a `postgres` nor a `nobody` user exists to run PostgreSQL")


@contextmanager
def running_postgres(port: int | None = None):
    """Start a throwaway server; yields its admin URL; stops it and removes its files at the end."""
    bin_dir = postgres_bin()
    prefix, uid = _as_server_user()
    # Not under pytest's tmp dirs: they are 0700 root, which the server's user cannot enter.
    base = Path(tempfile.mkdtemp(prefix="mlplatform-postgres-"))
    if uid is not None:
        os.chown(base, uid, -1)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    log = base / "server.log"
    server = None
    try:
        subprocess.run([*prefix, bin_dir / "initdb", "-D", base / "data", "-U", USER, "--auth=trust", "-E", "UTF8",
                        "--locale=C", "--no-sync"], env=env, check=True, capture_output=True)
        port = port or free_port()
        with open(log, "wb") as out:
            server = subprocess.Popen(
                [*prefix, bin_dir / "postgres", "-D", base / "data", "-p", str(port), "-k", base,
                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=50"],
                env=env, stdout=out, stderr=subprocess.STDOUT)
        url = f"postgresql+psycopg://{USER}@127.0.0.1:{port}/postgres"
        _wait_ready(server, port, log)
        yield url
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"initdb failed: {e.stderr.decode(errors='replace')}") from None
    finally:
        if server is not None:
            server.send_signal(2)  # SIGINT: PostgreSQL's fast shutdown (ends sessions, no waiting for clients)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(base, ignore_errors=True)


def _wait_ready(server: subprocess.Popen, port: int, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(host="127.0.0.1", port=port, user=USER, dbname="postgres", connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if server.poll() is not None or time.monotonic() > deadline:
                state = f"exited with {server.returncode}" if server.poll() is not None else "not ready in time"
                raise RuntimeError(f"PostgreSQL on port {port} {state}:\n{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)


def create_database(admin_url: str, name: str) -> str:
    """A new empty database on the server of `admin_url`; returns its URL."""
    host, port = admin_url.rsplit("@", 1)[1].split("/", 1)[0].split(":")
    with psycopg.connect(host=host, port=int(port), user=USER, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server for the session: its admin URL (postgresql+psycopg://...)."""
    with running_postgres() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty database for one test: its SQLAlchemy URL."""
    return create_database(postgres_server, f"test_{os.getpid()}_{next(_databases)}")
