"""Faust's Kafka consumer with a few changes: batch lanes, commits after sends, holes read again, short fetch waits,
true changelog ends.

Faust stays the control plane: consumer group, partition assignment, pausing
during recovery, offset commits, changelog-backed tables and the web server.
Two things of its per-message data path do not fit a metrics service:

* **Lanes.** Faust hands every message on its own to a stream, wrapped in an
  Event and waited on with ``wait_first`` (several asyncio tasks per message):
  about 150 us each, whatever the agent does. A lane is a plain function that
  gets each fetched batch of its topic whole, as aiokafka records grouped by
  partition. It runs synchronously (no other coroutine can interleave, so a
  rebalance never sees half a batch); afterwards the batch's offsets are acked
  exactly as Faust acks stream events, so commits and graceful shutdown work
  unchanged. Topics without a lane (the table changelogs) take Faust's path.

* **Commits after sends.** A commit first has the stages flush their record
  cache (``app.before_commit``: the state the processed batches changed), then
  waits until every record those batches sent is in the Kafka client and
  acknowledged by the broker.

* **Holes are read again.** Faust takes a batch that starts above the next offset to read
  for a gap (compaction, transaction markers) and acks the missing offsets, so the next
  commit passes them. Records fetched and set aside around a rebalance (a fetch that
  returned after the seek to the committed offsets) made such holes, and their events
  were lost. A lane reads a hole again once, from its start; only a hole Kafka still has
  then (above the group's committed offset) is a gap. A lane's records in a fetch that
  spans a completed rebalance are set aside (a changelog's go on to Faust's recovery).

* **Short fetch waits.** A fetch waits at most ``fetch_max_wait_ms`` (100 ms)
  for data, not Faust's fixed 1.5 s: an event crosses two topics.

* **Changelog ends.** Table recovery reads each changelog partition up to the
  offset ListOffsets(latest) reports. Tansu reports the base offset of the
  newest batch there, too low when that batch holds several records, so a
  recovering worker stopped short and lost the last updates of a key. With
  ``true_ends`` the end is taken from a fetch response's high watermark
  instead (which Tansu reports correctly), by fetching the newest batch once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as KafkaTP
from aiokafka.consumer.group_coordinator import GroupCoordinator
from faust.exceptions import ProducerSendError
from faust.transport.drivers import aiokafka as driver
from faust.types import TP
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

from . import clients
from .changelog import send_failures

__all__ = ["App", "Lane", "Membership", "acknowledged", "ebb", "fenced"]

log = logging.getLogger("socialpulse")

class Membership:
    """When the group coordinator last confirmed this worker's membership (a heartbeat it
    accepted, or a completed join), as seen by aiokafka's coordinator in the consumer thread.

    A worker stopped longer than the session timeout (a long GC pause, a frozen VM, SIGSTOP)
    has been removed from the group and its partitions given to others, but it wakes up still
    holding their state and runs on for a moment before a heartbeat tells it so. What it would
    write then (state flushed by a commit or a revocation) lands in changelogs whose new owner
    has already restored them, and a later restore mixes the two (seen on Kafka: a slot "written
    twice"). So while the last confirmation is older than the session timeout the worker writes
    no state and commits nothing; a revocation then drops its partitions unwritten (their input
    was not committed: their next owner reads it again)."""

    confirmed_at: float | None = None

    @classmethod
    def fenced_for(cls, session_timeout_s: float) -> float | None:
        """Seconds since the last confirmation if that is longer than the session timeout."""
        at = cls.confirmed_at
        if at is None:
            return None
        quiet = time.monotonic() - at
        return quiet if quiet > session_timeout_s else None


_do_heartbeat = GroupCoordinator._do_heartbeat
_on_join_complete = GroupCoordinator._on_join_complete


async def _confirmed_heartbeat(self: GroupCoordinator) -> Any:
    ok = await _do_heartbeat(self)
    if ok:
        Membership.confirmed_at = time.monotonic()
    return ok


async def _confirmed_join(self: GroupCoordinator, *args: Any, **kwargs: Any) -> Any:
    result = await _on_join_complete(self, *args, **kwargs)
    Membership.confirmed_at = time.monotonic()
    return result


GroupCoordinator._do_heartbeat = _confirmed_heartbeat  # type: ignore[method-assign]
GroupCoordinator._on_join_complete = _confirmed_join  # type: ignore[method-assign]


def fenced(app: Any) -> float | None:
    """Seconds without a confirmed membership, if longer than the session timeout (``Membership``)."""
    if Membership.confirmed_at is None:  # (not in a group yet, or no group at all)
        return None
    return Membership.fenced_for(float(app.conf.broker_session_timeout))


#: records waiting in the producer beyond which the consumer reads no more until they went out
BACKLOG_MESSAGES = 100_000

async def ebb(buffer: Any, above: int = BACKLOG_MESSAGES, below: int = BACKLOG_MESSAGES // 2) -> None:
    """With more than ``above`` records waiting in Faust's producer buffer, wait until fewer
    than ``below`` are (its own ``wait_until_ebb`` sends 100 and returns)."""
    if buffer.size <= above:
        return
    deadline = time.monotonic() + 60
    while buffer.size > below and not buffer.should_stop and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


async def acknowledged(app: Any, timeout: float = 30.0) -> str | None:
    """Wait until every record sent so far is in the Kafka client and acknowledged by the
    broker; None once it is, else why not (Faust's own flush gives up when no message left its
    buffer for 0.1 s: on a busy broker it returns with records still waiting)."""
    buffer = app.producer.buffer
    deadline = time.monotonic() + timeout
    # (a stopping producer drains no more: then Faust's own flush decides)
    while buffer.size and not buffer.should_stop and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0)  # the message being handed over right now
    try:
        await asyncio.wait_for(app.producer.flush(), timeout=max(deadline - time.monotonic(), 1.0))
    except TimeoutError:
        return f"sent records not acknowledged by the broker within {timeout:.0f} s"
    except RuntimeError as exc:  # the producer is stopping (a crash): nothing is confirmed
        return str(exc)
    return None


#: A lane: gets one fetched batch, records by partition, and processes it synchronously.
Lane = Callable[[dict[TP, list[Any]]], None]


class ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Faust waits up to 1.5 s for a fetch to fill; an event crosses two topics on its
        # way to /metrics, so a shorter wait is most of the freshness budget
        consumer._fetch_max_wait_ms = self.app.fetch_max_wait_ms  # type: ignore[attr-defined]
        return consumer


class Consumer(driver.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: partitions whose read offset is the next one to read (set by a seek), not the last one read
        self._sought: set[TP] = set()
        #: partitions being read again from this offset (``_refill``)
        self._refilling: dict[TP, int] = {}
        super().__init__(*args, **kwargs)

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - runs inside the worker
        lanes: dict[str, Lane] = self.app.lanes  # type: ignore[attr-defined]
        callback = self.callback
        read_offset = self._read_offset
        try:
            while not (self.should_stop or fetcher.should_stop):
                before = self.app.consumer_generation_id
                records, active = await self._wait_next_records(1.0)
                await self.sleep(0)
                if not records or self.should_stop:
                    continue
                generation = self.app.consumer_generation_id
                # a lane's records fetched before a rebalance that completed meanwhile: Faust has since
                # sought its partitions back to the committed offsets, and they come again from there
                # (the hole they leave is read again: ``_refill``). A changelog's go on to Faust's
                # recovery, which sought them itself and waits for them.
                spanned = generation != before
                batches: dict[str, dict[TP, list[Any]]] = defaultdict(dict)
                for tp, recs in records.items():
                    if not self.flow_active or self.app.consumer_generation_id != generation:
                        break  # a rebalance began: Faust seeks back to the committed offsets
                    lane = lanes.get(tp.topic)
                    if lane is not None and spanned:
                        continue
                    # (a lane's partition paused meanwhile, by alignment, is still read: records set aside
                    # here would leave a hole below the next ones, taken for a gap and committed)
                    if lane is None and active is not None and tp not in active and tp not in self._buffered_partitions:
                        continue
                    # after a seek this is the next offset to read (so >=, as in Faust)
                    r_offset = read_offset[tp]
                    fresh = [r for r in recs if r_offset is None or r.offset >= r_offset]
                    if not fresh:
                        continue
                    if lane is None:
                        for record in fresh:  # Faust's own path, one message at a time
                            await self.wait_first(callback(self._to_message(tp, record)), self.suspend_flow.wait())
                            read_offset[tp] = record.offset
                        continue
                    if await self._refill(tp, r_offset, fresh[0].offset):
                        continue
                    await self._note_gaps(tp, read_offset[tp], fresh)  # (as ``_refill`` left it)
                    batches[tp.topic][tp] = fresh
                for topic, by_tp in batches.items():
                    if not self.flow_active or self.app.consumer_generation_id != generation:
                        break
                    lanes[topic](by_tp)
                    self._ack_batch(by_tp)
                await ebb(self.app.producer.buffer)  # back-pressure: read on once what the lanes sent went out
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise

    def _next_offset(self, tp: TP, r_offset: int | None) -> int | None:
        """The offset the next record of ``tp`` should have: the read offset is the next one to
        read after a seek (Faust's convention), the last one read after a batch."""
        if r_offset is None:
            return None
        return r_offset if tp in self._sought else r_offset + 1

    async def _refill(self, tp: TP, r_offset: int | None, first: int) -> bool:
        """A batch that starts above the next offset to read leaves a hole. Faust counts a hole
        as a gap (acked, then committed), right for what compaction or transaction markers
        removed, but a loss when records were fetched and set aside (around a rebalance, a
        seek racing a fetch). So a hole is read again once, by a seek to its start; only a
        hole that is still there then is taken for a gap (``_note_gaps``). True: set aside."""
        expected = self._next_offset(tp, r_offset)
        if expected is None or first <= expected:
            self._refilling.pop(tp, None)
            return False
        # a partition that came back after another worker read it: Kafka positioned it at the
        # group's committed offset, above what this worker last read here (nothing is missing)
        committed = await self._broker_committed(tp)
        if committed is not None and first <= committed:
            self._read_offset[tp] = first  # the next to read: nothing below it is this worker's
            self._sought.add(tp)
            self._refilling.pop(tp, None)
            return False
        start = expected if committed is None else max(expected, committed)
        if self._refilling.get(tp) == start:  # read again from there: Kafka has nothing in between
            self._refilling.pop(tp, None)
            self._read_offset[tp] = start
            self._sought.add(tp)
            return False
        self._refilling[tp] = start
        log.warning("%s[%d]: records from %d read while %d was next (committed: %s): read again from %d",
                    tp.topic, tp.partition, first, expected, committed, start)
        await self.seek(tp, start)
        return True

    async def _broker_committed(self, tp: TP) -> int | None:
        """The group's committed offset of ``tp`` as the broker has it (None: none, or no answer)."""
        thread = self._thread
        try:
            return await thread.call_thread(thread._ensure_consumer().committed, KafkaTP(tp.topic, tp.partition))  # type: ignore[no-any-return]
        except Exception as exc:  # noqa: BLE001 - then the hole is read again from where this worker stopped
            log.warning("committed offset of %s[%d] unknown (%s: %s)", tp.topic, tp.partition, type(exc).__name__, exc)
            return None

    async def seek(self, partition: TP, offset: int) -> None:
        await super().seek(partition, offset)
        self._sought.add(partition)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        self._sought.update(self._read_offset)

    async def _note_gaps(self, tp: TP, r_offset: int | None, recs: list[Any]) -> None:
        """Offsets a compacted or transactional topic skips count as acked (as in Faust)."""
        expected = self._next_offset(tp, r_offset)
        for record in recs:
            if expected is not None and record.offset > expected and self.app.topics.acks_enabled_for(tp.topic):
                log.info("offsets %d..%d of %s[%d] skipped by Kafka (compacted, or transaction markers)",
                         expected, record.offset - 1, tp.topic, tp.partition)
                await self._add_gap(tp, expected, record.offset)
            expected = record.offset + 1

    def _ack_batch(self, by_tp: dict[TP, list[Any]]) -> None:
        """Ack a processed batch the way Faust acks stream events, without an Event per record."""
        with ack_lock:
            for tp, recs in by_tp.items():
                self._read_offset[tp] = recs[-1].offset
                self._sought.discard(tp)
                if not self.app.topics.acks_enabled_for(tp.topic):
                    continue
                committed = self._committed_offset[tp]
                index, acked = self._acked_index[tp], self._acked[tp]
                for record in recs:
                    offset = record.offset
                    if (committed is None or offset >= committed) and offset not in index:
                        index.add(offset)
                        acked.append(offset)
                        self._n_acked += 1
        notify(self._waiting_for_ack)

    async def _commit_tps(self, tps: Any, start_new_transaction: bool) -> bool:
        """Commit only what the broker has: the offsets of the batches processed so far, once
        every record they sent is acknowledged.

        Faust's own flush gives up when no message left its buffer for 0.1 s (a busy
        broker), so a commit could overtake the changelog and forwarded records of the
        very batches it covers; a crash then would lose them.
        """
        # the offsets of the batches processed so far: batches the lanes process while this
        # commit waits for the broker are not covered by its flush, so not by this commit
        offsets = self._filter_committable_offsets(tps)
        if not offsets:
            return False
        if (quiet := fenced(self.app)) is not None:
            log.warning("commit skipped: membership not confirmed for %.0f s (a stall past the session timeout)", quiet)
            return False
        # the state those batches changed is in the stages' record cache: write it now (no
        # await since the offsets were taken, so the flush covers every batch they cover)
        flush = getattr(self.app, "before_commit", None)
        if flush is not None:
            flush()
        # and until the broker has them: a commit that reached the coordinator before the
        # changelog records of its batches would lose their updates if the worker died
        problem = await acknowledged(self.app)
        if problem is not None:
            log.warning("commit skipped: %s", problem)
            return False
        if send_failures():  # a record these offsets depend on was refused: read the input again
            refused = RuntimeError(f"{send_failures()} state or forwarded records were refused by the broker; "
                                   "stopping without committing, so their input is read again on restart")
            log.critical("%s", refused)
            await self.crash(refused)
            return False
        try:
            await self._handle_attached(offsets)
        except ProducerSendError as exc:
            await self.crash(exc)
            return False
        return bool(await self._commit_offsets(offsets, start_new_transaction=start_new_transaction))

    async def highwaters(self, *partitions: TP) -> Any:
        reported = await super().highwaters(*partitions)
        if not getattr(self.app, "true_ends", False) or not partitions:
            return reported
        return await self._true_ends(reported)

    async def _true_ends(self, reported: Mapping[TP, int]) -> dict[TP, int]:
        """Fetch each partition's newest batch once; the response's high watermark is the end."""
        probe = clients.consumer(
            self.app.settings,  # type: ignore[attr-defined]
            enable_auto_commit=False,
            client_id=f"{self.app.conf.broker_client_id}-end-probe",
        )
        await probe.start()
        try:
            tps = {tp: KafkaTP(tp.topic, tp.partition) for tp in reported}
            probe.assign(list(tps.values()))
            for tp, ktp in tps.items():
                probe.seek(ktp, max((reported[tp] or 0) - 1, 0))
            ends = dict(reported)
            pending = set(tps)
            for _ in range(60):  # each round waits at most fetch_max_wait (0.5 s)
                await probe.getmany(timeout_ms=500)
                for tp in list(pending):
                    high = probe.highwater(tps[tp])
                    if high is not None:
                        if high != reported[tp]:
                            log.info("changelog %s[%d]: end %s (ListOffsets said %s)", tp.topic, tp.partition, high, reported[tp])
                        ends[tp] = max(high, reported[tp] or 0)
                        pending.discard(tp)
                if not pending:
                    break
            if pending:
                log.warning("no fetch answer for %d changelog partitions: using ListOffsets for them", len(pending))
            return ends
        finally:
            await probe.stop()


class Transport(driver.Transport):
    Consumer = Consumer


class App(faust.App):
    """A ``faust.App`` whose consumer knows lanes (``app.lanes[topic] = fn``)."""

    def __init__(self, *args: Any, settings: Any = None, true_ends: bool = False, fetch_max_wait_ms: int = 100, **kwargs: Any) -> None:
        self.lanes: dict[str, Lane] = {}
        self.settings = settings  # the clients it builds itself come from them (streams/clients.py)
        self.true_ends = true_ends
        self.fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)
