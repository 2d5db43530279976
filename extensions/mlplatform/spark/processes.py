"""Find and signal the processes of a local job by a variable in their environment (Linux /proc).

A process is known by (pid, start time), so a pid reused by another program is never signalled. A
process counts as running while any of its threads runs: a JVM's main thread can exit first on
SIGTERM (a zombie leader, its environ unreadable) while its shutdown hooks still run in other threads.
Without /proc (not Linux) `tagged` finds nothing and callers fall back to the process group.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

PROC = Path("/proc")


def available() -> bool:
    return (PROC / "self" / "stat").exists()


def _stat(path: Path) -> list[str] | None:
    """Fields of a /proc stat file after the command name: [state, ppid, ..., starttime at 19, ...]."""
    try:
        text = path.read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def start_time(pid: int) -> str | None:
    fields = _stat(PROC / str(pid) / "stat")
    return fields[19] if fields else None


def tagged(variable: str, value: str) -> dict[int, str]:
    """{pid: start time} of the processes (other than this one) whose environment has variable=value."""
    if not available():
        return {}
    marker = f"{variable}={value}".encode()
    found = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (marker in (entry / "environ").read_bytes().split(b"\0")
                    and (start := start_time(int(entry.name))) is not None):
                found[int(entry.name)] = start
        except OSError:  # gone, or another user's
            pass
    return found


def running(pid: int, start: str) -> bool:
    """Whether the process (pid, start) still runs: any of its threads is not a zombie."""
    task = PROC / str(pid) / "task"
    if start_time(pid) != start:
        return False
    try:
        threads = list(task.iterdir())
    except OSError:
        return False
    return any((fields := _stat(t / "stat")) and fields[0] not in "ZX" for t in threads)


def send(processes: dict[int, str], sig: signal.Signals) -> None:
    """Signal each process that is still the one recorded."""
    for pid, start in processes.items():
        if start_time(pid) == start:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
