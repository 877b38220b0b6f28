"""Per-account settings as data (``SOCIALPULSE_ACCOUNTS_FILE`` and the compacted topic
``socialpulse.accounts``): time zone, business hours, SLA policies, currency and benchmark
targets of one account. The same model validates a file entry and a topic record, so an
error names the account and the field either way.

A file (YAML or TOML) holds ``accounts: [AccountSettings, ...]``; a topic record is keyed
``platform|account_id`` and holds one ``AccountSettings`` as JSON (an empty value, a
tombstone, removes the account's record from the topic's layer).

    accounts:
      - platform: instagram
        account_id: shop
        timezone: Europe/Berlin
        business_hours:                      # per local day: ranges, "closed" or "open" (all day)
          mon: ["09:00-12:00", "13:00-17:00"]
          tue: ["09:00-17:00"]
          sat: closed                         # a day not listed is closed too
          sun: open
          holidays: ["2026-12-25"]            # local dates, closed all day
        sla_policies:                         # the first that matches a conversation applies
          - {name: dm, channels: [dm], first_reply: 15m, next_reply: 1h, hours: business}
          - {name: comments, channels: [comment, mention], first_reply: 2h}
        currency: EUR
        benchmarks: {engagement_rate_by_followers: 0.01}
        seller_targets: {originals: 8, reply_seconds: 3600}   # the selling index's (README, "Sellers")
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic_extra_types.currency_code import ISO4217

from streams.durations import parse_duration

from .events import CHANNELS, ChannelName, KeyId, PlatformName

__all__ = ["AccountSettings", "AccountsFile", "Schedule", "SlaPolicy", "ChannelName", "CHANNELS", "DAYS",
           "parse_range", "schedule_from_text", "describe", "SellerTarget", "SELLER_TARGETS"]

#: the selling index's inputs whose targets an account may set (``streams.sellers.index.TARGETS``)
SellerTarget = Literal["originals", "original_engagement", "accepted", "decision_makers", "outreach_answered",
                       "insights", "insight_engagement", "reply_seconds", "repeat_customers"]
SELLER_TARGETS: tuple[str, ...] = SellerTarget.__args__  # type: ignore[attr-defined]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")
_LEGACY = re.compile(r"^\s*([a-z]{3})(?:-([a-z]{3}))?\s+(\d{1,2}:\d{2}-\d{1,2}:\d{2})\s*$")


def _duration_ms(value: object) -> int:
    ms = parse_duration(value)
    if ms <= 0:
        raise ValueError("must be positive")
    return ms


DurationMs = Annotated[int, BeforeValidator(_duration_ms)]


def parse_range(text: str) -> tuple[int, int]:
    """``"09:00-17:30"`` -> (540, 1050) minutes after local midnight (``24:00`` closes a day)."""
    m = _RANGE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not HH:MM-HH:MM")
    a, b = int(m.group(1)) * 60 + int(m.group(2)), int(m.group(3)) * 60 + int(m.group(4))
    if int(m.group(2)) >= 60 or int(m.group(4)) >= 60 or not 0 <= a < b <= 24 * 60:
        raise ValueError(f"{text!r}: opening must be before closing, within one day")
    return a, b


DayHours = Literal["closed", "open"] | list[str]


class Schedule(BaseModel):
    """Weekly business hours in the account's time zone, with holidays."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mon: DayHours = "closed"
    tue: DayHours = "closed"
    wed: DayHours = "closed"
    thu: DayHours = "closed"
    fri: DayHours = "closed"
    sat: DayHours = "closed"
    sun: DayHours = "closed"
    holidays: list[date] = []

    @field_validator(*DAYS)
    @classmethod
    def _ranges(cls, value: DayHours) -> DayHours:
        if isinstance(value, list):
            spans = sorted(parse_range(r) for r in value)
            for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
                if start < end:
                    raise ValueError(f"ranges {value} overlap")
        return value

    @model_validator(mode="after")
    def _some_day_open(self) -> Schedule:
        if all(getattr(self, d) in ("closed", []) for d in DAYS):
            raise ValueError("business hours are never open: give at least one day ranges or 'open'")
        return self

    def minutes(self, weekday: int) -> list[tuple[int, int]]:
        """The open ranges of a weekday (0 = Monday), minutes after local midnight."""
        value = getattr(self, DAYS[weekday])
        if value == "open":
            return [(0, 24 * 60)]
        if value == "closed":
            return []
        return sorted(parse_range(r) for r in value)


