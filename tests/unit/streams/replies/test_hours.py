"""Business hours as full schedules: split days, closed days, days open around the clock,
holidays and DST days, with values worked out by hand (2026-01-01 is a Thursday; Berlin is
UTC+1 in winter, UTC+2 in summer, and changes on Sunday 2026-03-29 and Sunday 2026-10-25)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from schemas.accounts import Schedule
from streams.replies.hours import (
    BusinessHours,
    business_deadline,
    business_seconds,
    from_schedule,
    parse_hours,
    weekday_hour,
    zone,
)

H = 3600
WEEKDAYS = {d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")}


def utc(y: int, m: int, d: int, hour: int = 0, minute: int = 0) -> int:
    return int(datetime(y, m, d, hour, minute, tzinfo=UTC).timestamp() * 1000)


def local(tz: str, y: int, m: int, d: int) -> int:
    """Epoch ms of a local midnight."""
    return int(datetime(y, m, d, tzinfo=ZoneInfo(tz)).timestamp() * 1000)


def test_split_day_counts_only_the_open_ranges():
    hours = from_schedule(Schedule(mon=["09:00-12:00", "13:00-17:00"]))
    msg, reply = utc(2026, 3, 2, 11, 30), utc(2026, 3, 2, 13, 30)  # a Monday
    assert business_seconds(msg, reply, hours) == 60 * 60  # 11:30-12:00 and 13:00-13:30
    assert business_deadline(msg, 60 * 60, hours) == reply
    assert business_deadline(msg, 30 * 60, hours) == utc(2026, 3, 2, 12, 0)  # exactly the lunch break's start
    assert business_seconds(utc(2026, 3, 2), utc(2026, 3, 3), hours) == 7 * H


def test_friday_afternoon_to_monday_morning_skips_the_closed_weekend_in_berlin():
    hours = from_schedule(Schedule(**WEEKDAYS), "Europe/Berlin")
    fri_1600 = utc(2026, 1, 16, 15)  # 16:00 CET
    mon_1000 = utc(2026, 1, 19, 9)  # 10:00 CET
    assert business_seconds(fri_1600, mon_1000, hours) == 2 * H
    assert business_deadline(fri_1600, 2 * H, hours) == mon_1000
    assert weekday_hour(fri_1600, hours.tz) == (4, 16)


def test_holiday_is_closed_all_day():
    schedule = Schedule(**WEEKDAYS, holidays=["2026-12-25"])  # a Friday
    hours, without = from_schedule(schedule, "Europe/Berlin"), from_schedule(Schedule(**WEEKDAYS), "Europe/Berlin")
    thu_1600, mon_1000 = utc(2026, 12, 24, 15), utc(2026, 12, 28, 9)
    assert business_seconds(thu_1600, mon_1000, hours) == 2 * H  # 1 h Thursday, 1 h Monday
    assert business_seconds(thu_1600, mon_1000, without) == 10 * H  # plus Friday's 8 h


def test_deadline_crosses_a_closed_weekend_and_a_holiday():
    hours = from_schedule(Schedule(**WEEKDAYS, holidays=["2026-12-25"]), "Europe/Berlin")
    thu_1630 = utc(2026, 12, 24, 15, 30)
    # 30 min on Thursday, Friday a holiday, the weekend closed, 1 h 30 on Monday: 10:30 CET
    assert business_deadline(thu_1630, 2 * H, hours) == utc(2026, 12, 28, 9, 30)
    assert business_seconds(thu_1630, utc(2026, 12, 28, 9, 30), hours) == 2 * H


def test_a_day_open_all_day_counts_24_hours():
    hours = from_schedule(Schedule(mon=["09:00-17:00"], sun="open"))
    sat_1200, mon_1000 = utc(2026, 1, 17, 12), utc(2026, 1, 19, 10)
    assert business_seconds(utc(2026, 1, 18), utc(2026, 1, 19), hours) == 24 * H
    assert business_seconds(sat_1200, mon_1000, hours) == 24 * H + 1 * H
    # Sunday closes at 24:00 and Monday opens at 09:00
    assert business_deadline(sat_1200, 24 * H + 30 * 60, hours) == utc(2026, 1, 19, 9, 30)


def test_open_all_day_on_berlin_dst_sundays_is_23_and_25_hours():
    hours = from_schedule(Schedule(sun="open"), "Europe/Berlin")
    week = 7 * 86_400_000
    # from Sunday 03-22 00:00 CET to Sunday 04-05 00:00 CEST: a 24-hour and the 23-hour Sunday
    assert business_seconds(utc(2026, 3, 21, 23), utc(2026, 4, 4, 22), hours) == 24 * H + 23 * H
    autumn = utc(2026, 10, 24, 22)  # Sunday 00:00 CEST
    assert business_seconds(autumn, autumn + week, hours) == 25 * H
    assert business_deadline(autumn, 25 * H, hours) == utc(2026, 10, 25, 23)  # Monday 00:00 CET


def test_ranges_spanning_the_dst_change_count_real_time():
    def day(ranges: list[str], start: int, end: int) -> float:
        return business_seconds(start, end, from_schedule(Schedule(sun=ranges), "Europe/Berlin"))

    spring = (utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))  # the 23-hour Sunday
    assert day(["01:00-04:00"], *spring) == 2 * H  # 02:00-03:00 never happens
    assert day(["02:00-03:00"], *spring) == 0
    assert day(["02:30-04:00"], *spring) == 1 * H  # opens when the clock jumps to 03:00
    assert day(["01:00-02:30"], *spring) == 1 * H  # closes at the jump, not half an hour later
    autumn = (utc(2026, 10, 24, 22), utc(2026, 10, 25, 23))  # the 25-hour Sunday
    assert day(["01:00-04:00"], *autumn) == 4 * H  # 02:00-03:00 happens twice
    assert day(["02:00-03:00"], *autumn) == 2 * H

    hours = from_schedule(Schedule(sun=["01:00-04:00"]), "Europe/Berlin")
    # 01:00 CET is 00:00 UTC; 90 min later the clock shows 03:30 CEST
    assert business_deadline(spring[0], 90 * 60, hours) == utc(2026, 3, 29, 1, 30)


def test_a_year_of_weekdays_in_berlin_is_261_days_of_8_hours_minus_holidays():
    year = (local("Europe/Berlin", 2026, 1, 1), local("Europe/Berlin", 2027, 1, 1))
    assert business_seconds(*year, from_schedule(Schedule(**WEEKDAYS), "Europe/Berlin")) == 261 * 8 * H
    with_holidays = Schedule(**WEEKDAYS, holidays=["2026-01-01", "2026-12-25", "2026-12-26"])  # Thu, Fri, Sat
    assert business_seconds(*year, from_schedule(with_holidays, "Europe/Berlin")) == 259 * 8 * H


def test_legacy_text_still_works():
    hours = parse_hours("mon-fri 09:00-17:00", "Europe/Paris")
    assert hours.week == (((540, 1020),),) * 5 + ((), ())
    assert hours.holidays == frozenset() and hours.tz == zone("Europe/Paris")
    assert hours == from_schedule(Schedule(**WEEKDAYS), "Europe/Paris")

    wrap = parse_hours("fri-mon 08:00-12:00")  # wraps the week: fri, sat, sun, mon
    assert wrap.week == (((480, 720),),) + ((),) * 3 + (((480, 720),),) * 3
    thu, tue = utc(2026, 1, 15), utc(2026, 1, 20)
    assert business_seconds(thu, tue, wrap) == 4 * 4 * H
    assert business_deadline(thu, 5 * H, wrap) == utc(2026, 1, 17, 9)  # 4 h Friday, 1 h Saturday


@pytest.mark.parametrize(
    ("text", "tz", "message"),
    [
        ("mon-fri 9-17", "UTC", "use e.g. 'mon-fri 09:00-17:00'"),
        ("xyz 09:00-17:00", "UTC", "use e.g."),
        ("mon-fri 17:00-09:00", "UTC", "business hours 'mon-fri 17:00-09:00': .*opening must be before closing"),
        ("mon 09:00-24:30", "UTC", "opening must be before closing"),
        ("mon-fri 09:00-17:00", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_bad_legacy_text_says_what_is_wrong(text: str, tz: str, message: str):
    with pytest.raises(ValueError, match=message):
        parse_hours(text, tz)


def test_never_open_raises():
    with pytest.raises(ValidationError, match="never open"):
        Schedule(holidays=["2026-12-25"])
    closed = BusinessHours(((),) * 7, frozenset(), zone("UTC"))
    assert business_seconds(utc(2026, 1, 1), utc(2026, 2, 1), closed) == 0
    with pytest.raises(ValueError, match="never open"):
        business_deadline(utc(2026, 1, 1), 1, closed)
    # one hour a week gives ~522 h in ten years: 1000 h are never reached
    mondays = from_schedule(Schedule(mon=["09:00-10:00"]))
    with pytest.raises(ValueError, match="never open"):
        business_deadline(utc(2026, 1, 1), 1000 * H, mondays)


def test_business_hours_are_frozen_hashable_and_checked():
    a, b = parse_hours("mon-fri 09:00-17:00", "UTC"), parse_hours("mon-fri 09:00-17:00", "UTC")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.tz = zone("Europe/Berlin")  # type: ignore[misc]
    with pytest.raises(ValueError, match="7 weekdays"):
        BusinessHours(((),) * 6, frozenset(), zone("UTC"))
    with pytest.raises(ValueError, match="non-overlapping"):
        BusinessHours((((540, 720), (700, 1020)),) + ((),) * 6, frozenset(), zone("UTC"))
