"""Keeping the account book current from ``socialpulse.accounts`` (the Kafka side of
``streams/accounts.py``).

Every worker reads every partition of the topic from the start with its own consumer (no
group, nothing committed) and keeps reading while it runs, so a change applies without a
restart. Reading from the start and keeping the last record per key gives what compaction
would (Tansu never compacts). ``caught_up`` turns true once the topic was read to its end at
start-up: the worker is not ready before (results never use settings older than the topic's).
The reported end can be too low on Tansu (ListOffsets after a batch of several records), so
the end is "the reported end passed, then a poll that brings nothing for a second".

A bad record (not JSON, not valid, a key that is not its account) changes nothing: it is
counted (``socialpulse_account_settings_total{outcome="invalid"}``), logged, and
dead-lettered on ``socialpulse.dlq`` with its reason. Records written before this worker
started were dead-lettered by the workers running then, so a restart does not repeat them;
with several workers each dead-letters a new bad record (source topic, partition and offset
tell the copies apart).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry, Counter

from . import clients
from .accounts import AccountBook, RecordRejected
from .ingest import Raw, Rejection
from .ingest import dead_letter_value as ingest_dead_letter_value
from .settings import Settings
from .topics import ACCOUNTS

__all__ = ["AccountsReader", "QUIET_S"]

log = logging.getLogger("socialpulse.accounts")

#: a poll this long that brings nothing, once the reported end is passed, ends the start-up read
QUIET_S = 1.0
OUTCOMES = ("applied", "removed", "invalid")


class AccountsReader:
    def __init__(self, settings: Settings, book: AccountBook, registry: CollectorRegistry,
                 reject: Callable[[Rejection], None]) -> None:
        """``reject``: sends a dead letter (and counts it) the way the worker's other rejections go."""
        self.settings = settings
        self.book = book
        self.topic = settings.topic(ACCOUNTS)
        self.reject = reject
        self.caught_up = False
        #: per partition, the next offset to read (a consumer built again after an error goes on from there)
        self.next: dict[int, int] = {}
        self.started_ms = int(time.time() * 1000)
        self.outcomes = Counter("socialpulse_account_settings", "Records of socialpulse.accounts read, by outcome "
                                "(applied, removed: a tombstone, invalid: dead-lettered, nothing changed).",
                                ["outcome"], registry=registry)
        for outcome in OUTCOMES:
            self.outcomes.labels(outcome)

    async def run(self) -> None:
        """Read the topic for as long as the worker runs (a Faust task)."""
        while True:
            consumer = clients.reader(self.settings)
            try:
                await consumer.start()
                tps = await self._assign(consumer)
                if not self.caught_up:
                    await self._catch_up(consumer, tps)
                while True:
                    await self._poll(consumer, QUIET_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker went away, metadata changed: start over (the book stays)
                log.warning("reading %s failed (%s: %s); reading it again from the start", self.topic,
                            type(exc).__name__, exc)
                await asyncio.sleep(1.0)
            finally:
                await consumer.stop()

    async def _assign(self, consumer: Any) -> list[TopicPartition]:
        while True:
            # metadata of every topic: a consumer without a subscription keeps none in its own
            # cache (Apache Kafka answers it with no topic; Tansu with all of them)
            cluster = await consumer._client.fetch_all_metadata()
            partitions = cluster.partitions_for_topic(self.topic)
            if partitions:
                tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
                consumer.assign(tps)
                for tp in tps:
                    if tp.partition in self.next:
                        consumer.seek(tp, self.next[tp.partition])
                    else:
                        await consumer.seek_to_beginning(tp)
                return tps
            log.warning("topic %s not found yet", self.topic)
            await asyncio.sleep(1.0)

    async def _catch_up(self, consumer: Any, tps: list[TopicPartition]) -> None:
        began = time.monotonic()
        ends = await consumer.end_offsets(tps)
        read, passed = 0, False
        while True:
            n = await self._poll(consumer, QUIET_S)
            read += n
            if passed and n == 0:
                break
            if not passed:
                positions = [await consumer.position(tp) for tp in tps]
                passed = all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True))
        self.caught_up = True
        log.info("%s read to its end: %d records, %d accounts from the topic, %d in all (%.1f s)", self.topic,
                 read, len(self.book.layers["topic"]), len(self.book.keys()), time.monotonic() - began)

    async def _poll(self, consumer: Any, timeout_s: float) -> int:
        batches = await consumer.getmany(timeout_ms=int(timeout_s * 1000))
        n = 0
        for tp, records in batches.items():
            for r in records:
                self.handle(Raw(tp.topic, tp.partition, r.offset, r.value, r.timestamp), r.key)
                self.next[tp.partition] = r.offset + 1
                n += 1
        return n

    def handle(self, raw: Raw, key: bytes | None) -> None:
        """One record: applied to the book, or rejected with nothing changed."""
        try:
            outcome = self.book.apply(key, raw.value)
        except RecordRejected as exc:
            self.outcomes.labels("invalid").inc()
            log.warning("%s[%d]@%d rejected (%s): %s", raw.topic, raw.partition, raw.offset, exc.reason, exc.detail)
            if self.caught_up or raw.timestamp >= self.started_ms:
                self.reject(Rejection(raw, exc.reason, exc.detail))
            return
        self.outcomes.labels(outcome).inc()
        log.info("account settings %s: %s (version %d)", outcome, (key or b"").decode(errors="replace"),
                 self.book.version)


def dead_letter_value(rejection: Rejection) -> bytes:
    """The JSON of a dead letter (``schemas.results.DeadLetter``), within the record bound."""
    return ingest_dead_letter_value(rejection)
