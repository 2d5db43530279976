"""What the local backends share: processes found and signalled with psutil, private directories,
state files written atomically under a file lock, and polling until something holds.

A process is known by (pid, create time), so a pid reused by another program is never signalled. A
process counts as running while any of its threads runs: a JVM's main thread can exit first on
SIGTERM (a zombie leader, its environment unreadable) while its shutdown hooks still run.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from mlplatform_core.files import read_json, write_json, write_text  # noqa: F401  (localhost.write_json, ...)

_GONE = (psutil.NoSuchProcess, psutil.AccessDenied)


# --- processes ---------------------------------------------------------------------------------
def start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except _GONE:
        return None


def tagged(variable: str, value: str) -> dict[int, float]:
    """{pid: create time} of the processes (other than this one) whose environment has variable=value."""
    return tagged_by(variable).get(value, {})


def tagged_by(variable: str) -> dict[str, dict[int, float]]:
    """{value: {pid: create time}} of the processes (other than this one) that have `variable` in their
    environment: one scan for many values."""
    found: dict[str, dict[int, float]] = {}
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            value = proc.environ().get(variable)
            if value is not None:
                found.setdefault(value, {})[proc.pid] = proc.create_time()
        except _GONE:
            pass
    return found


def running(pid: int, start: float | None = None) -> bool:
    """Whether the process (pid, start) still runs: it, or any of its threads, is not a zombie."""
    try:
        proc = psutil.Process(pid)
        if start is not None and proc.create_time() != start:
            return False
        if proc.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return True
        threads = [t.id for t in proc.threads() if t.id != pid]
    except _GONE:
        return False
    return any(_thread_runs(tid) for tid in threads)


def _thread_runs(tid: int) -> bool:
    try:
        return psutil.Process(tid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except _GONE:
        return False


def send(processes: dict[int, float], sig: signal.Signals) -> None:
    """Signal each process that is still the one recorded."""
    for pid, start in processes.items():
        if start_time(pid) == start:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is left in process group `pgid`."""
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, *_GONE):
            continue
    return False


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# --- state files -------------------------------------------------------------------------------
class UnsafeDirectory(PermissionError):
    """A directory that another user owns or may read or write: state and sockets are not put there."""


def private_directory(path: Path, *, create: bool = True) -> Path:
    """`path`, a directory of this user that nobody else may use: created 0700 when missing (with
    `create`), refused with UnsafeDirectory when it is a symbolic link or not a directory, owned by
    another user, or open to the group or others. Refusing, not repairing: a directory someone else
    made (a predictable name in /tmp) may hold their files, or be theirs to swap."""
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)  # umask can only take bits away
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise UnsafeDirectory(f"refusing to use {path}: it does not exist") from None
    if not stat.S_ISDIR(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a directory"
        raise UnsafeDirectory(f"refusing to use {path}: it is {kind}; allowed: a directory of your own with "
                              "mode 0700. Remove it, or choose another directory")
    if st.st_uid != os.geteuid():
        raise UnsafeDirectory(f"refusing to use {path}: it belongs to uid {st.st_uid}, not to this user (uid "
                              f"{os.geteuid()}); allowed: a directory of your own with mode 0700. Choose another "
                              "directory (or have its owner remove it)")
    if st.st_mode & 0o077:
        raise UnsafeDirectory(f"refusing to use {path}: its mode is {stat.S_IMODE(st.st_mode):04o} (the group or "
                              f"others may use it); allowed: 0700 (only you). Run `chmod 700 {path}` if what it "
                              "holds is yours alone, or choose another directory")
    return path


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive flock on `path` (created if missing) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def tail_text(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


# --- polling -----------------------------------------------------------------------------------
def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.2,
               first: float | None = None) -> bool:
    """Call `predicate` until it holds (True) or `timeout` seconds pass (False). `first`: the first
    wait, growing by a tenth each time up to `interval` (what happens within seconds is seen at once)."""
    deadline = time.monotonic() + timeout
    waits = poll_intervals(interval, first)
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(next(waits))


def poll_intervals(interval: float, first: float | None = None) -> Iterator[float]:
    """Waits between polls: `first`, growing by a tenth each time up to `interval` (from 0.1 to 1 s:
    24 polls in 10 s); only `interval` without `first`."""
    wait = interval if first is None else min(first, interval)
    while True:
        yield wait
        wait = min(interval, wait * 1.1)
