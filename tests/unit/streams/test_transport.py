"""The lanes' transport (streams/transport.py) without a broker: a commit covers only what
the broker acknowledged, a processed batch is acked the way Faust acks events, and the
back-pressure wait lets a full producer buffer drain."""

import asyncio
from collections import defaultdict
from types import SimpleNamespace

from faust.types import TP

from streams.transport import Consumer, ebb

TPA = TP("in", 0)


class Producer:
    def __init__(self, flush_error=None):
        self.buffer = SimpleNamespace(size=0, should_stop=False)
        self.flush_error = flush_error
        self.log: list[str] = []

    async def flush(self):
        self.log.append("flush")
        if self.flush_error:
            raise self.flush_error


def consumer(producer):
    """A Consumer with just the members _commit_tps and _ack_batch use."""
    c = object.__new__(Consumer)
    c.app = SimpleNamespace(producer=producer, topics=SimpleNamespace(acks_enabled_for=lambda topic: True))
    c._filter_committable_offsets = lambda tps: {TPA: 42}
    c._sought, c._refilling = set(), {}

    async def attached(offsets):
        producer.log.append("attached")

    async def commit(offsets, start_new_transaction):
        producer.log.append(f"commit {offsets[TPA]}")
        return True

    c._handle_attached, c._commit_offsets = attached, commit
    return c


def test_a_commit_waits_until_the_broker_has_every_record_its_batches_sent():
    producer = Producer()
    assert asyncio.run(consumer(producer)._commit_tps({TPA}, False)) is True
    assert producer.log == ["flush", "attached", "commit 42"]


def test_no_commit_when_the_broker_did_not_acknowledge():
    for error in (TimeoutError(), RuntimeError("producer stopping")):
        producer = Producer(flush_error=error)
        assert asyncio.run(consumer(producer)._commit_tps({TPA}, False)) is False
        assert producer.log == ["flush"]  # never committed


def test_a_processed_batch_is_acked_as_faust_acks_events():
    c = consumer(Producer())
    c._read_offset, c._committed_offset = defaultdict(lambda: None), defaultdict(lambda: None)
    c._committed_offset[TPA] = 5
    c._acked_index, c._acked, c._n_acked = defaultdict(set), defaultdict(list), 0
    c._waiting_for_ack = None
    recs = [SimpleNamespace(offset=o) for o in (4, 5, 6, 7)]  # 4 is below the committed offset
    c._ack_batch({TPA: recs})
    c._ack_batch({TPA: recs[2:]})  # a re-read of the same records acks nothing twice
    assert c._read_offset[TPA] == 7 and c._acked[TPA] == [5, 6, 7] and c._n_acked == 3


def test_back_pressure_waits_for_a_full_buffer_to_drain_below_half():
    buffer = SimpleNamespace(size=1000, should_stop=False)

    async def drain():
        while buffer.size > 0:
            await asyncio.sleep(0.001)
            buffer.size -= 50

    async def scenario():
        task = asyncio.create_task(drain())
        await ebb(buffer, above=100, below=50)
        seen = buffer.size
        task.cancel()
        return seen

    assert asyncio.run(scenario()) <= 50
    buffer.size = 80
    asyncio.run(ebb(buffer, above=100, below=50))  # under the mark: returns at once
    assert buffer.size == 80


def test_a_refused_state_or_forwarded_record_stops_the_worker_without_a_commit(monkeypatch):
    """The broker refused a record some processed input depends on: committing that input
    would lose it. The worker stops instead, and its input is read again on restart."""
    from streams import changelog

    producer = Producer()
    c = consumer(producer)
    crashed = []

    async def crash(exc):
        crashed.append(str(exc))

    c.crash = crash
    delivered = changelog.delivered("forwarded")
    failed = asyncio.new_event_loop().create_future()
    failed.set_exception(ConnectionError("broker gone"))
    monkeypatch.setattr(changelog, "_failed", 0)
    delivered(failed)
    assert asyncio.run(c._commit_tps({TPA}, False)) is False
    assert producer.log == ["flush"] and "1 state or forwarded records were refused" in crashed[0]
    ok = asyncio.new_event_loop().create_future()
    ok.set_result(None)
    monkeypatch.setattr(changelog, "_failed", 0)
    delivered(ok)
    assert asyncio.run(c._commit_tps({TPA}, False)) is True


