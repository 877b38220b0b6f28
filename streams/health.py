"""Is the broker there, and does it still hold what this worker built on?

A worker must not hang silently when Kafka goes away. ``BrokerWatch`` probes the
bootstrap servers (a TCP connect, every few seconds): while none answers,
``/readyz`` says so; after ``BROKER_TIMEOUT`` the worker stops with an error
naming the setting, so its supervisor restarts it and the outage is visible.

When the broker comes back it may have lost its log (the embedded broker keeps
everything in memory; on Apache Kafka, an unclean leader election). A partition
whose log now ends *before* the offset this worker already committed is the
sign: the worker's state no longer matches the broker, so it stops loudly
instead of mixing old state with a new log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BrokerWatch", "BrokerLost", "offsets_gone", "shortened"]


class BrokerLost(RuntimeError):
    """The broker is gone for too long, or came back without the data this worker built on."""


@dataclass
class BrokerWatch:
    servers: list[tuple[str, int]]
    timeout_s: float
    down_since: float | None = None
    checked_at: float = field(default=0.0)

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
            return "reachable"
        now = time.monotonic() if now is None else now
        return f"unreachable for {now - self.down_since:.0f} s"


def shortened(topic: str, partition: int, end: int | None, committed: int | None) -> str | None:
    """A reason to stop if the partition's log ends before an offset already committed."""
    if end is None or committed is None or end >= committed:
        return None
    return (
        f"{topic}[{partition}] now ends at offset {end}, before offset {committed} this worker already "
        "committed: the broker lost data (an in-memory broker restarted?). This worker's state no longer "
        "matches the broker; stopping. Restart the workers with empty data dirs."
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
        f"at {off}, the broker has none): the broker lost data (an in-memory broker restarted?). This worker's "
        "state no longer matches the broker; stopping. Restart the workers with empty data dirs."
    )
