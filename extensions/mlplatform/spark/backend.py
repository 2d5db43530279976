"""What every Spark backend offers (local `spark-submit`, Kubernetes `SparkApplication`).

A backend submits a validated `SparkJob` and answers about it by application id. Every answer is a
plain JSON-serializable dict, so the REST API and the widget pass them on unchanged.

`status()` answers (keys common to all backends; a backend may add its own, e.g. `exit_code`):

    {"app_id": "wordcount-3f9a1c2e", "name": "wordcount", "backend": "local", "user": "alice",
     "state": "RUNNING", "submitted_at": "2026-05-04T09:12:03.482Z", "finished_at": None,
     "ui_url": "http://127.0.0.1:41233", "message": "running on local[2]", "error": None,
     "job": {"name": "wordcount", "main_file": "/home/alice/wordcount.py", "arguments": [...], ...}}

`state` moves SUBMITTED → RUNNING → COMPLETED or FAILED; `cancel()` ends it in CANCELLED. `ui_url` is
the Spark UI while the application runs, else None. `error` is the application's last error line
(e.g. "RuntimeError: the input table is empty") when it failed, else None.
"""

from __future__ import annotations

from typing import Any, Protocol

from .job import SparkJob, SparkJobError

SUBMITTED = "SUBMITTED"  # accepted; the Spark driver is not up yet
RUNNING = "RUNNING"  # the Spark driver runs
COMPLETED = "COMPLETED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
STATES = (SUBMITTED, RUNNING, COMPLETED, FAILED, CANCELLED)
TERMINAL_STATES = frozenset({COMPLETED, FAILED, CANCELLED})
MAX_TAIL = 10_000  # the most log lines one call answers


def check_tail(tail: int | None) -> None:
    """SparkJobError unless `tail` is a number of lines from 1 to MAX_TAIL, or None (all of it)."""
    if tail is not None and (isinstance(tail, bool) or not isinstance(tail, int) or not 1 <= tail <= MAX_TAIL):
        raise SparkJobError("tail", tail, f"is not allowed; give a whole number of lines from 1 to {MAX_TAIL}, "
                                          "or None for the whole log")


class UnknownApplicationError(LookupError):
    """No application with this id (for this user). The REST API answers 404."""


class SparkBackendError(RuntimeError):
    """The backend cannot run Spark jobs here (no Java, no spark-submit, ...). The REST API answers 503."""



class SparkBackend(Protocol):
    name: str

    def main_file(self, main_file: str) -> str:
        """Where this backend finds `main_file` (relative paths: in its working folder); SparkJobError
        naming the field when it cannot, so a form can say so before anything is submitted."""

    def submit(self, job: SparkJob) -> dict[str, Any]:
        """Start `job`; answers its status (state SUBMITTED). Raises SparkJobError before anything starts."""

    def status(self, app_id: str) -> dict[str, Any]:
        """The application's status (see the module docstring)."""

    def logs(self, app_id: str, tail: int | None = 100) -> dict[str, Any]:
        """The driver log's last `tail` lines (all with None): {"app_id", "text", "lines", "truncated"}."""

    def output(self, app_id: str, tail: int | None = 100) -> dict[str, Any]:
        """The last `tail` lines of the program's own output (its prints, warnings and tracebacks, without
        Spark's log4j records), shaped as `logs()` answers."""

    def cancel(self, app_id: str) -> dict[str, Any]:
        """Stop the application (state CANCELLED); a finished one is left as it is. Answers its status."""

    def applications(self) -> list[dict[str, Any]]:
        """The user's applications, newest first, as statuses."""
