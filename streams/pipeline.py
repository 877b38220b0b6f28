"""The worker's data path: input lanes -> keyed lanes -> state, outputs and marks.

    likes, impressions, audience, clicks, messages, spend ─┐          ┌─ socialpulse.by-account ─> account stage (engagement, replies, conversion)
    orders ────────────────────────────────────────────────┴─ ingest ─┤
                                                 socialpulse.dlq  <───┘└─ socialpulse.by-actor ───> actor stage (attribution)
    each stage -> its changelog-backed table, socialpulse.results / .breaches (streams/outputs.py), /metrics

Lanes (streams/transport.py) hand each fetched batch whole to ``ingest_lane`` or
``stage_lane``; these call the Kafka-free code (``ingest``, ``routing``, ``keyed``)
and write what a batch changed once (``emit``). This module also keeps what the
watermark needs across workers: which keyed partitions this worker owns and has read
to the end (``owned``, ``settled``), the marks of its input partitions, and watermark
alignment. Faust provides the consumer group, offsets, changelogs and the web server;
``streams/app.py`` puts them together.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import TP

from schemas.events import INPUT_TOPICS, TOPIC_MODELS, account_key

from .accounts import BookCollector, book_for
from .accounts_reader import AccountsReader, dead_letter_value
from .changelog import _hard_exit, delivered, read_one, read_prefix, write_many
from .exporter import Metrics
from .families import ROUTER, make_stages
from .family import Output
from .health import BrokerLost, Watchdog
from .ingest import Raw, Rejection, decode_batch, partition_for
from .keyed import (
    CLOSED_KEY,
    FormatError,
    Forwarded,
    KeyedStage,
    StageOutput,
    decode_forward,
    forward_records,
    marks_records,
)
from .outputs import Outputs
from .settings import Settings
from .topics import ACCOUNTS, DLQ
from .transport import acknowledged, ebb, fenced
from .windows import Mark, WindowSpec

__all__ = ["Pipeline", "StateRecordError", "register_metrics"]

log = logging.getLogger("socialpulse")

ROCKSDB_OPTIONS = {
    "write_buffer_size": 4 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "block_cache_size": 8 * 1024 * 1024,
    "block_cache_compressed_size": 0,
}
#: results a tick publishes at most (a watermark that jumps ahead closes the rest on the next ticks)
RESULTS_PER_TICK = 20_000
#: events per forwarded message at most (a few hundred bytes each); a message also stays within
#: the bound on every record socialpulse writes (``pages.RECORD_MAX``: ``keyed.forward_records``)
FORWARD_CHUNK = 500


#: the source name under which an actor partition marks the account stage (credits come from it)
ACTOR_SOURCE = "~actor/{partition}"
#: how far (event time, ms) an input partition may read ahead of the slowest one still behind
ALIGN_MS = 10 * 60_000
ALIGN_STALL_S = 30.0


def _monotonic() -> float:
    return time.monotonic()


@dataclass(slots=True)
class InputPosition:
    """What this worker's ingest knows of one assigned input partition (for its marks)."""

    newest: int = 0  # newest event time read from it since it was assigned
    seen: float = 0.0  # when a record last came (monotonic; 0.0: none yet, see ``align``)
    behind: bool = True  # unread records remain (until the first read shows otherwise)
    announced: bool = False  # a mark saying it is behind went out since it fell behind
    lagging: bool = False  # the last periodic look saw unread records
    #: when this worker took the partition (monotonic, made at its first look after the
    #: assignment). Quiet time counts from here when nothing came yet: monotonic's zero is the
    #: machine's boot, and counting from it made every input of a worker that just started on
    #: a machine up for more than IDLE quiet at once, so the watermark followed the wall clock
    assigned: float = field(default_factory=_monotonic)

    def quiet(self, now: float, idle_s: float) -> bool:
        """Nothing came for ``idle_s`` seconds: since the last record or, before any, since
        the assignment."""
        return now - max(self.seen, self.assigned) >= idle_s


class StateRecordError(RuntimeError):
    """A recovered state record this worker cannot read: recovery stops (state is never dropped)."""