def schedule_from_text(text: str) -> Schedule:
    """The environment's one-range form (``SOCIALPULSE_BUSINESS_HOURS``): ``'mon-fri 09:00-17:00'``,
    ``'sat 10:00-14:00'``, ``'fri-mon 08:00-12:00'`` (wrapping the week)."""
    m = _LEGACY.match(text.lower())
    if not m or m.group(1) not in DAYS or (m.group(2) and m.group(2) not in DAYS):
        raise ValueError(f"business hours {text!r}: use e.g. 'mon-fri 09:00-17:00'")
    parse_range(m.group(3))
    first = DAYS.index(m.group(1))
    last = DAYS.index(m.group(2)) if m.group(2) else first
    days = range(first, last + 1) if first <= last else [*range(first, 7), *range(0, last + 1)]
    return Schedule.model_validate({DAYS[d]: [m.group(3)] for d in days})


class SlaPolicy(BaseModel):
    """Reply targets for the conversations it matches (every platform or channel when not given)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    platforms: list[PlatformName] | None = None
    channels: list[ChannelName] | None = None
    first_reply: DurationMs  # the customer's first message -> the first human reply
    next_reply: DurationMs | None = None  # a later message -> the next reply (the first-reply target when not given)
    hours: Literal["calendar", "business"] = "calendar"

    def matches(self, platform: str, channel: str) -> bool:
        return (self.platforms is None or platform in self.platforms) and (
            self.channels is None or channel in self.channels)


class AccountSettings(BaseModel):
    """One account's settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    platform: PlatformName
    account_id: KeyId
    timezone: str | None = None
    business_hours: Schedule | None = None
    sla_policies: list[SlaPolicy] = []
    currency: ISO4217 | None = None
    benchmarks: dict[str, float] = {}
    #: the selling index's targets over SELLER_WINDOW (README, "Sellers"); those not named keep their defaults
    seller_targets: dict[SellerTarget, Annotated[Decimal, Field(gt=0, le=Decimal("1e9"), allow_inf_nan=False)]] = {}

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            from zoneinfo import ZoneInfo

            try:
                ZoneInfo(value)
            except Exception:
                raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("sla_policies")
    @classmethod
    def _unique(cls, value: list[SlaPolicy]) -> list[SlaPolicy]:
        names = [p.name for p in value]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"policy names must be unique: {', '.join(dup)}")
        if "default" in names:
            raise ValueError("'default' is the name of the policy REPLY_SLO gives; choose another")
        return value

    @model_validator(mode="after")
    def _business_needs_hours(self) -> AccountSettings:
        for p in self.sla_policies:
            if p.hours == "business" and self.business_hours is None:
                raise ValueError(f"policy {p.name!r} counts business hours but the account has no business_hours")
        return self

    @property
    def key(self) -> str:
        return f"{self.platform}|{self.account_id}"


class AccountsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    accounts: list[AccountSettings] = []

    @model_validator(mode="after")
    def _unique_accounts(self) -> AccountsFile:
        keys = [a.key for a in self.accounts]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"accounts listed twice: {', '.join(dup)}")
        return self


def describe(exc: Exception, doc: Any = None) -> str:
    """A validation error as lines naming the account and the field."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    lines = []
    for err in exc.errors():
        loc = list(err["loc"])
        where = ".".join(str(x) for x in loc)
        if doc is not None and len(loc) >= 2 and loc[0] == "accounts" and isinstance(loc[1], int):
            try:
                entry = doc["accounts"][loc[1]]
                where = f"account {entry.get('platform')}|{entry.get('account_id')}: " + ".".join(str(x) for x in loc[2:])
            except Exception:  # noqa: BLE001 (the path alone, then)
                pass
        lines.append(f"{where}: {err['msg']}")
    return "; ".join(lines)
