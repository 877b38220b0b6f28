"""What a metric family plugs into the keyed stage.

A family owns one slot of each key's state. The stage hands it the accepted
events of a key (already de-duplicated, not late, in arrival order), asks it to
close windows as the watermark moves, and asks it for gauge samples at scrape
time and for the key's JSON view on the account API.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from schemas.events import Event
from schemas.results import Result

__all__ = ["Family", "Gauge", "Sample"]


@dataclass(frozen=True, slots=True)
class Gauge:
    """A gauge a family exports: its Prometheus name, help and label names."""

    name: str
    help: str
    labels: tuple[str, ...]


#: (gauge name, label values in the gauge's label order, value)
Sample = tuple[str, tuple[str, ...], float]


class Family(Protocol):
    name: str
    #: input topics (bare names) whose events this family consumes
    topics: frozenset[str]
    gauges: tuple[Gauge, ...]

    def new_state(self) -> dict[str, Any]: ...

    def decode_state(self, raw: dict[str, Any]) -> dict[str, Any]: ...

    def apply(self, key: str, state: dict[str, Any], events: list[Event]) -> None: ...

    def close(self, key: str, state: dict[str, Any], watermark: int) -> list[Result]: ...

    def is_empty(self, state: dict[str, Any]) -> bool: ...

    def samples(self, key: str, state: dict[str, Any], watermark: int) -> Iterable[Sample]: ...

    def view(self, key: str, state: dict[str, Any], watermark: int) -> dict[str, Any]: ...