def refilling_consumer():
    """A Consumer whose seeks are recorded (as Faust's: the read offset becomes the next to read)."""
    c = consumer(Producer())
    c._read_offset = {}
    c.sought_to = []
    gaps = c.gaps = []

    async def seek(tp, offset):
        c.sought_to.append(offset)
        c._read_offset[tp] = offset
        c._sought.add(tp)

    async def add_gap(tp, start, end):
        gaps.append((start, end))

    async def broker_committed(tp):
        return c.committed

    c.committed = None
    c.seek, c._add_gap, c._broker_committed = seek, add_gap, broker_committed
    return c


def test_a_hole_after_what_was_read_is_read_again_never_counted_as_a_gap():
    """Records 145..180 fetched and set aside around a rebalance: the next batch starts at 181.
    Faust would ack 145..180 as a gap (and commit past them); here they are read again."""
    c = refilling_consumer()
    c._read_offset[TPA] = 144  # the last record read
    assert asyncio.run(c._refill(TPA, 144, 181)) is True
    assert c.sought_to == [145]
    # read again from 145: they come, nothing is a gap
    assert asyncio.run(c._refill(TPA, c._read_offset[TPA], 145)) is False
    asyncio.run(c._note_gaps(TPA, c._read_offset[TPA], [SimpleNamespace(offset=o) for o in range(145, 182)]))
    assert c.gaps == []


def test_a_hole_kafka_really_has_is_a_gap_after_one_look():
    """Offsets a transaction marker or compaction took: the seek finds the same hole, which is then acked."""
    c = refilling_consumer()
    c._read_offset[TPA] = 9
    assert asyncio.run(c._refill(TPA, 9, 12)) is True  # 10 and 11 missing: look again
    assert asyncio.run(c._refill(TPA, c._read_offset[TPA], 12)) is False  # still missing: Kafka has none
    asyncio.run(c._note_gaps(TPA, c._read_offset[TPA], [SimpleNamespace(offset=12)]))
    assert c.gaps == [(10, 12)]
    assert c.sought_to == [10]


def test_after_a_seek_the_read_offset_is_the_next_one():
    c = refilling_consumer()
    c._read_offset[TPA] = 50
    c._sought.add(TPA)  # Faust sought to the committed offset 50: 50 is next, not read
    assert asyncio.run(c._refill(TPA, 50, 51)) is True  # 50 missing
    assert c.sought_to == [50]
    assert asyncio.run(c._refill(TPA, 50, 50)) is False


def test_a_partition_back_from_another_worker_is_read_from_the_group_s_committed_offset():
    """This worker last read 33 of a partition; another read on to 91 and committed 92; back
    here, Kafka hands out 92 on: nothing is missing, and nothing before 92 is read again
    (older than the de-duplication horizon it would count twice)."""
    c = refilling_consumer()
    c._read_offset[TPA] = 33
    c.committed = 92
    assert asyncio.run(c._refill(TPA, 33, 92)) is False
    assert c.sought_to == []
    asyncio.run(c._note_gaps(TPA, c._read_offset[TPA], [SimpleNamespace(offset=o) for o in range(92, 95)]))
    assert c.gaps == []


def test_a_hole_above_the_committed_offset_is_read_again_from_the_committed_offset():
    c = refilling_consumer()
    c._read_offset[TPA] = 33
    c.committed = 60  # someone read and committed up to 59; 60..99 were fetched and set aside
    assert asyncio.run(c._refill(TPA, 33, 100)) is True
    assert c.sought_to == [60]


def test_membership_unconfirmed_past_the_session_timeout_fences_state_writes(monkeypatch):
    """A worker that stood still past its session timeout (SIGSTOP, a frozen VM) has lost its
    partitions: it neither commits nor writes state until the coordinator confirms it again."""
    from streams import transport

    clock = [1000.0]
    monkeypatch.setattr(transport.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(transport.Membership, "confirmed_at", None)
    app = SimpleNamespace(conf=SimpleNamespace(broker_session_timeout=10.0))
    assert transport.fenced(app) is None  # never confirmed: not in a group (yet)
    transport.Membership.confirmed_at = 995.0
    assert transport.fenced(app) is None  # confirmed 5 s ago
    clock[0] = 1016.0
    assert transport.fenced(app) == 21.0  # 21 s without a heartbeat: fenced
    c = consumer(Producer())
    c.app.conf = app.conf
    assert asyncio.run(c._commit_tps({TPA}, False)) is False
    assert c.app.producer.log == []  # nothing flushed, nothing committed
    transport.Membership.confirmed_at = 1016.0  # a heartbeat accepted again
    assert asyncio.run(c._commit_tps({TPA}, False)) is True
