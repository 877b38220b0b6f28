"""Per-account settings as data: the book every family asks (``book_for(settings).get(key)``).

Three layers; the first that has an account wins, whole (layers are not merged field by field):

    topic        socialpulse.accounts, compacted, key ``platform|account_id``: kept current while
                 the worker runs (``streams/accounts_reader.py``), so a change needs no restart
    file         SOCIALPULSE_ACCOUNTS_FILE (YAML or TOML, ``accounts: [...]``), read at start-up
    environment  SOCIALPULSE_ACCOUNT_TIMEZONES and SOCIALPULSE_BUSINESS_HOURS (the older, one-range form)

``version`` goes up on every change, so a family can cache what it derives from an account's
settings (a compiled schedule, a policy table) per ``(key, version)``. This module is Kafka-free:
``decode_record`` judges a topic record, the reader feeds ``AccountBook.apply``.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import ValidationError

from schemas.accounts import AccountSettings, AccountsFile, describe, schedule_from_text
from schemas.events import split_account_key

from .settings import SettingsError

__all__ = [
    "AccountBook", "BookCollector", "Entry", "RecordRejected", "SOURCES", "Source",
    "book_for", "decode_record", "from_environment", "read_file",
]

Source = Literal["topic", "file", "environment"]
#: the layers, first wins
SOURCES: tuple[Source, ...] = ("topic", "file", "environment")
SUFFIXES = (".yaml", ".yml", ".toml")


@dataclass(frozen=True, slots=True)
class Entry:
    """An account's effective settings and the layer they came from."""

    settings: AccountSettings
    source: Source


class RecordRejected(ValueError):
    """A topic record that changes nothing: why (a dead-letter reason) and what exactly."""

    def __init__(self, reason: Literal["invalid", "not_json"], detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def decode_record(key: bytes | None, value: bytes | None) -> tuple[str, AccountSettings | None]:
    """A ``socialpulse.accounts`` record -> (account key, its settings; None for a tombstone).

    Raises ``RecordRejected`` when the key is not ``platform|account_id``, the value is not
    JSON or not valid ``AccountSettings``, or names another account than its key."""
    try:
        text = (key or b"").decode("utf-8")
    except UnicodeDecodeError:
        raise RecordRejected("invalid", "the record key is not UTF-8") from None
    if "|" not in text:
        raise RecordRejected("invalid", f"the record key {text[:200]!r} is not platform|account_id")
    if not value:
        return text, None
    try:
        doc = json.loads(value)
    except ValueError as exc:  # also not UTF-8
        raise RecordRejected("not_json", f"account {text}: {exc}") from None
    try:
        settings = AccountSettings.model_validate(doc)
    except ValidationError as exc:
        raise RecordRejected("invalid", f"account {text}: {_plain(describe(exc))}") from None
    if settings.key != text:
        raise RecordRejected("invalid", f"the record key {text!r} names another account than its value ({settings.key!r})")
    return text, settings


def _plain(message: str) -> str:
    return message.replace("Value error, ", "")


class AccountBook:
    """The effective settings of every account this process knows, from its three layers."""

    def __init__(self, file: Mapping[str, AccountSettings] | None = None,
                 environment: Mapping[str, AccountSettings] | None = None) -> None:
        self.layers: dict[Source, dict[str, AccountSettings]] = {
            "topic": {}, "file": dict(file or {}), "environment": dict(environment or {})}
        #: +1 on every change of any account's effective settings
        self.version = 0

    def entry(self, key: str) -> Entry | None:
        for source in SOURCES:
            found = self.layers[source].get(key)
            if found is not None:
                return Entry(found, source)
        return None

    def get(self, key: str) -> AccountSettings | None:
        """The settings of ``platform|account_id`` (None: the service's defaults apply)."""
        found = self.entry(key)
        return found.settings if found is not None else None

    def keys(self) -> list[str]:
        return sorted({k for layer in self.layers.values() for k in layer})

    def entries(self) -> Iterator[tuple[str, Entry]]:
        for key in self.keys():
            found = self.entry(key)
            if found is not None:
                yield key, found

    def put(self, settings: AccountSettings) -> bool:
        """Set an account's topic layer; True if that changed anything."""
        if self.layers["topic"].get(settings.key) == settings:
            return False
        self.layers["topic"][settings.key] = settings
        self.version += 1
        return True

    def remove(self, key: str) -> bool:
        """Drop an account's topic layer (a tombstone): the file or environment apply again."""
        if self.layers["topic"].pop(key, None) is None:
            return False
        self.version += 1
        return True

    def apply(self, key: bytes | None, value: bytes | None) -> Literal["applied", "removed"]:
        """One ``socialpulse.accounts`` record; a bad one raises ``RecordRejected`` and changes nothing."""
        text, settings = decode_record(key, value)
        if settings is None:
            self.remove(text)
            return "removed"
        self.put(settings)
        return "applied"


def read_file(path: str) -> dict[str, AccountSettings]:
    """``SOCIALPULSE_ACCOUNTS_FILE``: YAML (``.yaml``, ``.yml``) or TOML (``.toml``), validated
    whole; a problem raises ``SettingsError`` naming the setting, the account and the field."""
    name = f"SOCIALPULSE_ACCOUNTS_FILE ({path})"
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise SettingsError(f"bad setting:\n  {name}: use a .yaml, .yml or .toml file")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"bad setting:\n  {name}: cannot read it: {exc}") from None
    try:
        if suffix == ".toml":
            doc: Any = tomllib.loads(text)
        else:
            import yaml

            doc = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 (yaml's and tomllib's errors, with the line)
        raise SettingsError(f"bad setting:\n  {name}: not {suffix[1:].upper()}: {' '.join(str(exc).split())}") from None
    if doc is None:
        doc = {}
    try:
        parsed = AccountsFile.model_validate(doc)
    except ValidationError as exc:
        raise SettingsError(f"bad setting:\n  {name}: {_plain(describe(exc, doc))}") from None
    return {a.key: a for a in parsed.accounts}


