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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

from .durations import format_duration

__all__ = [
    "Agg",
    "Merge",
    "WindowSpec",
    "Mark",
    "EventClock",
    "hold",
    "take_late",
    "ClosedWindow",
    "bucket_start",
    "new_windowed",
    "add",
    "add_bucket",
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
    """The window settings every family shares, in milliseconds (``streams.settings`` fills
    them: ``window_spec``)."""

    bucket_ms: int
    trailing_ms: tuple[int, ...]
    closed_ms: tuple[int, ...]
    grace_ms: int
    allowed_ms: int = 0  # allowed lateness: how long a closed window can still be corrected (at least grace)

    @classmethod
    def from_settings(cls, settings: Any) -> WindowSpec:
        """From ``streams.settings.Settings`` (durations in ms there too)."""
        return cls(settings.bucket, tuple(settings.trailing_windows), tuple(settings.closed_windows), settings.grace,
                   settings.allowed_lateness)

    @property
    def lateness_ms(self) -> int:
        return max(self.allowed_ms, self.grace_ms)

    @property
    def keep_buckets_ms(self) -> int:
        """How far behind the watermark a trailing bucket is still needed."""
        return max(self.trailing_ms) + self.bucket_ms

    def label(self, size: int) -> str:
        return format_duration(size)


@dataclass(frozen=True, slots=True)
class Mark:
    """What the reader of one input partition says about it (a watermark report).

    ``behind``: it has records not read yet (a backlog); ``newest``: the newest event
    time read from it so far (0: none since it was assigned); ``idle``: read to its
    end and nothing arrived for ``IDLE``; ``at``: wall-clock ms of the report.
    """

    behind: bool
    newest: int
    idle: bool
    at: int

    def row(self) -> list[Any]:
        return [self.behind, self.newest, self.idle, self.at]


def hold(marks: dict[str, Mark], expected: Iterable[str] | None) -> tuple[int | None, bool, bool]:
    """The watermark the inputs allow, whether they are all read to their end, and
    whether they are also all quiet.

    Flink's rule, with idle inputs: while any input has unread records, the slowest
    of those holds event time (so a backlog read in any order loses nothing). When
    every input is read to its end, event time is the newest seen; when they are
    also all quiet, the wall clock (so windows of quiet keys close and SLOs breach
    on time). An input not heard from yet holds everything: its backlog is unknown.
    """
    if expected is None:
        return None, False, False
    reports = []
    for source in expected:
        mark = marks.get(source)
        if mark is None:
            return None, False, False
        reports.append(mark)
    if not reports:
        return None, False, False
    behind = [m.newest for m in reports if m.behind]
    if behind:
        return min(behind), False, False
    if all(m.idle for m in reports):
        return min(m.at for m in reports), True, True
    return max(m.newest for m in reports), True, False


@dataclass(slots=True)
class EventClock:
    """The watermark of one keyed partition: how far event time has progressed on it.

    It moves only forward: by the inputs' marks (``hold``) on each tick and, while
    every input is read to its end (``live``), by the events themselves, so live
    traffic is visible at once. During a backlog events never move it; the marks of
    the slowest input do.
    """

    current: int = 0
    persisted: int = 0  # the value last written to the changelog
    live: bool = False
    idle: bool = False
    known: bool = False  # every input has marked it at least once (what it may not run ahead of is known)
    marks: dict[str, Mark] = field(default_factory=dict)

    def mark(self, source: str, mark: Mark) -> None:
        """Take an input's mark (the newest report wins: marks of one input can reach
        a partition by two paths); an input that fell behind ends live mode at once."""
        old = self.marks.get(source)
        if old is None or mark.at >= old.at:
            self.marks[source] = mark
            if mark.behind:
                self.live = self.idle = False

    def advance(self, expected: Iterable[str] | None) -> int:
        allowed, self.live, self.idle = hold(self.marks, expected)
        if allowed is not None:
            self.known = True
            if allowed > self.current:
                self.current = allowed
        return self.current


class Windowed(TypedDict):
    """A family's windowed aggregates of one key (its changelog form: integer keys as strings)."""

    b: dict[int, Agg]  # trailing buckets: bucket start (ms) -> aggregate
    w: dict[int, dict[int, Agg]]  # open closed-windows: size (ms) -> start (ms) -> aggregate
    late: NotRequired[dict[int, dict[int, Agg]]]  # parts that correct published windows (``take_late``)


def new_windowed() -> Windowed:
    return {"b": {}, "w": {}}


def is_late(ts: int, watermark: int, grace: int) -> bool:
    """More than ``grace`` behind the watermark: its windows may already be emitted."""
    return ts < watermark - grace


def add(
    state: Windowed, ts: int, part: Agg, spec: WindowSpec, merge: Merge, watermark: int | None = None,
    slim: Agg | None = None, detail_from_ms: int = 0,
) -> None:
    """Fold a pre-aggregated ``part`` at event time ``ts`` into buckets and windows.

    With ``watermark``: a window already published at that watermark (its end plus
    grace passed) is not reopened; the part is kept under ``"late"`` for the stage to
    correct the published window (``take_late``). A part for a window older than the
    allowed lateness is dropped (only derived updates get there: events that old
    are rejected as late before they reach a family).

    With ``slim`` (the part without detail only the longer windows publish): the trailing
    buckets and the closed windows shorter than ``detail_from_ms`` get ``slim`` instead.
    """
    b = bucket_start(ts, spec.bucket_ms)
    buckets = state["b"]
    if watermark is None or b > watermark - spec.keep_buckets_ms:
        this = slim if slim is not None else part
        if b in buckets:
            merge(buckets[b], this)
        else:
            buckets[b] = _copy(this)
    windows = state["w"]
    for size in spec.closed_ms:
        start = bucket_start(ts, size)
        target = windows
        # a window the watermark has passed but no tick has published yet is still open
        if watermark is not None and start + size + spec.grace_ms <= watermark and start not in windows.get(size, ()):
            if start + size <= watermark - spec.lateness_ms:
                continue
            target = state.setdefault("late", {})
        per_size = target.setdefault(size, {})
        this = slim if slim is not None and size < detail_from_ms else part
        if start in per_size:
            merge(per_size[start], this)
        else:
            per_size[start] = _copy(this)


def add_bucket(state: Windowed, ts: int, part: Agg, spec: WindowSpec, merge: Merge, watermark: int) -> None:
    """Fold ``part`` into the trailing bucket of ``ts`` only (if a trailing window still reaches
    it), not into closed windows: for values a family publishes another way (e.g. cohorts)."""
    b = bucket_start(ts, spec.bucket_ms)
    if b > watermark - spec.keep_buckets_ms:
        buckets = state["b"]
        if b in buckets:
            merge(buckets[b], part)
        else:
            buckets[b] = _copy(part)


def take_late(state: Windowed) -> list[tuple[int, int, Agg]]:
    """Remove and return the parts that correct published windows: (size, start, part)."""
    late = state.pop("late", None)
    if not late:
        return []
    return [(size, start, part) for size, per_size in late.items() for start, part in sorted(per_size.items())]


def containing(state: Windowed, ts: int, spec: WindowSpec, watermark: int) -> list[Agg]:
    """The bucket and the still-open windows holding ``ts`` (to correct a value in place)."""
    out = []
    b = state["b"].get(bucket_start(ts, spec.bucket_ms))
    if b is not None:
        out.append(b)
    for size, per_size in state["w"].items():
        start = bucket_start(ts, size)
        if start in per_size and start + size + spec.grace_ms > watermark:
            out.append(per_size[start])
    return out


def trailing(state: Windowed, watermark: int, size: int, merge: Merge) -> Agg | None:
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


def close_due(state: Windowed, watermark: int, spec: WindowSpec) -> list[ClosedWindow]:
    """Remove and return every window whose ``end + grace`` the watermark has passed.

    Each window is returned once: it leaves the state as it is returned.
    """
    out: list[ClosedWindow] = []
    for size, per_size in state["w"].items():
        due = [start for start in per_size if start + size + spec.grace_ms <= watermark]
        for start in sorted(due):
            out.append(ClosedWindow(size, spec.label(size), start, start + size, per_size.pop(start)))
    return out


def prune(state: Windowed, watermark: int, spec: WindowSpec) -> bool:
    """Drop trailing buckets no trailing window can reach any more; True if any went."""
    low = watermark - spec.keep_buckets_ms
    buckets = state["b"]
    gone = [s for s in buckets if s <= low]
    for start in gone:
        del buckets[start]
    return bool(gone)


def is_empty(state: Windowed) -> bool:
    return not state["b"] and not any(state["w"].values()) and not state.get("late")


def decode_windowed(raw: dict[str, Any]) -> Windowed:
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
