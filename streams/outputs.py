"""What a worker writes besides its state: closed-window results, records for the other
output topics (reply-SLA breaches), dead letters, and the counters that go with them.

Families return ``Output`` values (``streams.family``); everything but a ``Forward`` (an
internal record for another keyed stream, which the pipeline routes) ends here. The
output topic names come from ``streams.topics``, the one source of them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from typing import Any

from schemas.results import Result

from .exporter import Metrics
from .family import Forward, Output, Record, Tally
from .ingest import OUTCOME_OF, Rejection, dead_letter_value
from .pages import RECORD_MAX
from .topics import BREACHES, DLQ, RESULTS

__all__ = ["Outputs"]

log = logging.getLogger("socialpulse")


class Outputs:
    def __init__(self, app: Any, topic: Any, bare: dict[str, str], prefix: str, metrics: Metrics) -> None:
        """``topic``: full topic name of a bare one (``Settings.topic``); ``bare``: input topic
        full name -> bare name (dead letters are counted by their bare source topic)."""
        self.topics = {name: app.topic(topic(name), key_type=bytes, value_type=bytes) for name in (RESULTS, BREACHES, DLQ)}
        self.bare = bare
        self.prefix = prefix
        self.metrics = metrics
        self._sent = {name: self._on_sent(name) for name in self.topics}
        self.largest: dict[str, int] = {}  # bare topic -> the largest record written (key and value)

    def sized(self, topic: str, size: int) -> None:
        """Note a record of ``size`` bytes written to ``topic`` (bare name): the largest is a gauge,
        and one over the bound (``RECORD_MAX``: none should be) is logged."""
        if size > self.largest.get(topic, 0):
            self.largest[topic] = size
            self.metrics.record_max.labels(topic).set(size)
            if size > RECORD_MAX:
                log.error("a record of %d bytes to %s passes the bound of %d (RECORD_MAX)", size, topic, RECORD_MAX)

    def publish(self, outputs: Iterable[Output]) -> list[Forward]:
        """Send results and records, add tallies; return the forwards (for the pipeline to route)."""
        families: Counter[str] = Counter()
        forwards: list[Forward] = []
        results, biggest = self.topics[RESULTS], 0
        for r in outputs:
            if isinstance(r, Result):
                key, value = r.key.encode(), r.model_dump_json().encode()
                biggest = max(biggest, len(key) + len(value))
                results.send_soon(key=key, value=value, callback=self._sent[RESULTS])
                families[r.family] += 1
            elif isinstance(r, Forward):
                forwards.append(r)
            elif isinstance(r, Tally):
                counter = self.metrics.tallies[r.metric]
                (counter.labels(*r.labels) if r.labels else counter).inc(r.n)
            elif isinstance(r, Record):
                key = r.key.encode()
                self.topics[r.topic].send_soon(key=key, value=r.value, callback=self._sent[r.topic])
                self.sized(r.topic, len(key) + len(r.value or b""))
        if biggest:
            self.sized(RESULTS, biggest)
        for fam, n in families.items():
            self.metrics.results.labels(fam).inc(n)
        return forwards

    def reject(self, rejections: Iterable[Rejection]) -> None:
        """Dead-letter each rejection, counted by source topic, outcome and reason."""
        counts: Counter[tuple[str, str]] = Counter()
        dlq, sent = self.topics[DLQ], self._sent[DLQ]
        biggest = 0
        for rej in rejections:
            bare = self.bare.get(rej.raw.topic) or rej.raw.topic.removeprefix(self.prefix)
            counts[(bare, rej.reason)] += 1
            value = dead_letter_value(rej)
            biggest = max(biggest, len(value))
            dlq.send_soon(value=value, callback=sent)
        if biggest:
            self.sized(DLQ, biggest)
        for (bare, reason), n in counts.items():
            self.metrics.events.labels(bare, OUTCOME_OF[reason]).inc(n)
            self.metrics.dead_letters.labels(bare, reason).inc(n)

    def _on_sent(self, topic: str) -> Any:
        def callback(fut: Any) -> None:
            if fut.cancelled() or fut.exception() is not None:
                self.metrics.publish_errors.labels(topic).inc()
                log.error("publish to %s failed: %r", topic, None if fut.cancelled() else fut.exception())

        return callback