def from_environment(timezones: Mapping[str, str], hours: Mapping[str, str]) -> dict[str, AccountSettings]:
    """``SOCIALPULSE_ACCOUNT_TIMEZONES`` and ``SOCIALPULSE_BUSINESS_HOURS`` as settings per account."""
    out: dict[str, AccountSettings] = {}
    for key in sorted({*timezones, *hours}):
        var = "SOCIALPULSE_BUSINESS_HOURS" if key in hours else "SOCIALPULSE_ACCOUNT_TIMEZONES"
        try:
            platform, account_id = split_account_key(key)
            schedule = schedule_from_text(hours[key]) if key in hours else None
            out[key] = AccountSettings(platform=platform, account_id=account_id,  # type: ignore[arg-type]
                                       timezone=timezones.get(key), business_hours=schedule)
        except (ValueError, ValidationError) as exc:
            raise SettingsError(f"bad setting:\n  {var}: account {key}: {_plain(describe(exc))}") from None
    return out


_BOOKS: dict[tuple[Any, ...], AccountBook] = {}


def book_for(settings: Any) -> AccountBook:
    """This process's book for these settings: built once (the file read and checked then), the
    same instance for every caller afterwards; the topic reader keeps it current."""
    zones = dict(getattr(settings, "account_timezones", None) or {})
    hours = dict(getattr(settings, "business_hours", None) or {})
    path = getattr(settings, "accounts_file", None)
    signature = (path, tuple(sorted(zones.items())), tuple(sorted(hours.items())))
    book = _BOOKS.get(signature)
    if book is None:
        book = _BOOKS[signature] = AccountBook(read_file(path) if path else {}, from_environment(zones, hours))
    return book


class BookCollector(Collector):
    """``socialpulse_account_benchmark{platform,account,metric}`` (the accounts' ``benchmarks``) and
    ``socialpulse_account_settings_version``, computed at scrape time. Every worker holds every
    account's settings: the series are the same on each (aggregate them with max, never sum)."""

    def __init__(self, book: AccountBook) -> None:
        self.book = book

    def describe(self) -> Iterable[Metric]:
        return [self._benchmark(), self._version()]

    def collect(self) -> Iterator[Metric]:
        yield from self._families()

    def _benchmark(self) -> GaugeMetricFamily:
        return GaugeMetricFamily("socialpulse_account_benchmark", "An account's benchmark target for a metric "
                                 "(its settings' benchmarks).", labels=["platform", "account", "metric"])

    def _version(self) -> GaugeMetricFamily:
        return GaugeMetricFamily("socialpulse_account_settings_version",
                                 "Changes of account settings this worker applied (file, environment, topic).")

    def _families(self) -> Iterator[Metric]:
        bench = self._benchmark()
        for _, found in self.book.entries():
            s = found.settings
            for metric, value in sorted(s.benchmarks.items()):
                bench.add_metric([s.platform, s.account_id, metric], value)
        version = self._version()
        version.add_metric([], self.book.version)
        yield bench
        yield version
