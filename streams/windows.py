"""Event-time windowing shared by every metric family.

Owns: bucket and window bounds, the per-partition watermark (which follows the
wall clock once a partition goes quiet), lateness, trailing-window sums for the
live gauges, and closing tumbling windows exactly once per key.

A key's windowed state is a plain dict so it can be written to a Faust table as
JSON once per flush:

    {"b": {bucket_start: agg},                 # trailing buckets (size BUCKET)
     "w": {size: {window_start: agg}}}         # open closed-window accumulators

The keyed stage persists each partition's watermark beside the keys, so after
a crash lateness is judged against the watermark windows were closed at.

``agg`` is whatever the family folds events into; the family passes ``merge``.
All times are epoch milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .settings import Settings, format_duration

__all__ = [
    "Agg",
    "Merge",
    "WindowSpec",
    "Watermark",
    "ClosedWindow",
    "bucket_start",
    "new_windowed",
    "add",
    "is_late",
    "trailing",
    "close_due",
    "prune",
    "decode_windowed",
    "iso",
]

Agg = dict[str, Any]
Merge = Callable[[Agg, Agg], None]


def bucket_start(ts: int, size: int) -> int:
    """Start of the UTC-epoch-aligned bucket (or tumbling window) holding ``ts``."""
    return ts - ts % size


def iso(ms: int) -> str:
    """Epoch milliseconds -> RFC 3339 UTC text (``2026-11-22T13:00:00Z``)."""
    secs, rem = divmod(ms, 1000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    return f"{text}.{rem:03d}Z" if rem else f"{text}Z"


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """The window settings every family shares."""

    bucket: int
    trailing: tuple[int, ...]
    closed: tuple[int, ...]
    grace: int

    @classmethod
    def from_settings(cls, settings: Settings) -> WindowSpec:
        return cls(settings.bucket, tuple(settings.trailing_windows), tuple(settings.closed_windows), settings.grace)

    @property
    def keep_buckets(self) -> int:
        """How far behind the watermark a trailing bucket is still needed."""
        return max(self.trailing) + self.bucket

    def label(self, size: int) -> str:
        return format_duration(size)


@dataclass(slots=True)
class Watermark:
    """Highest event time seen on one partition; follows the wall clock when quiet.

    While records keep arriving (live traffic or a backlog being worked through),
    only event time moves it, so catching up loses nothing to lateness. Once the
    consumer has read to the end of the partition and no record has come for
    ``idle`` ms, the wall clock drives it (``advance``), so windows of quiet keys
    still close and SLOs still breach on time.
    """

    idle: int
    event_max: int = 0
    last_arrival: float = field(default_factory=time.monotonic)
    wall_floor: int = 0
    persisted: int = 0  # the value last written to the changelog

    def observe(self, ts: int) -> None:
        if ts > self.event_max:
            self.event_max = ts
        self.last_arrival = time.monotonic()

    def advance(self, caught_up: bool, now_ms: int | None = None) -> int:
        """Let the wall clock move a quiet, caught-up partition; return the watermark."""
        if not caught_up:
            self.last_arrival = time.monotonic()  # a partition with a backlog is not idle
        elif (time.monotonic() - self.last_arrival) * 1000 >= self.idle:
            wall = int(time.time() * 1000) if now_ms is None else now_ms
            if wall > self.wall_floor:
                self.wall_floor = wall
        return self.current()

    def current(self) -> int:
        return max(self.event_max, self.wall_floor)


def new_windowed() -> dict[str, Any]:
    return {"b": {}, "w": {}}


def is_late(ts: int, watermark: int, grace: int) -> bool:
    """More than ``grace`` behind the watermark: its windows may already be emitted."""
    return ts < watermark - grace


def add(
    state: dict[str, Any], ts: int, part: Agg, spec: WindowSpec, merge: Merge, watermark: int | None = None
) -> None:
    """Fold a pre-aggregated ``part`` at event time ``ts`` into buckets and windows.

    With ``watermark``, windows already emitted at that watermark are left alone
    (used for updates that belong to an old time, such as a reply credited to the
    bucket its conversation started in).
    """
    b = bucket_start(ts, spec.bucket)
    buckets = state["b"]
    if watermark is None or b > watermark - spec.keep_buckets:
        if b in buckets:
            merge(buckets[b], part)
        else:
            buckets[b] = _copy(part)
    windows = state["w"]
    for size in spec.closed:
        start = bucket_start(ts, size)
        if watermark is not None and start + size + spec.grace <= watermark:
            continue
        per_size = windows.setdefault(size, {})
        if start in per_size:
            merge(per_size[start], part)
        else:
            per_size[start] = _copy(part)


def containing(state: dict[str, Any], ts: int, spec: WindowSpec, watermark: int) -> list[Agg]:
    """The bucket and the still-open windows holding ``ts`` (to correct a value in place)."""
    out = []
    b = state["b"].get(bucket_start(ts, spec.bucket))
    if b is not None:
        out.append(b)
    for size, per_size in state["w"].items():
        start = bucket_start(ts, size)
        if start in per_size and start + size + spec.grace > watermark:
            out.append(per_size[start])
    return out


def trailing(state: dict[str, Any], watermark: int, size: int, merge: Merge) -> Agg | None:
    """Merge of the buckets whose start lies in ``(watermark - size, watermark]``."""
    out: Agg | None = None
    low = watermark - size
    for start, agg in state["b"].items():
        if low < start <= watermark:
            if out is None:
                out = _copy(agg)
            else:
                merge(out, agg)
    return out


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    size: int
    label: str
    start: int
    end: int
    agg: Agg


def close_due(state: dict[str, Any], watermark: int, spec: WindowSpec) -> list[ClosedWindow]:
    """Remove and return every window whose ``end + grace`` the watermark has passed.

    Each window is returned once: it leaves the state as it is returned.
    """
    out: list[ClosedWindow] = []
    for size, per_size in state["w"].items():
        due = [start for start in per_size if start + size + spec.grace <= watermark]
        for start in sorted(due):
            out.append(ClosedWindow(size, spec.label(size), start, start + size, per_size.pop(start)))
    return out


def prune(state: dict[str, Any], watermark: int, spec: WindowSpec) -> bool:
    """Drop trailing buckets no trailing window can reach any more; True if any went."""
    low = watermark - spec.keep_buckets
    buckets = state["b"]
    gone = [s for s in buckets if s <= low]
    for start in gone:
        del buckets[start]
    return bool(gone)


def is_empty(state: dict[str, Any]) -> bool:
    return not state["b"] and not any(state["w"].values())


def decode_windowed(raw: dict[str, Any]) -> dict[str, Any]:
    """JSON (string keys) -> the in-memory form (integer keys)."""
    return {
        "b": {int(k): v for k, v in raw.get("b", {}).items()},
        "w": {int(size): {int(s): a for s, a in per.items()} for size, per in raw.get("w", {}).items()},
    }


def _copy(value: Any) -> Any:
    """A deep copy of an aggregate (dicts, lists, numbers, strings): a bucket and the
    windows it is merged into must never share a mutable part."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
