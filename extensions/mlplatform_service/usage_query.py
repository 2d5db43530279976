"""Reading the usage endpoints' and the usage page's query arguments: pure functions, plain values in and out.

Every refusal is a ValueError naming the field, the value and what is allowed (the service answers it
with 400 and `{"message": ...}`). Times are UTC; windows are half-open, [since, until).

    since / until     "2026-12-01" (midnight UTC) or an RFC 3339 time with its offset ("2026-12-01T08:00:00Z")
    by                comma-separated: team, user, kind, profile, model, gpu_type, key
    step              day | week (ISO weeks, from Monday)
    month             "2026-12" (the usage page's month picker)
    week              a day of the digest's ISO week ("2026-12-09") or the week ("2026-W50"): Monday to Sunday
    format            the digest's: csv | md
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from .usage import GROUP_FIELDS, period_bounds

STEPS = ("day", "week")
DIGEST_FORMATS = {"csv": "text/csv; charset=utf-8", "md": "text/markdown; charset=utf-8"}
# A chart or series of more buckets than this is refused (each bucket is one query of the ledger).
MAX_BUCKETS = 400


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime

    @property
    def days(self) -> float:
        return (self.until - self.since).total_seconds() / 86400


def parse_time(field: str, value: str) -> datetime:
    """"2026-12-01" → midnight UTC that day; an RFC 3339 time with its offset → that moment (in UTC)."""
    allowed = "a date (2026-12-01, midnight UTC) or an RFC 3339 time with its offset (2026-12-01T08:00:00Z)"
    text = value.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{field} {value!r} is not allowed; allowed: {allowed}") from None
    if moment.tzinfo is None:
        raise ValueError(f"{field} {value!r} has no offset; allowed: {allowed}")
    return moment.astimezone(UTC)


def parse_window(since: str | None, until: str | None, now: datetime) -> Window:
    """The window of `since` and `until`; either left out: the calendar month holding `now` gives it."""
    month_start, month_end = period_bounds("month", now)
    window = Window(parse_time("since", since) if since else month_start,
                    parse_time("until", until) if until else month_end)
    if window.until <= window.since:
        raise ValueError(f"until {window.until.isoformat()} is not after since {window.since.isoformat()}; "
                         "allowed: an until later than since (the window is [since, until))")
    return window


def parse_month(value: str) -> Window:
    """"2026-12" → [2026-12-01, 2027-01-01)."""
    try:
        year, month = (int(part) for part in value.strip().split("-"))
        start = datetime(year, month, 1, tzinfo=UTC)
    except ValueError:
        raise ValueError(f"month {value!r} is not allowed; allowed: a month as YYYY-MM, e.g. 2026-12") from None
    return Window(*period_bounds("month", start))


def parse_day(field: str, value: str) -> datetime:
    """"2026-12-01" → midnight UTC that day (the page's date inputs)."""
    try:
        return datetime.combine(date.fromisoformat(value.strip()), datetime.min.time(), UTC)
    except ValueError:
        raise ValueError(f"{field} {value!r} is not allowed; allowed: a date as YYYY-MM-DD") from None


def parse_page_window(month: str | None, first: str | None, last: str | None, now: datetime) -> Window:
    """The usage page's period: the `month` (default: the one holding `now`), narrowed by the dates
    `first` ("from") and `last` ("to", counted whole: the window ends the day after)."""
    base = parse_month(month) if month else Window(*period_bounds("month", now))
    window = Window(parse_day("from", first) if first else base.since,
                    parse_day("to", last) + timedelta(days=1) if last else base.until)
    if window.until <= window.since:
        raise ValueError(f"to {last or (window.until - timedelta(days=1)).date().isoformat()!r} is before from "
                         f"{first or window.since.date().isoformat()!r}; allowed: a to on or after from")
    return window


def default_week(window: Window, now: datetime) -> datetime:
    """The digest the page links to first: the last complete ISO week of the window (or the one before now)."""
    end = min(window.until, now)
    monday = period_bounds("week", end - timedelta(microseconds=1))[0]
    return monday - timedelta(days=7) if monday + timedelta(days=7) > now else monday


def parse_by(value: str | None, default: tuple[str, ...] = ("team",)) -> tuple[str, ...]:
    """"team,user" → ("team", "user"); each field once, in the order given."""
    if value is None or not value.strip():
        return default
    fields = tuple(part.strip() for part in value.split(","))
    unknown = [f for f in fields if f not in GROUP_FIELDS]
    if unknown or len(set(fields)) != len(fields) or "" in fields:
        raise ValueError(f"by {value!r} is not allowed; allowed: one or more of {', '.join(GROUP_FIELDS)}, "
                         "comma-separated, each once")
    return fields


def parse_step(value: str | None, window: Window) -> str | None:
    """day | week, or None (no series); refused when the window holds more than MAX_BUCKETS of them."""
    if value is None or value == "":
        return None
    if value not in STEPS:
        raise ValueError(f"step {value!r} is not allowed; allowed: {', '.join(STEPS)}")
    buckets = len(bucket_starts(window, value))
    if buckets > MAX_BUCKETS:
        instead = "step week, or a shorter window" if value == "day" else "a shorter window"
        raise ValueError(f"step {value!r} over {window.days:.0f} days makes {buckets} buckets; allowed: at most "
                         f"{MAX_BUCKETS} (choose {instead})")
    return value


def parse_week(value: str | None, now: datetime) -> datetime:
    """The Monday (00:00 UTC) of the ISO week holding the date `value` ("2026-12-09"; an ISO week "2026-W50"
    is its Monday); left out: the last complete week."""
    if value is None or value == "":
        return period_bounds("week", now)[0] - timedelta(days=7)
    try:
        day = date.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"week {value!r} is not allowed; allowed: a date (YYYY-MM-DD) in the week, "
                         "e.g. its Monday 2026-12-07, or an ISO week such as 2026-W50") from None
    return period_bounds("week", datetime.combine(day, datetime.min.time(), UTC))[0]


def parse_format(value: str | None) -> str:
    fmt = value or "csv"
    if fmt not in DIGEST_FORMATS:
        raise ValueError(f"format {value!r} is not allowed; allowed: {', '.join(DIGEST_FORMATS)}")
    return fmt


def bucket_starts(window: Window, step: str) -> list[datetime]:
    """Where each bucket of `step` begins inside the window, as the ledger's `series` labels them: the
    first one at `since` itself, the others at midnight (day) or Monday midnight (week), UTC."""
    day = window.since.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    bucket = day if step == "day" else day - timedelta(days=day.weekday())
    length = timedelta(days=1 if step == "day" else 7)
    starts = []
    while bucket < window.until:
        starts.append(max(bucket, window.since))
        bucket += length
    return starts
