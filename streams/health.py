"""Is the broker there, and does it still hold what this worker built on? (``Watchdog``)

A worker must not hang silently when Kafka goes away. ``BrokerWatch`` probes the
bootstrap servers (a TCP connect, every few seconds): while none answers,
``/readyz`` says so; after ``BROKER_TIMEOUT`` the worker stops with an error
naming the setting, so its supervisor restarts it and the outage is visible.

When the broker comes back it may have lost its log (the embedded broker keeps
everything in memory; on Apache Kafka, an unclean leader election). A partition
whose log now ends *before* the offset this worker already committed is the
sign: the worker's state no longer matches the broker, so it stops loudly
instead of mixing old state with a new log. A broker that was unreachable and answers
again is asked at once for this group's committed offsets: an empty broker has none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition as KafkaTP

from . import changelog, clients

__all__ = ["BrokerWatch", "BrokerLost", "Watchdog", "offsets_gone", "shortened", "WRITES_STALLED_S"]

#: changelog records unanswered this long with none answered meanwhile: the cluster takes no
#: writes. Longer than a lost broker's leaderships take to move (fenced after 9 s, writes
#: acknowledged again 10-14 s after a SIGKILL, measured), so a failover does not flap readiness
WRITES_STALLED_S = 20.0


log = logging.getLogger("socialpulse")


class BrokerLost(RuntimeError):
    """The broker is gone for too long, or came back without the data this worker built on."""


@dataclass
class BrokerWatch:
    servers: list[tuple[str, int]]
    timeout_s: float
    down_since: float | None = None
    checked_at: float = field(default=0.0)
    #: seconds this worker's changelog records have waited with none acknowledged meanwhile
    writes_stalled_s: float = 0.0

    @classmethod
    def from_urls(cls, broker: str, timeout_s: float) -> BrokerWatch:
        servers = []
        for url in broker.split(","):
            host_port = url.strip().split("://", 1)[-1]
            host, _, port = host_port.rpartition(":")
            servers.append((host or host_port, int(port) if port.isdigit() else 9092))
        return cls(servers, timeout_s)

    async def reachable(self) -> bool:
        for host, port in self.servers:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
            except (TimeoutError, OSError):
                continue
            writer.close()
            return True
        return False

    async def check(self, now: float | None = None) -> bool:
        """Probe; True while the broker answers. Raises ``BrokerLost`` past the timeout."""
        now = time.monotonic() if now is None else now
        self.checked_at = now
        if await self.reachable():
            self.down_since = None
            return True
        if self.down_since is None:
            self.down_since = now
        if now - self.down_since > self.timeout_s:
            raise BrokerLost(
                f"no broker reachable at {self.describe()} for {now - self.down_since:.0f} s "
                f"(SOCIALPULSE_BROKER_TIMEOUT = {self.timeout_s:.0f} s): stopping"
            )
        return False

    def describe(self) -> str:
        return ",".join(f"{h}:{p}" for h, p in self.servers)

    def status(self, now: float | None = None) -> str:
        if self.down_since is None:
            if self.writes_stalled_s >= WRITES_STALLED_S:
                return f"writes not acknowledged for {self.writes_stalled_s:.0f} s"
            return "reachable"
        now = time.monotonic() if now is None else now
        return f"unreachable for {now - self.down_since:.0f} s"


#: what a worker says when the broker no longer holds what its state was built on
LOST_DATA = ("the broker lost data (an in-memory broker restarted?). This worker's state no longer matches the "
             "broker; stopping. Restart the workers with empty data dirs.")


def shortened(topic: str, partition: int, end: int | None, committed: int | None) -> str | None:
    """A reason to stop if the partition's log ends before an offset already committed."""
    if end is None or committed is None or end >= committed:
        return None
    return (
        f"{topic}[{partition}] now ends at offset {end}, before offset {committed} this worker already "
        f"committed: {LOST_DATA}"
    )


def offsets_gone(held: Mapping[Any, int | None], committed: Mapping[Any, int]) -> str | None:
    """A reason to stop if the broker holds none of the offsets this worker committed
    (``held``: what the broker answers for the group; ``committed``: what this worker
    committed, per partition)."""
    known = {tp: off for tp, off in committed.items() if off}
    if not known or any(held.get(tp) for tp in known):
        return None
    tp, off = next(iter(sorted(known.items())))
    return (
        f"the broker no longer holds this group's committed offsets ({tp.topic}[{tp.partition}] was committed "
        f"at {off}, the broker has none): {LOST_DATA}"
    )


