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

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from schemas.events import Event
from schemas.results import ReplyBreach, Result

from .windows import ClosedWindow, Merge

__all__ = ["Family", "Gauge", "Sample", "Output", "HistogramValue", "Forward", "Tally"]


@dataclass(frozen=True, slots=True)
class Gauge:
    """A metric a family exports: its Prometheus name, help, label names and type
    (``gauge``, ``counter`` or ``histogram``)."""

    name: str
    help: str
    labels: tuple[str, ...]
    kind: str = "gauge"


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


#: what a family publishes: closed-window results, reply-SLA breaches, internal records, tallies
Output = Result | ReplyBreach | Forward | Tally


class Family(Protocol):
    name: str
    #: input topics (bare names) whose events this family consumes
    topics: frozenset[str]
    gauges: tuple[Gauge, ...]

    @property
    def merge(self) -> Merge | None:
        """How two of its window aggregates combine (a correction merges late data into a
        closed window); None for a family without windows."""
        ...

    def new_state(self) -> dict[str, Any]: ...

    def decode_state(self, raw: dict[str, Any]) -> dict[str, Any]: ...

    def apply(self, key: str, state: dict[str, Any], events: list[Event], watermark: int) -> list[Output]:
        """Fold a key's accepted events (arrival order) in; return anything due now."""
        ...

    def close(self, key: str, state: dict[str, Any], watermark: int) -> tuple[list[Output], bool]:
        """Outputs due at this watermark (other than closed windows), and whether the state changed."""
        ...

    def windowed(self, state: dict[str, Any]) -> dict[str, Any] | None:
        """The family's windowed aggregates (``streams.windows``), or None for a family without windows."""
        ...

    def results(self, key: str, cw: ClosedWindow, state: dict[str, Any], revision: int) -> list[Output]:
        """The records of one closed window; ``revision`` 0 first, +1 per correction."""
        ...

    def is_empty(self, state: dict[str, Any]) -> bool: ...

    def samples(self, key: str, state: dict[str, Any], watermark: int) -> Iterable[Sample]: ...

    def view(self, key: str, state: dict[str, Any], watermark: int) -> dict[str, Any]: ...
