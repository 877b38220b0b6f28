"""Local time and business hours, as pure functions.

Support desks measure reply time in *business* seconds: only the time the desk
is open counts. ``BusinessHours`` is one account's weekly schedule (several open
ranges per weekday, closed days, days open around the clock) plus holidays, in
one time zone. Ranges are local wall-clock times, converted through the zone day
by day, so a DST day is 23 or 25 hours long and a range spanning the change
counts the real time between its ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from schemas.accounts import Schedule, schedule_from_text

__all__ = [
    "BusinessHours",
    "from_schedule",
    "parse_hours",
    "business_seconds",
    "business_deadline",
    "weekday_hour",
    "zone",
]

DAY_MIN = 24 * 60
#: how far ahead business time is looked for (~10 years); past it the schedule "never opens"
HORIZON_DAYS = 3660

Ranges = tuple[tuple[int, int], ...]  # open ranges of one day, minutes after local midnight


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


@dataclass(frozen=True, slots=True)
class BusinessHours:
    """A weekly schedule in one zone: ``week[0]`` (Monday) .. ``week[6]`` (Sunday) hold each
    day's sorted, non-overlapping open ranges (``()`` closed, ``((0, 1440),)`` open all day);
    ``holidays`` are local dates closed all day."""

    week: tuple[Ranges, ...]
    holidays: frozenset[date]
    tz: ZoneInfo

    def __post_init__(self) -> None:
        if len(self.week) != 7:
            raise ValueError(f"business hours need 7 weekdays, got {len(self.week)}")
        for day, ranges in enumerate(self.week):
            end = 0
            for a, b in ranges:
                if not (end <= a < b <= DAY_MIN):
                    raise ValueError(f"business hours of weekday {day}: ranges {ranges} must be sorted, "
                                     "non-overlapping and within one day")
                end = b

    @property
    def ever_open(self) -> bool:
        return any(self.week)


def from_schedule(schedule: Schedule, tz: str = "UTC") -> BusinessHours:
    """An account's ``business_hours`` (``schemas.accounts.Schedule``) in time zone ``tz``."""
    week = tuple(tuple(schedule.minutes(d)) for d in range(7))
    return BusinessHours(week, frozenset(schedule.holidays), zone(tz))


def parse_hours(text: str, tz: str = "UTC") -> BusinessHours:
    """The environment's one-range form: ``'mon-fri 09:00-17:00'``, ``'sat 10:00-14:00'``,
    ``'fri-mon 08:00-12:00'`` (wrapping the week), in time zone ``tz``."""
    try:
        schedule = schedule_from_text(text)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError too
        msg = str(exc)
        raise ValueError(msg if msg.startswith("business hours") else f"business hours {text!r}: {msg}") from None
    return from_schedule(schedule, tz)


def _local(ms: int, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz)


def _offset_s(dt: datetime) -> float:
    off = dt.utcoffset()
    return off.total_seconds() if off is not None else 0.0


def _wall_ms(day: date, minute: int, tz: ZoneInfo) -> int:
    """The instant (epoch ms) the clock in ``tz`` first shows ``minute`` after ``day``'s midnight.

    A repeated time (clocks set back) is its first occurrence; a skipped time (clocks set
    forward, e.g. 02:30 on a spring day) is the instant of the jump, when the clock passes it.
    """
    wall = datetime(day.year, day.month, day.day) + timedelta(minutes=minute)
    early = wall.replace(tzinfo=tz)  # fold=0: the offset before a transition
    late = wall.replace(tzinfo=tz, fold=1)
    before, after = _offset_s(early), _offset_s(late)
    u0 = round(early.timestamp())
    if before >= after:  # an ordinary or a repeated time
        return u0 * 1000
    # skipped: the jump lies in (u1, u0]; find the first second on the new offset
    lo, hi = round(late.timestamp()), u0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset_s(datetime.fromtimestamp(mid, tz)) == after:
            hi = mid
        else:
            lo = mid
    return hi * 1000


@lru_cache(maxsize=16_384)
def _day_spans(ranges: Ranges, tz: ZoneInfo, ordinal: int) -> tuple[tuple[int, int], ...]:
    """The open intervals (epoch ms) of one local day; cached since every reply asks again."""
    day = date.fromordinal(ordinal)
    out = []
    for a, b in ranges:
        lo, hi = _wall_ms(day, a, tz), _wall_ms(day, b, tz)
        if hi > lo:  # a range inside a skipped hour has no time in it
            out.append((lo, hi))
    return tuple(out)


def _spans(start_ms: int, hours: BusinessHours, max_days: int) -> Iterator[tuple[int, int]]:
    """Open intervals (epoch ms) on each local day from ``start_ms``'s day on, in order."""
    first = _local(start_ms, hours.tz).toordinal()
    week, holidays, tz = hours.week, hours.holidays, hours.tz
    for ordinal in range(first, first + max_days):
        ranges = week[(ordinal + 6) % 7]  # date.weekday() of the ordinal, without building the date
        if not ranges or (holidays and date.fromordinal(ordinal) in holidays):
            continue
        yield from _day_spans(ranges, tz, ordinal)


def business_seconds(start_ms: int, end_ms: int, hours: BusinessHours) -> float:
    """Seconds of ``[start, end)`` that fall inside business hours (looking ~10 years ahead at most)."""
    if end_ms <= start_ms:
        return 0.0
    days = min((end_ms - start_ms) // 86_400_000 + 2, HORIZON_DAYS)
    total = 0
    for a, b in _spans(start_ms, hours, int(days)):
        if a >= end_ms:
            break
        lo, hi = max(a, start_ms), min(b, end_ms)
        if hi > lo:
            total += hi - lo
    return total / 1000


def business_deadline(start_ms: int, seconds: float, hours: BusinessHours) -> int:
    """The instant at which ``seconds`` of business time have passed since ``start_ms``.

    Raises ``ValueError`` when the schedule does not give that much time within ~10 years.
    """
    need = seconds * 1000
    if hours.ever_open:
        for a, b in _spans(start_ms, hours, HORIZON_DAYS):
            lo = max(a, start_ms)
            if b <= lo:
                continue
            if b - lo >= need:
                return int(lo + need)
            need -= b - lo
    raise ValueError(f"business hours never open for {seconds:g} s within {HORIZON_DAYS} days of {start_ms} ms")


def weekday_hour(ms: int, tz: ZoneInfo) -> tuple[int, int]:
    """(weekday 0=Mon, hour) of an instant in a time zone."""
    local = _local(ms, tz)
    return local.weekday(), local.hour
