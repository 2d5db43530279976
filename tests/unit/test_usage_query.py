"""The usage endpoints' query arguments: windows, groupings, steps, weeks, formats; every refusal names the
field, the value and what is allowed. Bucket starts agree with the ledger's own series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from mlplatform_service.usage_query import (MAX_BUCKETS, Window, bucket_starts, default_week, parse_by, parse_format,
                                            parse_month, parse_page_window, parse_step, parse_time, parse_week,
                                            parse_window)

from .test_usage_ledger import Setup, server, utc

NOW = utc(2026, 12, 9, 15, 30)  # a Wednesday


def test_times_are_dates_at_midnight_utc_or_rfc3339_with_an_offset():
    assert parse_time("since", "2026-12-01") == utc(2026, 12, 1)
    assert parse_time("since", "2026-12-01T08:00:00Z") == utc(2026, 12, 1, 8)
    assert parse_time("until", "2026-12-01T09:00:00+01:00") == utc(2026, 12, 1, 8)
    assert parse_time("until", "2026-12-01T09:00:00+01:00").tzinfo == UTC
    for bad, why in (("yesterday", "is not allowed"), ("2026-13-01", "is not allowed"),
                     ("2026-12-01T08:00:00", "has no offset")):
        with pytest.raises(ValueError) as e:
            parse_time("since", bad)
        assert str(e.value).startswith(f"since {bad!r} {why}; allowed: a date (2026-12-01")


def test_the_window_defaults_to_the_current_month_and_must_not_be_empty():
    assert parse_window(None, None, NOW) == Window(utc(2026, 12, 1), utc(2027, 1, 1))
    assert parse_window("2026-12-07", None, NOW) == Window(utc(2026, 12, 7), utc(2027, 1, 1))
    assert parse_window("2026-11-01", "2026-11-08", NOW).days == 7
    with pytest.raises(ValueError, match=r"^until 2026-12-01T00:00:00\+00:00 is not after since 2026-12-01T00:00"):
        parse_window("2026-12-01", "2026-12-01", NOW)


def test_the_page_window_is_a_month_narrowed_by_whole_days():
    assert parse_page_window(None, None, None, NOW) == Window(utc(2026, 12, 1), utc(2027, 1, 1))
    assert parse_page_window("2025-03", None, None, NOW) == Window(utc(2025, 3, 1), utc(2025, 4, 1))
    assert parse_page_window("2025-03", "2025-03-10", "2025-03-16", NOW) == Window(utc(2025, 3, 10), utc(2025, 3, 17))
    assert parse_page_window(None, None, "2026-12-01", NOW) == Window(utc(2026, 12, 1), utc(2026, 12, 2))
    with pytest.raises(ValueError, match=r"^month '2025-13' is not allowed; allowed: a month as YYYY-MM"):
        parse_month("2025-13")
    with pytest.raises(ValueError, match=r"^to '2026-12-0x' is not allowed; allowed: a date as YYYY-MM-DD"):
        parse_page_window(None, None, "2026-12-0x", NOW)
    with pytest.raises(ValueError, match=r"^to '2026-12-02' is before from '2026-12-05'"):
        parse_page_window(None, "2026-12-05", "2026-12-02", NOW)


def test_by_takes_the_ledgers_group_fields_each_once():
    assert parse_by(None) == ("team",)
    assert parse_by("team, user,model") == ("team", "user", "model")
    for bad in ("team,colour", "team,team", "team,", "<b>"):
        with pytest.raises(ValueError) as e:
            parse_by(bad)
        assert str(e.value) == (f"by {bad!r} is not allowed; allowed: one or more of team, user, kind, profile, "
                                "model, gpu_type, key, comma-separated, each once")


def test_step_is_day_or_week_within_the_bucket_limit():
    december = Window(utc(2026, 12, 1), utc(2027, 1, 1))
    assert (parse_step(None, december), parse_step("", december), parse_step("week", december)) == (None, None, "week")
    with pytest.raises(ValueError, match=r"^step 'month' is not allowed; allowed: day, week$"):
        parse_step("month", december)
    years = Window(utc(2025, 1, 1), utc(2030, 1, 1))
    assert parse_step("week", years) == "week"
    with pytest.raises(ValueError, match=rf"^step 'day' over 1826 days makes 1826 buckets; allowed: at most "
                                         rf"{MAX_BUCKETS} \(choose step week, or a shorter window\)"):
        parse_step("day", years)
    with pytest.raises(ValueError, match=r"^step 'week' over 3653 days makes 523 buckets; .* \(choose a shorter window\)"):
        parse_step("week", Window(utc(2020, 1, 1), utc(2030, 1, 1)))


def test_the_digest_week_is_the_monday_of_the_week_given_or_the_last_complete_one():
    assert parse_week(None, NOW) == utc(2026, 11, 30)
    assert parse_week("2026-12-09", NOW) == parse_week("2026-12-07", NOW) == utc(2026, 12, 7)
    assert parse_week("2026-W50", NOW) == utc(2026, 12, 7)
    with pytest.raises(ValueError, match=r"^week 'last' is not allowed; allowed: a date \(YYYY-MM-DD\) in the week"):
        parse_week("last", NOW)


def test_the_page_links_the_last_complete_week_of_its_period():
    assert default_week(Window(utc(2026, 12, 1), utc(2027, 1, 1)), NOW) == utc(2026, 11, 30)  # now: week 50 runs
    assert default_week(Window(utc(2025, 3, 1), utc(2025, 4, 1)), NOW) == utc(2025, 3, 31)   # ends after March
    assert default_week(Window(utc(2025, 3, 1), utc(2025, 3, 10)), NOW) == utc(2025, 3, 3)


def test_the_digest_format_is_csv_or_markdown():
    assert (parse_format(None), parse_format("csv"), parse_format("md")) == ("csv", "csv", "md")
    with pytest.raises(ValueError, match=r"^format 'pdf' is not allowed; allowed: csv, md$"):
        parse_format("pdf")


@pytest.mark.parametrize("step", ["day", "week"])
def test_bucket_starts_are_the_starts_of_the_ledgers_series(tmp_path, step):
    s = Setup(f"sqlite:///{tmp_path}/platform.sqlite", utc(2026, 12, 30))
    server(s.ledger, gpus=1, at=utc(2026, 11, 20))
    window = Window(datetime(2026, 12, 2, 18, tzinfo=timezone(timedelta(hours=2))), utc(2026, 12, 24, 12))
    points = s.ledger.series(window.since, window.until, step=step)
    starts = bucket_starts(window, step)
    assert [p["start"] for p in points] == starts
    assert starts[0] == window.since and len(starts) == (23 if step == "day" else 4)