def register_metrics(stages: dict[str, KeyedStage], metrics: Metrics) -> None:
    """Each stage's per-key gauges (sampled from its states at scrape time), its families'
    process-wide counters and their constants, in the registry ``/metrics`` serves."""
    for stage in stages.values():
        gauges = [g for fam in stage.families for g in fam.gauges]
        if gauges:
            metrics.add_families(gauges, stage.samples)
        for fam in stage.families:
            metrics.add_counters(fam.counters)
            for gauge, value in fam.constants():
                metrics.add_constant(gauge, value)


class Pipeline:
    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.metrics = Metrics()
        self.spec = WindowSpec.from_settings(settings)
        self.stages = make_stages(settings, self.spec)
        for name, stage in self.stages.items():
            stage.load_closed = self._closed_loader(name)
            stage.load_pages = self._pages_loader(name)
            if not stage.compact and settings.store.startswith("rocksdb"):  # (the shoppers rest encoded anyway)
                stage.cold, stage.hot_keys = True, settings.hot_keys
        register_metrics(self.stages, self.metrics)
        t = settings.topic
        self.bare = {t(name): name for name in INPUT_TOPICS}
        self.models = {t(name): TOPIC_MODELS[name] for name in INPUT_TOPICS}
        self.input_topic = app.topic(*self.bare, key_type=bytes, value_type=bytes)
        self.keyed_topics = {
            name: app.topic(
                t(f"socialpulse.by-{name}"),
                key_type=bytes,
                value_type=bytes,
                partitions=settings.partitions,
                internal=True,
            )
            for name in self.stages
        }
        self.outputs = Outputs(app, t, self.bare, settings.topic_prefix, self.metrics)
        #: per-account settings (file, environment, and socialpulse.accounts read by ``accounts``)
        self.book = book_for(settings)
        self.metrics.registry.register(BookCollector(self.book))
        self.accounts = AccountsReader(settings, self.book, self.metrics.registry, self._reject_account)
        self.tables = {
            name: app.Table(
                f"{name}-state",
                partitions=settings.partitions,
                key_type=bytes,
                value_type=bytes,
                # RocksDB only backs the changelog here (the stage holds the state in
                # memory): small write buffers and cache, not Faust's 3 x 64 MiB + 2 GiB
                # per partition (a 20 min soak grew ~300 MiB/h with those)
                options=ROCKSDB_OPTIONS,
            )
            for name in self.stages
        }
        for name, table in self.tables.items():
            table.check = self.stages[name].check_record  # type: ignore[attr-defined]  # streams/changelog.py
        #: keyed partitions this worker owns and has recovered: its ingest hands their events over in-process
        self.owned: dict[str, set[int]] = {name: set() for name in self.stages}
        #: owned keyed partitions read to their end since they were assigned: nothing this worker
        #: forwarded to them through Kafka is still unread, so marks and credits go in-process
        self.settled: dict[str, set[int]] = {name: set() for name in self.stages}
        self.ready = False
        self.health = Watchdog(app, settings, self.metrics)
        self._delivered = delivered("forwarded")
        #: this worker's assigned input partitions, as its marks describe them
        self.inputs: dict[TP, InputPosition] = {}
        #: per stage, the input partitions its watermark waits for (refreshed each tick)
        self.expected: dict[str, list[str] | None] = {}
        #: input partitions paused because they read too far ahead of the slowest (``align``)
        self.paused: set[TP] = set()
        #: the largest changelog record value written, per stage (bytes)
        self.largest: dict[str, int] = {}
        self._flushed_at = 0.0  # (monotonic) when the stages last flushed
        app.before_commit = self.flush_state  # type: ignore[attr-defined]  # streams/transport.py
        self._ticks = 0
        self._register()

    # -- agents ------------------------------------------------------------
    def _register(self) -> None:
        app = self.app

        # lanes (streams/transport.py): each fetched batch of a topic goes whole to one function
        for topic_name in self.bare:
            app.lanes[topic_name] = self.ingest_lane  # type: ignore[attr-defined]
        app.topics.add(self.input_topic)

        for name in self.stages:
            self._register_stage(name)

        @app.task
        async def read_accounts() -> None:
            await self.accounts.run()

        @app.timer(1.0, name="tick")
        async def tick() -> None:
            self.tick()
            await ebb(self.app.producer.buffer)  # a burst of results goes out before the next tick

        # its own timer: nothing the tick waits for (a producer that cannot reach the broker)
        # may keep the worker from noticing that the broker is gone or lost its data
        @app.timer(1.0, name="watch-broker")
        async def watch_broker() -> None:
            try:
                await self.health.check()
            except BrokerLost as exc:
                log.critical("%s", exc)
                # a graceful stop flushes to the broker that is gone and can wait forever
                asyncio.get_running_loop().call_later(10, _hard_exit)
                await self.app.crash(exc)

        @app.on_rebalance_complete.connect  # type: ignore[arg-type]
        async def on_rebalance_complete(sender: Any, **kwargs: Any) -> None:
            self.metrics.rebalances.inc()

        @app.on_partitions_revoked.connect  # type: ignore[arg-type]
        async def on_revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
            # Faust committed (``transport``: after a flush the broker acknowledged); what changed
            # since (a tick's decisions) is written too, and acknowledged before the partitions go:
            # their next owner reads the changelog to its end as soon as the group is rebalanced
            if (quiet := fenced(self.app)) is not None:
                # lost, not revoked: they were given away while this worker stood still
                log.warning("partitions lost: membership not confirmed for %.0f s (a stall past the session "
                            "timeout); their state is not written, their next owner restores it and reads "
                            "their uncommitted input again", quiet)
            else:
                self.flush_state()
                problem = await acknowledged(self.app)
                if problem is not None:
                    log.warning("partitions revoked with state records unconfirmed: %s", problem)
                self.flush_state()  # (a tick that ran meanwhile: no await from here to the revoke)
            for name, stage in self.stages.items():
                topic = self.keyed_topics[name].get_topic_name()
                mine = {tp.partition for tp in revoked if tp.topic == topic}
                stage.revoke(mine)
                self.owned[name] -= mine
                self.settled[name] -= mine
            for tp in revoked:
                self.inputs.pop(tp, None)
            self.paused -= set(revoked)
            self.metrics.watermark.clear()
            self.metrics.consumer_lag.clear()

        for name, table in self.tables.items():
            table.on_recover(self._recover_callback(name))

    def _register_stage(self, name: str) -> None:
        topic = self.keyed_topics[name]
        self.app.lanes[topic.get_topic_name()] = lambda records: self.stage_lane(name, records)  # type: ignore[attr-defined]
        self.app.topics.add(topic)

    def _recover_callback(self, name: str) -> Any:
        async def on_recover() -> None:
            stage, table = self.stages[name], self.tables[name]
            topic = self.keyed_topics[name].get_topic_name()
            mine = {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic}
            stage.assign(mine)
            self.owned[name] = set(mine)
            self.settled[name] &= mine
            restored = sum(self._adopt(name, key, value, mine) for key, value in list(table.data.items()))
            try:
                restored += stage.finish_restore()
            except Exception as exc:
                raise StateRecordError(
                    f"{name} stage: the local state cannot be put together ({type(exc).__name__}: {exc}). "
                    f"The local store in {self.app.conf.tabledir} is rebuilt from the changelog if you delete it; "
                    "see docs/operations.md, 'A state record cannot be read'") from exc
            log.info("%s stage: %d keys restored from the changelog", name, restored)

        return on_recover

    def _adopt(self, name: str, key: Any, value: bytes | None, mine: set[int]) -> int:
        """Hand one recovered table record to the stage; 1 if it was a key's state."""
        text = key.decode() if isinstance(key, bytes) else str(key)
        try:
            return self.stages[name].adopt(text, value, mine, self.settings.partitions)
        except Exception as exc:
            raise StateRecordError(
                f"{name} stage: the local state record {text!r} cannot be read ({type(exc).__name__}: {exc}). "
                f"The local store in {self.app.conf.tabledir} is rebuilt from the changelog if you delete it; "
                "see docs/operations.md, 'A state record cannot be read'") from exc

    # -- ingest --------------------------------------------------------------
    def ingest_lane(self, records: dict[TP, list[Any]]) -> None:
        started = time.perf_counter()
        self._announce_behind(records)
        # aiokafka's ConsumerRecord has Raw's fields (topic, partition, offset, value, timestamp): no copy per record
        self.ingest_batch([r for recs in records.values() for r in recs])
        # the batch's events are handed over: its inputs' marks follow them to the settled
        # partitions at once, so a backlog's watermark moves batch by batch
        now_ms = int(time.time() * 1000)
        after = {f"{tp.topic}/{tp.partition}": Mark(pos.behind, pos.newest, False, now_ms)
                 for tp in records if (pos := self.inputs.get(tp)) is not None}
        self._mark_settled(after)
        self.align()
        self.metrics.batch_seconds.labels("ingest").observe(time.perf_counter() - started)

    def align(self) -> None:
        """Watermark alignment (as Flink's): while a backlog is read, an input partition whose
        newest event is more than ``ALIGN_MS`` ahead of the slowest input that is still behind
        is paused until that one catches up. The watermark waits for the slowest anyway; what
        the others read meanwhile would only pile up as open windows and buckets of every key
        between the two (hours of them when Kafka hands one topic over long before another).
        The slowest input is never paused, so reading always goes on; one that has delivered
        nothing for ``ALIGN_STALL_S`` (not yet, or stuck) holds nobody back."""
        consumer, now = self.app.consumer, time.monotonic()
        behind = [pos.newest for pos in self.inputs.values() if pos.behind and now - pos.seen < ALIGN_STALL_S]
        ahead: set[TP] = set()
        if behind and not self.app.in_recovery:  # type: ignore[attr-defined]
            limit = min(behind) + ALIGN_MS
            # as Faust's own TP (the consumer asserts that type; the lanes get aiokafka's)
            ahead = {TP(tp.topic, tp.partition) for tp, pos in self.inputs.items() if pos.behind and pos.newest > limit}
        resume, pause = self.paused - ahead, ahead - self.paused
        if resume:
            consumer.resume_partitions(resume)
        if ahead:
            consumer.pause_partitions(ahead)  # again: a rebalance may have resumed them
        if pause or resume:
            log.debug("alignment: %d input partitions paused", len(ahead))
        self.paused = ahead

    def _announce_behind(self, records: dict[TP, list[Any]]) -> None:
        """Before a batch of an input partition with a backlog goes on: say so to every keyed
        partition, so its watermark waits (marks that hold back may overtake events)."""
        consumer, ahead, now = self.app.consumer, {}, time.monotonic()
        for tp, recs in records.items():
            pos = self.inputs.get(tp)
            if pos is None:
                pos = self.inputs[tp] = InputPosition()
            pos.seen = now
            try:
                high = consumer.highwater(tp)
            except Exception:
                high = None
            pos.behind = high is None or recs[-1].offset + 1 < high
            if pos.behind and not pos.announced:
                ahead[f"{tp.topic}/{tp.partition}"] = Mark(True, pos.newest, False, int(time.time() * 1000))
                pos.announced = True
        if ahead:
            self._send_marks(ahead, in_process=True)

    def _send_marks(self, marks: dict[str, Mark], in_process: bool = False, stages: tuple[str, ...] = ("account", "actor")) -> None:
        """Marks to every partition of the keyed stages: in-process to the settled ones (every
        event they cover was handed over in-process or read already), through Kafka to the
        rest, where they follow the events this worker forwarded before them.
        ``in_process`` (only for marks that hold back) reaches every owned partition at once."""
        values: list[bytes] | None = None
        for name in stages:
            stage, local = self.stages[name], self.owned[name] if in_process else self.settled[name]
            for p in range(self.settings.partitions):
                if p in local:
                    stage.mark(p, marks)
                    stage.clock(p).advance(self.expected.get(name))
                else:
                    if values is None:
                        values = marks_records(marks)
                        self.outputs.sized(f"socialpulse.by-{name}", max(map(len, values)))
                    for value in values:
                        self.keyed_topics[name].send_soon(value=value, partition=p, callback=self._delivered)

    def _mark_settled(self, marks: dict[str, Mark], stages: tuple[str, ...] = ("account", "actor")) -> None:
        """Marks to the settled partitions only (the periodic marks reach the others)."""
        for name in stages:
            stage = self.stages[name]
            for p in self.settled[name]:
                stage.mark(p, marks)
                stage.clock(p).advance(self.expected.get(name))

    def stage_lane(self, name: str, records: dict[TP, list[Any]]) -> None:
        started = time.perf_counter()
        stage, out = self.stages[name], StageOutput()
        for tp, recs in records.items():
            items: list[Forwarded] = []
            for r in recs:
                try:
                    data = decode_forward(r.value)
                except Exception as exc:  # a poison record: dead-lettered, the rest of the batch goes on
                    reason = "unknown_format" if isinstance(exc, FormatError) else "bad_internal"
                    raw = Raw(tp.topic, tp.partition, r.offset, r.value, r.timestamp)
                    out.rejected.append(Rejection(raw, reason, f"{type(exc).__name__}: {str(exc)[:300]}"))
                    log.error("%s[%d]@%d: %s: %s", tp.topic, tp.partition, r.offset, reason, exc)
                    continue
                if type(data) is dict:  # marks: the events before them first
                    if items:
                        stage.process(tp.partition, items, out)
                        items = []
                    stage.mark(tp.partition, data)
                    # the watermark moves as marks come (a backlog's windows close on the next tick)
                    stage.clock(tp.partition).advance(self.expected.get(name))
                else:
                    items.extend(data)  # type: ignore[arg-type]
            if items:
                stage.process(tp.partition, items, out)
        self.emit(name, out)
        self.metrics.batch_seconds.labels(name).observe(time.perf_counter() - started)

    def ingest_batch(self, raws: list[Raw]) -> None:
        """Validate; hand each event to its keyed partition: in-process when this worker
        owns that partition (no second Kafka hop, no second validation), else by Kafka."""
        good, bad = decode_batch(raws, self.models, self.settings.max_event_bytes)
        outgoing: dict[tuple[str, int], list[Forwarded]] = defaultdict(list)
        local: dict[str, dict[int, list[Forwarded]]] = defaultdict(lambda: defaultdict(list))
        now = time.time()
        now_ms = int(now * 1000)
        lag_by_topic: dict[str, list[float]] = defaultdict(list)
        newest: dict[tuple[str, int], int] = {}
        n = self.settings.partitions
        for raw, event in good:
            bare = self.bare[raw.topic]
            ts = event.ts
            lag_by_topic[bare].append(now - ts / 1000)
            source = (raw.topic, raw.partition)
            if ts > newest.get(source, 0):
                newest[source] = ts
            # arrival: the record's Kafka timestamp (the same on every re-delivery), never in the future
            arrived = raw.timestamp
            if not 0 < arrived < now_ms:
                arrived = now_ms
            for stream, key, primary in ROUTER.routes(bare, event):
                p = partition_for(key, n)
                item = Forwarded(bare, raw.topic, raw.partition, raw.offset, key, event, primary, arrived)
                if p in self.owned[stream]:
                    local[stream][p].append(item)
                else:
                    outgoing[(stream, p)].append(item)
        # send_soon: buffered; commits wait until the buffer is handed to the Kafka
        # client (streams/transport.py), so nothing is acknowledged before it went on.
        self._forward(outgoing)
        for stream, parts in local.items():
            out = StageOutput()
            for p, items in parts.items():
                self.stages[stream].process(p, items, out)
            self.emit(stream, out)
        for (topic, partition), ts in newest.items():
            pos = self.inputs.get(TP(topic, partition))
            if pos is not None and ts > pos.newest:
                pos.newest = ts
        for topic, lags in lag_by_topic.items():
            self.metrics.event_lag.observe_many(topic, [lag if lag > 0.0 else 0.0 for lag in lags])
        self.reject(bad)

    def reject(self, rejections: list[Rejection]) -> None:
        self.outputs.reject(rejections)

    def _reject_account(self, rejection: Rejection) -> None:
        """A bad socialpulse.accounts record: dead-lettered and counted (not an input event)."""
        value = dead_letter_value(rejection)
        self.outputs.topics[DLQ].send_soon(value=value)
        self.outputs.sized(DLQ, len(value))
        self.metrics.dead_letters.labels(ACCOUNTS, rejection.reason).inc()

    # -- keyed stages ------------------------------------------------------
    def emit(self, name: str, out: StageOutput) -> None:
        """Keep what a batch changed for the next flush (``flush_state``), then publish
        results and dead letters."""
        self.stages[name].absorb(out)
        if out.corrected:
            self.metrics.corrections.labels(name).inc(out.corrected)
        for source, n in out.accepted.items():
            self.metrics.events.labels(source, "accepted").inc(n)
        self.publish(out.results)
        self.reject(out.rejected)
        if name == "actor" and self.settled["account"]:
            self._mark_settled(self._actor_marks(), stages=("account",))

    def flush_state(self) -> None:
        """Write what the stages changed since the last flush to their changelogs: each changed
        page once, one atomic flush per partition (``streams.pages``), one RocksDB write each.
        Called before every offset commit (``transport``), before partitions go, and by the tick
        when no commit flushed for a second (nothing read: the changes of ticks alone)."""
        if fenced(self.app) is not None:  # (``transport.Membership``: a zombie writes nothing)
            return
        self._flushed_at = time.monotonic()
        for name, stage in self.stages.items():
            table = self.tables[name]
            for partition, changes in stage.flush().items():
                write_many(table, partition, changes)
                self.metrics.changelog_records.labels(name).inc(len(changes))
                sizes = [len(v) for _, v in changes if v is not None]
                if sizes:
                    self.metrics.changelog_bytes.labels(name).inc(sum(sizes))
                    biggest = max(sizes)
                    if biggest > self.largest.get(name, 0):
                        self.largest[name] = biggest
                        self.metrics.changelog_record_max.labels(name).set(biggest)

    def publish(self, outputs: list[Output]) -> None:
        """Results and records to their topics (``streams.outputs``); forwards to their keyed
        stream: in-process to a settled partition this worker owns, else through Kafka."""
        forwards: dict[tuple[str, int], list[Forwarded]] = defaultdict(list)
        local: dict[str, dict[int, list[Forwarded]]] = defaultdict(lambda: defaultdict(list))
        for r in self.outputs.publish(outputs):
            p = partition_for(r.key, self.settings.partitions)
            # partition/offset -1: a derived record (dead letters name its source topic)
            item = Forwarded(r.topic, self.settings.topic(r.source), -1, -1, r.key, r.event, False)
            if p in self.settled[r.stream]:
                local[r.stream][p].append(item)  # e.g. a credit for an account this worker owns
            else:
                forwards[(r.stream, p)].append(item)
        self._forward(forwards)
        for stream, parts in local.items():
            out = StageOutput()
            for p, items in parts.items():
                self.stages[stream].process(p, items, out)
            self.emit(stream, out)

    def _forward(self, outgoing: dict[tuple[str, int], list[Forwarded]]) -> None:
        """Few messages per keyed partition, in order: at most ``FORWARD_CHUNK`` events and
        ``RECORD_MAX`` bytes each (``keyed.forward_records``)."""
        for (stream, p), items in outgoing.items():
            topic, biggest = self.keyed_topics[stream], 0
            for value in forward_records(items, most=FORWARD_CHUNK):
                biggest = max(biggest, len(value))
                topic.send_soon(value=value, partition=p, callback=self._delivered)
            self.outputs.sized(f"socialpulse.by-{stream}", biggest)

    def _positions(self) -> dict[TP, bool]:
        """Per assigned partition (input and keyed): are there records not read yet?

        Also exports consumer lag and notices a broker that lost what it held."""
        consumer = self.app.consumer
        keyed = {t.get_topic_name(): name for name, t in self.keyed_topics.items()}
        out: dict[TP, bool] = {}
        for tp in consumer.assignment():
            if tp.topic not in keyed and tp.topic not in self.bare:
                continue
            try:
                high = consumer.highwater(tp)
            except Exception:
                high = None
            read = consumer._read_offset.get(tp)  # type: ignore[attr-defined]
            committed = consumer._committed_offset.get(tp)  # type: ignore[attr-defined]
            pos = max((read + 1) if read is not None else 0, committed or 0)
            out[tp] = high is None or pos < high
            stream = keyed.get(tp.topic)
            if stream is not None and not out[tp] and tp.partition in self.owned[stream]:
                self.settled[stream].add(tp.partition)
            self.health.note_end(tp.topic, tp.partition, high, committed)
            if high is not None:
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(high - pos, 0))
        return out

    def expected_sources(self, name: str) -> list[str] | None:
        """Every input partition that feeds a stage (``topic/partition``); None while unknown."""
        try:  # the cluster metadata every member has (the group's snapshot is the leader's alone)
            cluster = self.app.consumer._thread._ensure_consumer()._client.cluster  # type: ignore[attr-defined]
        except Exception:
            return None
        out: list[str] = []
        for bare in ROUTER.inputs(name):
            topic = self.settings.topic(bare)
            partitions = cluster.partitions_for_topic(topic)
            if not partitions:
                return None
            out.extend(f"{topic}/{p}" for p in sorted(partitions))
        if name == "account":
            out.extend(ACTOR_SOURCE.format(partition=q) for q in range(self.settings.partitions))
        return out

    def send_marks(self) -> None:
        """Each second: marks of every assigned input partition to every keyed partition,
        and of every owned actor partition to the account stage (its credits)."""
        behind = self._positions()
        now, now_ms, idle = time.monotonic(), int(time.time() * 1000), self.settings.idle / 1000
        marks: dict[str, Mark] = {}
        n_behind = 0
        for tp, is_behind in behind.items():
            if tp.topic not in self.bare:
                continue
            pos = self.inputs.get(tp)
            if pos is None:
                pos = self.inputs[tp] = InputPosition()
            # a batch that left records unread announced itself already (``_announce_behind``);
            # here a lag counts only when it is seen twice in a row, so the records of a fetch
            # being handed over right now do not flap a live partition out of live mode
            is_behind, pos.lagging = is_behind and (pos.lagging or pos.behind), is_behind
            pos.behind = is_behind
            pos.announced = is_behind
            n_behind += is_behind
            marks[f"{tp.topic}/{tp.partition}"] = Mark(is_behind, pos.newest, not is_behind and pos.quiet(now, idle), now_ms)
        self.metrics.input_behind.set(n_behind)
        if marks:
            self._send_marks(marks)
        credits = self._actor_marks(now_ms)
        if credits:
            self._send_marks(credits, stages=("account",))

    def _actor_marks(self, now_ms: int | None = None) -> dict[str, Mark]:
        """Marks of the owned actor partitions for the account stage (credits come from them)."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        return {
            ACTOR_SOURCE.format(partition=q): Mark(not clock.live, clock.current, clock.idle, now_ms)
            for q, clock in self.stages["actor"].clocks.items() if q in self.owned["actor"] and clock.known
        }

    def tick(self) -> None:
        if not self.app.consumer or self.app.rebalancing:
            return
        self.send_marks()
        for name, stage in self.stages.items():
            out = StageOutput()
            self.expected[name] = self.expected_sources(name)
            stage.tick(out, self.expected[name], budget=RESULTS_PER_TICK)
            self.emit(name, out)
        if time.monotonic() - self._flushed_at >= 1.0:
            self.flush_state()
        for name, stage in self.stages.items():
            for partition, clock in stage.clocks.items():
                self.metrics.watermark.labels(name, str(partition)).set(clock.current / 1000)
            self.metrics.state_keys.labels(name).set(len(stage))
            self.metrics.dedup_ids.labels(name).set(sum(len(ids) for ids in stage.seen.values()))
            self.metrics.closed_windows.labels(name).set(sum(len(kept) for kept in stage.closed.values()))
            if self._ticks % 10 == 0:  # a full encode: every 10 s is plenty
                self.metrics.state_bytes.labels(name).set(stage.size_bytes())
        self._ticks += 1
        self.ready = (
            self.app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
            and not self.app.rebalancing and self.health.fine()
            and self.event_time_known()
            and self.accounts.caught_up  # results never use settings older than the topic's
        )
        self.metrics.ready.set(1 if self.ready else 0)

    def event_time_known(self) -> bool:
        """Every input has marked every owned keyed partition at least once."""
        return all(stage.clocks[p].known for name, stage in self.stages.items() for p in self.owned[name] if p in stage.clocks)

    def _pages_loader(self, name: str) -> Any:
        def load(partition: int, prefix: bytes) -> list[tuple[bytes, bytes]]:
            return read_prefix(self.tables[name], partition, prefix)

        return load

    def _closed_loader(self, name: str) -> Any:
        def load(partition: int, size: int, start: int) -> bytes | None:
            key = CLOSED_KEY.format(partition=partition, size=size, start=start).encode()
            return read_one(self.tables[name], partition, key)

        return load

    def view(self, platform: str, account_id: str) -> dict[str, Any] | None:
        return self.stages["account"].view(account_key(platform, account_id))