class Watchdog:
    """A worker's watch over its broker and its consumer: stops it (``BrokerLost``) when the
    broker is gone past ``BROKER_TIMEOUT``, came back without the data the worker built on,
    or a rebalance hangs past ``REBALANCE_TIMEOUT``; tells readiness whether all is well."""

    def __init__(self, app: Any, settings: Any, metrics: Any) -> None:
        self.app, self.settings, self.metrics = app, settings, metrics
        self.broker = BrokerWatch.from_urls(settings.broker, settings.broker_timeout / 1000)
        self.rebalance_timeout_s = settings.rebalance_timeout / 1000
        self.lost: str | None = None  # why this worker must stop (the broker lost data)
        self.committed: dict[Any, int] = {}  # offsets this worker committed (compared after an outage)
        self.rebalancing_since: float | None = None

    def fine(self) -> bool:
        """The broker answers, takes this worker's writes and holds what this worker built on."""
        return self.broker.down_since is None and self.broker.writes_stalled_s < WRITES_STALLED_S and not self.lost

    def note_end(self, topic: str, partition: int, end: int | None, committed: int | None) -> None:
        """A partition's end as the consumer last saw it: before a committed offset, the broker lost data."""
        lost = shortened(topic, partition, end, committed)
        if lost:
            self.lost = lost

    async def check(self) -> None:
        """Every few seconds: is a broker reachable, and does it still hold our offsets?"""
        if self.lost:
            raise BrokerLost(self.lost)
        now = time.monotonic()
        # brokers that answer but acknowledge no write (too few in-sync replicas, no quorum): the
        # producer retries (PRODUCER_REQUEST_TIMEOUT, 20 min) and no offset is committed meanwhile
        was, self.broker.writes_stalled_s = self.broker.writes_stalled_s, changelog.write_stall(now)
        if (was >= WRITES_STALLED_S) != (stalled := self.broker.writes_stalled_s >= WRITES_STALLED_S):
            log.warning("broker %s: %s", self.broker.describe(),
                        self.broker.status() if stalled else "writes acknowledged again")
        if not self.app.rebalancing:
            self.rebalancing_since = None
        elif self.rebalancing_since is None:
            self.rebalancing_since = now
        elif now - self.rebalancing_since > self.rebalance_timeout_s:
            # e.g. Faust waiting to flush to a broker that died during the rebalance
            raise BrokerLost(
                f"a rebalance has not finished for {now - self.rebalancing_since:.0f} s "
                f"(SOCIALPULSE_REBALANCE_TIMEOUT): the consumer is stuck; stopping"
            )
        if now - self.broker.checked_at >= 2.0:
            was_down = self.broker.down_since is not None
            if not was_down:  # what this worker committed while the broker was there (a revocation forgets it)
                self.committed.update((tp, off) for tp, off in self.app.consumer._committed_offset.items() if off)  # type: ignore[attr-defined]
            up = await self.broker.check()
            self.metrics.broker_up.set(1 if up else 0)
            if not up:
                log.error("broker %s: %s", self.broker.describe(), self.broker.status())
            elif was_down:
                log.warning("broker %s reachable again: checking that it still holds this group's offsets", self.broker.describe())
                lost = await self.offsets_lost()
                if lost:
                    self.lost = lost
                    raise BrokerLost(lost)

    async def offsets_lost(self) -> str | None:
        """After an outage: a reason to stop if the broker no longer holds the offsets this
        worker committed (an in-memory broker restarted empty). Asked at once, before this
        worker's consumer has rejoined and could commit anew."""
        committed = dict(self.committed)
        if not committed:
            return None
        probe = clients.consumer(self.settings, group_id=self.app.conf.id, enable_auto_commit=False,
                                 client_id=f"{self.app.conf.broker_client_id}-offsets-probe")
        try:
            await asyncio.wait_for(probe.start(), 10)
            held = {}
            for tp in sorted(committed)[:16]:
                held[tp] = await asyncio.wait_for(probe.committed(KafkaTP(tp.topic, tp.partition)), 10)
        except Exception as exc:  # cannot tell: the other checks (and the broker timeout) still apply
            log.warning("could not read this group's offsets from the broker: %r", exc)
            return None
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(probe.stop(), 5)
        log.info("offsets of this group on the broker: %d of %d found", sum(1 for v in held.values() if v), len(held))
        return offsets_gone(held, committed)

