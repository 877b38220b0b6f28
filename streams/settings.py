"""Settings: one object read from ``SOCIALPULSE_*`` environment variables.

A bad value stops start-up with a message that names the setting
(``SOCIALPULSE_GRACE: ...``), never a traceback from deep inside Faust.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.events import PLATFORMS

from .durations import format_duration, parse_duration

__all__ = ["Settings", "SettingsError", "load_settings", "parse_duration", "format_duration"]


class SettingsError(SystemExit):
    """Raised for a bad setting; exits with the message, no traceback."""


def _duration_list(value: object) -> list[int]:
    items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    out = [parse_duration(v) for v in items if str(v).strip()]
    if not out:
        raise ValueError("at least one duration is required")
    if any(v <= 0 for v in out):
        raise ValueError("durations must be positive")
    return sorted(set(out))


def _pairs(value: object, sep: str) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    out: dict[str, str] = {}
    for item in str(value).split(sep):
        if not item.strip():
            continue
        key, eq, val = item.partition("=")
        if not eq or "|" not in key:
            raise ValueError(f"{item.strip()!r} is not platform|account=value")
        out[key.strip()] = val.strip()
    return out


def _timezones(value: object) -> dict[str, str]:
    from zoneinfo import ZoneInfo

    zones = _pairs(value, ",")
    for key, name in zones.items():
        try:
            ZoneInfo(name)
        except Exception:
            raise ValueError(f"{key}: unknown time zone {name!r}") from None
    return zones


def _account_keys(value: object) -> tuple[str, ...]:
    """``platform|account_id,...`` (the accounts' key, as in ACCOUNT_TIMEZONES), in the order given."""
    items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    out: list[str] = []
    for item in (str(v).strip() for v in items):
        if not item:
            continue
        platform, bar, account = item.partition("|")
        if not bar or not account.strip() or platform.strip() not in PLATFORMS:
            raise ValueError(f"{item!r} is not platform|account_id (platform one of {', '.join(sorted(PLATFORMS))})")
        key = f"{platform.strip()}|{account.strip()}"
        if key not in out:
            out.append(key)
    return tuple(out)


def _business_hours(value: object) -> dict[str, str]:
    # each account's schedule is the replies family's to read (``Replies.from_settings``)
    return _pairs(value, ";")


Duration = Annotated[int, BeforeValidator(parse_duration)]
DurationList = Annotated[list[int], NoDecode, BeforeValidator(_duration_list)]


class Settings(BaseSettings):
    """Every runtime setting. Durations are held in milliseconds."""

    model_config = SettingsConfigDict(env_prefix="SOCIALPULSE_", extra="ignore", frozen=True)

    broker: str = "kafka://localhost:9092"
    store: str = "rocksdb://"
    data_dir: str = "./data"
    web_host: str = "0.0.0.0"
    web_port: int = Field(6066, ge=1, le=65535)
    #: TLS and credentials of the web port: an exporter-toolkit web.config.yml (streams/web_security.py)
    web_config: str | None = None
    partitions: int = Field(4, ge=1, le=1024)
    replication: int = Field(1, ge=1, le=16)
    bucket: Duration = "1m"  # type: ignore[assignment]
    trailing_windows: DurationList = "5m,1h"  # type: ignore[assignment]
    closed_windows: DurationList = "1m,1h,1d"  # type: ignore[assignment]
    grace: Duration = "5m"  # type: ignore[assignment]
    #: how far behind the watermark an event is still accepted (it corrects published windows)
    allowed_lateness: Duration = "1d"  # type: ignore[assignment]
    idle: Duration = "5s"  # type: ignore[assignment]
    broker_timeout: Duration = "2m"  # type: ignore[assignment]  # stop when no broker answers for this long
    rebalance_timeout: Duration = "5m"  # type: ignore[assignment]  # stop when a rebalance hangs this long
    #: the consumer group's session timeout; empty: what suits the broker (``streams.groups``)
    session_timeout: Annotated[int | None, BeforeValidator(lambda v: parse_duration(v) if v not in (None, "") else None)] = None
    dedup_horizon: Duration = "10m"  # type: ignore[assignment]
    reply_slo: Duration = "15m"  # type: ignore[assignment]
    attribution_lookback: Duration = "7d"  # type: ignore[assignment]
    topic_prefix: str = ""
    max_event_bytes: int = Field(65_536, ge=256)
    batch_size: int = Field(5_000, ge=1)  # most records a fetched batch hands to a lane
    top_posts: int = Field(10, ge=1, le=1000)
    max_agents: int = Field(20, ge=1, le=1000)
    #: sellers per account with their own series on /metrics (the highest selling index); the rest
    #: are summed under seller="other" (``streams.sellers``)
    max_sellers: int = Field(10, ge=1, le=1000)
    #: the trailing window of a seller's index, influence and numbers (whole UTC days)
    seller_window: Duration = "28d"  # type: ignore[assignment]
    #: account keys a worker keeps decoded in memory at most (the most recently active); the others
    #: rest in the RocksDB store and are decoded on demand (``streams.keyed``, "the cold tier")
    hot_keys: int = Field(2_000, ge=1, le=10_000_000)
    max_campaigns: int = Field(50, ge=1, le=10_000)
    attribution_half_life: Duration = "7d"  # type: ignore[assignment]
    conversation_ttl: Duration = "7d"  # type: ignore[assignment]
    #: an outreach conversation (the seller wrote first) counts as answered when the prospect
    #: replies within this
    outreach_window: Duration = "7d"  # type: ignore[assignment]
    #: a checkout started and not completed within this is abandoned
    checkout_timeout: Duration = "1h"  # type: ignore[assignment]
    #: per-account time zone for hour-of-week reply times: ``platform|account=Zone,...``
    account_timezones: Annotated[dict[str, str], NoDecode, BeforeValidator(_timezones)] = ""  # type: ignore[assignment]
    #: per-account business hours: ``platform|account=mon-fri 09:00-17:00;...``
    business_hours: Annotated[dict[str, str], NoDecode, BeforeValidator(_business_hours)] = ""  # type: ignore[assignment]
    #: accounts whose per-account series ``/metrics`` always exports: ``platform|account_id,...``
    metrics_accounts: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_account_keys)] = ""  # type: ignore[assignment]
    #: besides those, how many of a worker's most active accounts keep their own series; the
    #: others are summed into ``account="other"`` per platform (``streams.exporter.SeriesPolicy``)
    metrics_top_accounts: int = Field(100, ge=0, le=1_000_000)
    #: per-account settings as data (YAML or TOML; streams/accounts.py validates its content)
    accounts_file: str | None = None
    app_id: str = "socialpulse"
    #: accepted for compatibility and ignored: changelog ends are read from a fetch on every
    #: broker (streams/transport.py), so no broker needs a switch for correct results
    broker_quirks: Literal["", "tansu"] = ""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Kafka security for a real cluster.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str = ""
    sasl_password: str = ""
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""

    @field_validator("broker")
    @classmethod
    def _broker_urls(cls, value: str) -> str:
        for url in value.split(","):
            if not re.match(r"^(kafka|aiokafka)://[^/:,]+(:\d+)?$", url.strip()):
                raise ValueError(f"{url!r} is not kafka://host:port")
        return value

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        if value not in ("rocksdb://", "memory://"):
            raise ValueError("use rocksdb:// or memory://")
        return value

    @field_validator("accounts_file")
    @classmethod
    def _accounts_file(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.lower().endswith((".yaml", ".yml", ".toml")):
            raise ValueError("use a .yaml, .yml or .toml file")
        if not os.path.isfile(value) or not os.access(value, os.R_OK):
            raise ValueError("no readable file there")
        return value

    @field_validator("web_config")
    @classmethod
    def _web_config(cls, value: str | None) -> str | None:
        if not value:
            return None
        from .web_security import load_web_config  # aiohttp and bcrypt: only when there is a file

        load_web_config(value)
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value and not re.match(r"^[A-Za-z0-9._-]+$", value):
            raise ValueError("only letters, digits, '.', '_' and '-'")
        return value

    @field_validator("bucket", "idle", "grace", "reply_slo", "dedup_horizon", "attribution_lookback", "attribution_half_life", "broker_timeout", "checkout_timeout", "outreach_window", "seller_window",
                     "rebalance_timeout")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @field_validator("session_timeout")
    @classmethod
    def _session(cls, value: int | None) -> int | None:
        if value is not None and not 6_000 <= value <= 300_000:
            raise ValueError("between 6s (the broker's group.min.session.timeout.ms) and 5m")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        for name in ("trailing_windows", "closed_windows"):
            for w in getattr(self, name):
                if w % self.bucket:
                    if name not in self.model_fields_set:  # the default window: the bucket was changed
                        raise _named("bucket", f"{format_duration(self.bucket)} does not divide {format_duration(w)} of the "
                                     f"default SOCIALPULSE_{name.upper()}: choose a bucket that does, or set both")
                    raise _named(name, f"{format_duration(w)} is not a multiple of SOCIALPULSE_BUCKET")
        if self.allowed_lateness < self.grace:
            if "allowed_lateness" in self.model_fields_set and "grace" in self.model_fields_set:
                raise _named(
                    "allowed_lateness",
                    f"{format_duration(self.allowed_lateness)} is less than SOCIALPULSE_GRACE "
                    f"{format_duration(self.grace)}: an event within the grace would be late",
                )
            # only one of the two was chosen: the other follows it (a user changes one setting)
            if "allowed_lateness" in self.model_fields_set:
                object.__setattr__(self, "grace", self.allowed_lateness)
            else:
                object.__setattr__(self, "allowed_lateness", self.grace)
        if self.security_protocol.startswith("SASL") and not self.sasl_username:
            raise _named("sasl_username", f"required with SECURITY_PROTOCOL={self.security_protocol}")
        return self

    def topic(self, name: str) -> str:
        """The full topic name, with ``TOPIC_PREFIX``."""
        return f"{self.topic_prefix}{name}"


class _NamedError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _named(field: str, message: str) -> _NamedError:
    return _NamedError(field, message)


def load_settings(**overrides: object) -> Settings:
    """Read the environment; exit with a message naming the setting on a bad value."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            got = f" (got {err.get('input')!r})" if field else ""
            ctx_err = (err.get("ctx") or {}).get("error")
            if isinstance(ctx_err, _NamedError):
                field = ctx_err.field
            name = f"SOCIALPULSE_{field.upper()}" if field else "SOCIALPULSE settings"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{name}: {msg}{got}")
        raise SettingsError("bad setting:\n  " + "\n  ".join(lines)) from None
