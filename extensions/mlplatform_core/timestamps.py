"""The platform's one timestamp format: RFC 3339 in UTC, to the millisecond ("2026-05-04T09:12:03.482Z").

Strings in this format sort in time order, which the backends rely on to list newest first.
"""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> str:
    return format_time(datetime.now(UTC))


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
