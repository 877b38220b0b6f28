"""Local time and business hours, as pure functions.

Support desks measure reply time in *business* seconds: only the time the desk
is open counts. ``BusinessHours`` is one weekly schedule in one time zone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["BusinessHours", "parse_hours", "business_seconds", "business_deadline", "weekday_hour", "zone"]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPEC = re.compile(r"^\s*([a-z]{3})(?:-([a-z]{3}))?\s+(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})\s*$")


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


@dataclass(frozen=True, slots=True)
class BusinessHours:
    days: frozenset[int]  # 0 = Monday
    open_min: int  # minutes after local midnight
    close_min: int
    tz: ZoneInfo

    def _day_span(self, day: datetime) -> tuple[datetime, datetime] | None:
        if day.weekday() not in self.days:
            return None
        midnight = day.replace(hour=0, minute=0, second=0, microsecond=0)
        # local wall-clock times, converted through the zone (handles DST days)
        return midnight + timedelta(minutes=self.open_min), midnight + timedelta(minutes=self.close_min)


def parse_hours(text: str, tz: str = "UTC") -> BusinessHours:
    """``'mon-fri 09:00-17:00'`` (or ``'sat 10:00-14:00'``) in time zone ``tz``."""
    m = _SPEC.match(text.lower())
    if not m or m.group(1) not in DAYS or (m.group(2) and m.group(2) not in DAYS):
        raise ValueError(f"business hours {text!r}: use e.g. 'mon-fri 09:00-17:00'")
    first = DAYS.index(m.group(1))
    last = DAYS.index(m.group(2)) if m.group(2) else first
    days = frozenset(range(first, last + 1)) if first <= last else frozenset([*range(first, 7), *range(0, last + 1)])
    open_min = int(m.group(3)) * 60 + int(m.group(4))
    close_min = int(m.group(5)) * 60 + int(m.group(6))
    if not 0 <= open_min < close_min <= 24 * 60:
        raise ValueError(f"business hours {text!r}: opening must be before closing, within one day")
    return BusinessHours(days, open_min, close_min, zone(tz))


def _local(ms: int, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(tz)


def _ms(dt: datetime) -> int:
    return int(dt.replace(tzinfo=dt.tzinfo).timestamp() * 1000)


def _spans(start_ms: int, hours: BusinessHours, max_days: int) -> list[tuple[int, int]]:
    """Open intervals (epoch ms) on each local day from ``start_ms``'s day on."""
    day = _local(start_ms, hours.tz).replace(tzinfo=None)
    out = []
    for i in range(max_days):
        span = hours._day_span(day + timedelta(days=i))
        if span:
            a = _ms(span[0].replace(tzinfo=hours.tz))
            b = _ms(span[1].replace(tzinfo=hours.tz))
            out.append((a, b))
    return out


def business_seconds(start_ms: int, end_ms: int, hours: BusinessHours) -> float:
    """Seconds of ``[start, end)`` that fall inside business hours."""
    if end_ms <= start_ms:
        return 0.0
    days = min((end_ms - start_ms) // 86_400_000 + 2, 3660)
    total = 0
    for a, b in _spans(start_ms, hours, int(days)):
        lo, hi = max(a, start_ms), min(b, end_ms)
        if hi > lo:
            total += hi - lo
    return total / 1000


def business_deadline(start_ms: int, seconds: float, hours: BusinessHours) -> int:
    """The instant at which ``seconds`` of business time have passed since ``start_ms``."""
    need = seconds * 1000
    for a, b in _spans(start_ms, hours, 3660):
        lo = max(a, start_ms)
        if b <= lo:
            continue
        if b - lo >= need:
            return int(lo + need)
        need -= b - lo
    raise ValueError("business hours never open")


def weekday_hour(ms: int, tz: ZoneInfo) -> tuple[int, int]:
    """(weekday 0=Mon, hour) of an instant in a time zone."""
    local = _local(ms, tz)
    return local.weekday(), local.hour
