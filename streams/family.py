"""What a metric family plugs into the keyed stage.

A family owns one slot of each key's state. The stage hands it the accepted
events of a key (already de-duplicated, not late, in arrival order), tells it
when the watermark moves, and asks it for gauge samples at scrape time and for
the key's JSON view on the account API.

A windowed family keeps its buckets and open windows in ``windowed(state)``
(``streams.windows``); the stage closes those windows, keeps each closed one for
the allowed lateness, and asks ``results`` for a window's records when it is
first published and again, with the next revision, after late data changed it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, Self

from schemas.events import Event
from schemas.results import Result

from .pages import RECORD_MAX
from .windows import ClosedWindow, Merge, Windowed, WindowSpec

__all__ = ["Family", "Gauge", "Sample", "Output", "HistogramValue", "Forward", "Tally", "Record", "Route", "RECORD_MAX"]


#: the metric types a family's gauge can have
KINDS = ("gauge", "counter", "histogram", "summary")


@dataclass(frozen=True, slots=True)
class Gauge:
    """A metric a family exports: its Prometheus name, help, label names and type
    (``gauge``, ``counter``, ``histogram`` or ``summary``), and how it behaves when a worker
    owns more accounts than ``/metrics`` exports one by one (``streams.exporter.SeriesPolicy``):

    - ``additive``: its values add up across accounts (counts, sums, counters, histograms), so
      the accounts beyond the exported ones are summed under ``account="other"`` and
      ``sum by (platform)`` stays exact. False for ratios, means, quantiles, top-N-capped
      series: those are not exported for the folded accounts.
    - ``extreme``: for a non-additive gauge, ``"min"`` or ``"max"``: the folded accounts'
      extreme is exported under ``account="other"`` instead (the oldest waiting message).
    - ``detail``: labels whose values are an account's own (agents): a folded account's are
      folded into ``"other"`` too, so ``account="other"`` stays a few series per platform.
    - ``activity``: its value counts the account's events in a trailing window; the sum of
      these ranks the accounts (the most active keep their own series) unless the stage
      tells the exporter each account's activity.
    """

    name: str
    help: str
    labels: tuple[str, ...]
    kind: str = "gauge"
    additive: bool = True
    extreme: Literal["min", "max"] | None = None
    detail: tuple[str, ...] = ()
    activity: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.extreme is not None and (self.additive or self.extreme not in ("min", "max") or self.kind != "gauge"):
            raise ValueError(f"{self.name}: extreme is 'min' or 'max', of a non-additive gauge")
        if self.kind == "summary" and self.additive:
            raise ValueError(f"{self.name}: a summary's quantiles do not add up (additive=False)")
        if not set(self.detail) <= set(self.labels) - {"platform", "account"}:
            raise ValueError(f"{self.name}: detail labels must be among its labels (not platform or account)")



#: a histogram sample's value: cumulative (le, count) pairs ending with +Inf, and the sum
HistogramValue = tuple[list[tuple[str, float]], float]
#: a summary sample's value: (quantile, value) pairs, count and sum
SummaryValue = tuple[list[tuple[str, float]], int, float]
#: (metric name, label values in the metric's label order, value)
Sample = tuple[str, tuple[str, ...], "float | HistogramValue | SummaryValue"]
@dataclass(frozen=True, slots=True)
class Forward:
    """An internal record for another keyed stream (e.g. a credit for an account)."""

    stream: str
    key: str
    topic: str
    event: dict[str, Any]
    source: str  # the input topic it derives from, for counters and dead letters


@dataclass(frozen=True, slots=True)
class Tally:
    """Add ``n`` to a process-wide counter (for numbers no single key owns)."""

    metric: str
    labels: tuple[str, ...]
    n: float = 1.0


@dataclass(frozen=True, slots=True)
class Record:
    """A record for an output topic other than the results (``streams.topics``), e.g. a
    reply-SLA breach on ``socialpulse.breaches``."""

    topic: str  # the bare output topic name
    key: str
    value: bytes | None  # None: a tombstone (e.g. a breach withdrawn)


@dataclass(frozen=True, slots=True)
class Route:
    """An input topic a family needs, and the key its events are kept under. The keyed
    stream is the family's stage; ``primary``: the events are counted (accepted, duplicate,
    late) on this route. Each input topic has exactly one primary route (``streams.routing``)."""

    topic: str
    key: Callable[[Event], str | None]  # None: this event does not go this way (only for a secondary route)
    primary: bool = True


#: what a family publishes: closed-window results, records for other output topics,
#: internal records for another keyed stream, tallies
Output = Result | Record | Forward | Tally


class Family(Protocol):
    name: str
    #: topics (bare names) whose events this family consumes: its routes' and internal ones
    topics: frozenset[str]
    #: the input topics it needs and how their events are keyed
    routes: tuple[Route, ...]
    #: per-key metrics (sampled from the state at scrape time)
    gauges: tuple[Gauge, ...]
    #: process-wide counters its ``Tally`` outputs add to
    counters: tuple[Gauge, ...]

    @classmethod
    def from_settings(cls, settings: Any, spec: WindowSpec) -> Self:
        """The family as the worker's settings configure it."""
        ...

    def constants(self) -> Iterable[tuple[Gauge, float]]:
        """Label-less gauges whose value is fixed by the settings (e.g. an SLO)."""
        ...

    @property
    def merge(self) -> Merge | None:
        """How two of its window aggregates combine (a correction merges late data into a
        closed window); None for a family without windows."""
        ...

    # A key's slot of this family: each family types it (a TypedDict, e.g. ``engagement.family.State``)
    # and owns its codec: ``new_state``, ``decode_state`` (from the changelog's JSON).
    def new_state(self) -> Any: ...

    def decode_state(self, raw: dict[str, Any]) -> Any: ...

    def apply(self, key: str, state: Any, events: list[Event], watermark: int) -> list[Output]:
        """Fold a key's accepted events (arrival order) in; return anything due now."""
        ...

    def close(self, key: str, state: Any, watermark: int) -> tuple[list[Output], bool]:
        """Outputs due at this watermark (other than closed windows), and whether the state changed."""
        ...

    def windowed(self, state: Any) -> Windowed | None:
        """The family's windowed aggregates (``streams.windows``), or None for a family without windows."""
        ...

    def results(self, key: str, cw: ClosedWindow, state: Any, revision: int) -> list[Output]:
        """The records of one closed window; ``revision`` 0 first, +1 per correction."""
        ...

    def is_empty(self, state: Any) -> bool: ...

    def samples(self, key: str, state: Any, watermark: int) -> Iterable[Sample]: ...

    def view(self, key: str, state: Any, watermark: int) -> dict[str, Any]: ...
