"""A Kafka-free worker for the order-independence property tests.

``Worker`` is one socialpulse worker that owns every partition, without Kafka or Faust:
the stages come from ``streams.families.make_stages`` (the production settings, families,
routes and keyed stages), input records are validated by ``streams.ingest.decode_batch``,
outputs go through ``streams.outputs.Outputs`` into the real ``streams.exporter.Metrics``
registry (``/metrics``), and the glue between them mirrors ``streams/pipeline.py`` line for
line: ``ingest_lane`` (announce a backlog, hand the batch over, mark the settled partitions),
``ingest_batch`` (route, hand over in-process), ``emit`` (changelog records written to an
in-memory table that the stage reads its closed windows back from), ``publish`` (forwards
such as credits handed over in-process to the owning stage), ``send_marks`` / ``tick`` /
``_actor_marks`` (the watermark marks of the input partitions and of the actor stage). The
only thing simulated is the wall clock (``wall``): the ``at`` of the marks, in event time.

A ``Schedule`` is one arrival order: batches of deliveries (an event index, re-deliveries of
the same Kafka record included) with ticks between them; a tick sends every input's mark
(``idle`` ones move the watermark to the wall clock, which a tick may advance). ``run``
plays a schedule, then a common checkpoint (every event read, wall clock at the newest
event + 10 min, ticks until the sweep has visited every key) and a final one (+2 days):
``Observation`` holds what a consumer and a scraper see at each.
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from schemas.events import DIRECT_KEY, INPUT_TOPICS, SHOP_KEY, TOPIC_MODELS
from streams.exporter import Metrics
from streams.families import ROUTER, make_stages
from streams.family import Output
from streams.ingest import Raw, decode_batch, partition_for
from streams.keyed import CLOSED_KEY, Forwarded, StageOutput
from streams.outputs import Outputs
from streams.pipeline import ACTOR_SOURCE, RESULTS_PER_TICK, register_metrics
from streams.settings import Settings
from streams.topics import BREACHES, RESULTS
from streams.windows import Mark, WindowSpec

__all__ = [
    "SETTINGS", "INPUT_PARTITIONS", "T0", "Ev", "Schedule", "Worker", "Observation", "run", "compare",
    "describe_events", "describe_schedule", "CHECKPOINT_MS", "FINAL_MS",
]

ACCOUNTS_FILE = Path(__file__).with_name("accounts.yaml")
#: the defaults of CONTRACT.md, spelled out so a SOCIALPULSE_* variable of the environment cannot change them
SETTINGS = Settings(
    accounts_file=str(ACCOUNTS_FILE), partitions=4, bucket="1m", trailing_windows="5m,1h",  # type: ignore[arg-type]
    closed_windows="1m,1h,1d", grace="5m", allowed_lateness="1d", idle="5s", dedup_horizon="10m",  # type: ignore[arg-type]
    reply_slo="15m", attribution_lookback="7d", attribution_half_life="7d", checkout_timeout="1h",  # type: ignore[arg-type]
    conversation_ttl="7d", outreach_window="7d", account_timezones="", business_hours="",  # type: ignore[arg-type]
    max_agents=20, max_campaigns=50, top_posts=10, topic_prefix="",
)
#: partitions of each input topic (producers spread events over them)
INPUT_PARTITIONS = 2
#: 2025-01-06T23:00:00Z, a Monday: 18:00 in New York, an hour before instagram|acme's business hours close
T0 = 1_736_204_400_000
MIN = 60_000
#: the common checkpoint: every event read, the wall clock this far past the newest event
CHECKPOINT_MS = 10 * MIN
#: the final watermark: this far past the newest event (every window closed, every decision final)
FINAL_MS = 2 * 86_400_000

#: pipeline health, not a function of the events: never compared
HEALTH = (
    "socialpulse_results_published", "socialpulse_results_corrected", "socialpulse_closed_windows_kept",
    "socialpulse_inputs_behind", "socialpulse_watermark_timestamp_seconds", "socialpulse_consumer_lag_messages",
    "socialpulse_event_time_lag_seconds", "socialpulse_batch_seconds", "socialpulse_rebalances", "socialpulse_ready",
    "socialpulse_broker_up", "socialpulse_state_keys", "socialpulse_dedup_ids", "socialpulse_state_bytes",
    "socialpulse_publish_errors",
    # counts breach *records published*: a correct worker publishes a breach when the watermark passes a
    # deadline and withdraws it when a reply stamped before the deadline comes late, so this counts
    # publications, which depend on arrival; the breaches themselves are compared upserted by key
    "socialpulse_reply_breaches_published",
    # the largest record written per topic: how many times, and with which rows, a result was
    # re-published depends on how late its data came (the results themselves are compared)
    "socialpulse_record_max_bytes",
)


@dataclass(frozen=True)
class Ev:
    """One input event of a scenario (``fields`` without ``event_id`` and ``ts``)."""

    topic: str
    event_id: str
    ts: int
    fields: dict[str, Any]

    def value(self) -> bytes:
        return orjson.dumps({"event_id": self.event_id, "ts": self.ts} | self.fields)

    def line(self, i: int) -> str:
        rel = self.ts - T0
        sign, rel = ("-" if rel < 0 else "+"), abs(rel)
        h, rem = divmod(rel, 3_600_000)
        m, rem = divmod(rem, MIN)
        s, ms = divmod(rem, 1000)
        shown = " ".join(f"{k}={v}" for k, v in self.fields.items() if v is not None and v is not False)
        return f"#{i:<3} T0{sign}{h:02d}:{m:02d}:{s:02d}.{ms:03d}  {self.topic:<10} {self.event_id:<5} {shown}"


@dataclass(frozen=True)
class Schedule:
    """One arrival order of a scenario's events.

    ``partition[i]``: the input partition event ``i`` was produced to; ``steps``: ``("batch",
    (i, j, ...))`` delivers those events (an index twice: a Kafka re-delivery of the same
    record), ``("tick", idle, advance_s)`` sends every input's mark and ticks the stages
    (``idle``: the inputs are quiet, so the watermark follows the wall clock, first advanced
    by ``advance_s``). ``backlog``: the events were all in Kafka before the worker started
    (marks say "behind" until a partition is read to its end); otherwise they arrive live.
    """

    name: str
    backlog: bool
    partition: tuple[int, ...]
    steps: tuple[tuple[Any, ...], ...]

    def deliveries(self) -> list[int]:
        return [i for step in self.steps if step[0] == "batch" for i in step[1]]


def describe_events(events: Sequence[Ev]) -> str:
    return "\n".join(ev.line(i) for i, ev in enumerate(events))


def describe_schedule(s: Schedule) -> str:
    parts = []
    for step in s.steps:
        if step[0] == "batch":
            parts.append("[" + " ".join(f"#{i}@{s.partition[i]}" for i in step[1]) + "]")
        else:
            parts.append(("idle" + (f"+{step[2]}s" if step[2] else "")) if step[1] else "tick")
    mode = "backlog" if s.backlog else "live"
    return f"{s.name} ({mode}; [#event@input partition] = one batch; tick/idle+Ns = marks and a tick): " + " ".join(parts)


# -- fakes of Faust's topics (what Outputs sends to) ----------------------------------------
class _Topic:
    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[tuple[bytes | None, bytes | None]] = []

    def send_soon(self, key: bytes | None = None, value: bytes | None = None, callback: Any = None) -> None:
        self.sent.append((key, value))


class _App:
    def __init__(self) -> None:
        self.made: dict[str, _Topic] = {}

    def topic(self, name: str, **kwargs: Any) -> _Topic:
        return self.made.setdefault(name, _Topic(name))


@dataclass(slots=True)
class _Position:
    """``pipeline.InputPosition``: what ingest knows of one input partition."""

    newest: int = 0
    behind: bool = True
    announced: bool = False
    lagging: bool = False


@dataclass
class Observation:
    """What consumers and a scraper see (``compare`` takes floats to 9 significant digits)."""

    results: dict[str, Any]  # socialpulse.results upserted by key, without ``revision``
    breaches: dict[str, Any]  # socialpulse.reply-breaches upserted by key (a tombstone removes)
    metrics: dict[str, Any]  # /metrics samples (name{labels} -> value), pipeline health left out
    views: dict[str, Any]  # account API: key -> stage.view(key), without ``revision``
    raw_results: list[tuple[str, Any]] = field(default_factory=list)  # every record, as sent (the self-check)


class Worker:
    """One worker owning every keyed partition, driven like ``streams/pipeline.py`` drives it."""

    def __init__(self, settings: Settings = SETTINGS, input_partitions: int = INPUT_PARTITIONS, hot: int | None = None) -> None:
        self.settings = settings
        self.spec = WindowSpec.from_settings(settings)
        self.stages = make_stages(settings, self.spec)
        self.metrics = Metrics()
        self.tables: dict[str, dict[bytes, bytes]] = {name: {} for name in self.stages}
        for name, stage in self.stages.items():  # as Pipeline.__init__
            stage.load_closed = self._closed_loader(name)
            if hot is not None and not stage.compact:
                # the cold tier, as with RocksDB (HOT_KEYS): at most ``hot`` keys decoded, the rest
                # read from the table when needed; swept every tick, so windows close as for the others
                table = self.tables[name]
                stage.cold, stage.hot_keys, stage.sweep_s = True, hot, 1
                stage.load_pages = lambda p, prefix, table=table: sorted(
                    (k, v) for k, v in table.items() if k.startswith(prefix))
        register_metrics(self.stages, self.metrics)
        t = settings.topic
        self.bare = {t(name): name for name in INPUT_TOPICS}
        self.models = {t(name): TOPIC_MODELS[name] for name in INPUT_TOPICS}
        self.app = _App()
        self.outputs = Outputs(self.app, t, self.bare, settings.topic_prefix, self.metrics)
        self.n = settings.partitions
        self.inputs = {f"{t(name)}/{p}": _Position() for name in INPUT_TOPICS for p in range(input_partitions)}
        self.expected = {name: self._expected_sources(name, input_partitions) for name in self.stages}
        for stage in self.stages.values():
            stage.assign(range(self.n))
        self.wall = 0
        self.unread: dict[str, int] = defaultdict(int)  # input partition -> records not read yet (a backlog)

    # -- as Pipeline ------------------------------------------------------------------
    def _closed_loader(self, name: str) -> Any:
        table = self.tables[name]

        def load(partition: int, size: int, start: int) -> bytes | None:
            return table.get(CLOSED_KEY.format(partition=partition, size=size, start=start).encode())

        return load

    def _expected_sources(self, name: str, input_partitions: int) -> list[str]:
        out = [f"{self.settings.topic(bare)}/{p}" for bare in ROUTER.inputs(name) for p in range(input_partitions)]
        if name == "account":
            out.extend(ACTOR_SOURCE.format(partition=q) for q in range(self.n))
        return out

    def ingest_lane(self, raws: list[Raw]) -> None:
        """``Pipeline.ingest_lane``: a fetched batch, grouped by input partition as Kafka hands it over."""
        by_source: dict[str, list[Raw]] = {}
        for raw in raws:
            by_source.setdefault(f"{raw.topic}/{raw.partition}", []).append(raw)
        for src in by_source:
            self.unread[src] -= len(by_source[src])
        # _announce_behind
        ahead = {}
        for src in by_source:
            pos = self.inputs[src]
            pos.behind = self.unread[src] > 0
            if pos.behind and not pos.announced:
                ahead[src] = Mark(True, pos.newest, False, self.wall)
                pos.announced = True
        if ahead:
            self._send_marks(ahead)
        self.ingest_batch([r for recs in by_source.values() for r in recs])
        after = {src: Mark(self.inputs[src].behind, self.inputs[src].newest, False, self.wall) for src in by_source}
        self._send_marks(after)  # _mark_settled: every partition is settled here

    def ingest_batch(self, raws: list[Raw]) -> None:
        good, bad = decode_batch(raws, self.models, self.settings.max_event_bytes)
        local: dict[str, dict[int, list[Forwarded]]] = defaultdict(lambda: defaultdict(list))
        now_ms = int(time.time() * 1000)
        newest: dict[str, int] = {}
        for raw, event in good:
            bare = self.bare[raw.topic]
            src = f"{raw.topic}/{raw.partition}"
            if event.ts > newest.get(src, 0):
                newest[src] = event.ts
            arrived = raw.timestamp
            if not 0 < arrived < now_ms:
                arrived = now_ms
            for stream, key, primary in ROUTER.routes(bare, event):
                p = partition_for(key, self.n)
                local[stream][p].append(Forwarded(bare, raw.topic, raw.partition, raw.offset, key, event, primary, arrived))
        for stream, parts in local.items():
            out = StageOutput()
            for p, items in parts.items():
                self.stages[stream].process(p, items, out)
            self.emit(stream, out)
        for src, ts in newest.items():
            pos = self.inputs[src]
            if ts > pos.newest:
                pos.newest = ts
        self.outputs.reject(bad)

    def emit(self, name: str, out: StageOutput) -> None:
        stage, table = self.stages[name], self.tables[name]
        for _partition, changes in stage.changelog_records(out).items():
            for key, value in changes:
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = value
        if out.corrected:
            self.metrics.corrections.labels(name).inc(out.corrected)
        for source, n in out.accepted.items():
            self.metrics.events.labels(source, "accepted").inc(n)
        self.publish(out.results)
        self.outputs.reject(out.rejected)
        if name == "actor":
            self._send_marks(self._actor_marks(), stages=("account",))

    def publish(self, outputs: list[Output]) -> None:
        local: dict[str, dict[int, list[Forwarded]]] = defaultdict(lambda: defaultdict(list))
        for r in self.outputs.publish(outputs):
            p = partition_for(r.key, self.n)
            local[r.stream][p].append(Forwarded(r.topic, self.settings.topic(r.source), -1, -1, r.key, r.event, False))
        for stream, parts in local.items():
            out = StageOutput()
            for p, items in parts.items():
                self.stages[stream].process(p, items, out)
            self.emit(stream, out)

    def _send_marks(self, marks: dict[str, Mark], stages: tuple[str, ...] = ("account", "actor")) -> None:
        for name in stages:
            stage = self.stages[name]
            for p in range(self.n):
                stage.mark(p, marks)
                stage.clock(p).advance(self.expected[name])

    def _actor_marks(self) -> dict[str, Mark]:
        return {
            ACTOR_SOURCE.format(partition=q): Mark(not clock.live, clock.current, clock.idle, self.wall)
            for q, clock in self.stages["actor"].clocks.items() if clock.known
        }

    def send_marks(self, idle: bool) -> None:
        marks: dict[str, Mark] = {}
        for src, pos in self.inputs.items():
            unread = self.unread[src] > 0
            is_behind, pos.lagging = unread and (pos.lagging or pos.behind), unread
            pos.behind = pos.announced = is_behind
            marks[src] = Mark(is_behind, pos.newest, not is_behind and idle, self.wall)
        self._send_marks(marks)
        credits = self._actor_marks()
        if credits:
            self._send_marks(credits, stages=("account",))

    def tick(self, idle: bool) -> None:
        self.send_marks(idle)
        for name, stage in self.stages.items():
            out = StageOutput()
            stage.tick(out, self.expected[name], budget=RESULTS_PER_TICK)
            self.emit(name, out)

    def settle(self, wall: int) -> None:
        """Inputs quiet, the wall clock at ``wall``: tick until the actor stage's sweep (a slice of
        its keys per tick) has visited every key twice."""
        self.wall = max(self.wall, wall)
        rounds = 2 * max((len(part) for part in self.stages["actor"].parts.values()), default=0) + 3
        for _ in range(rounds):
            self.tick(idle=True)

    # -- what is seen -------------------------------------------------------------------
    def watermarks(self) -> dict[str, list[int]]:
        return {name: [stage.current_watermark(p) for p in range(self.n)] for name, stage in self.stages.items()}

    def observe(self, keys: Iterable[str]) -> Observation:
        results = _upsert(self.app.made[self.settings.topic(RESULTS)].sent)
        breaches = _upsert(self.app.made[self.settings.topic(BREACHES)].sent)
        for doc in results.values():
            doc.pop("revision", None)
        metrics: dict[str, Any] = {}
        for fam in self.metrics.registry.collect():
            for s in fam.samples:
                if any(s.name == h or s.name.startswith(h + "_") for h in HEALTH):
                    continue
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                metrics[f"{s.name}{{{labels}}}"] = float(s.value)
        # a cohort's revision in the API counts its publications, as on the results topic: not compared
        views = {key: _without_revision(self.stages["account"].view(key)) for key in sorted(keys)}
        raw_results = [(k.decode() if k else "", v) for k, v in self.app.made[self.settings.topic(RESULTS)].sent]
        return Observation(results, breaches, metrics, views, raw_results)


def _without_revision(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_revision(v) for k, v in value.items() if k != "revision"}
    if isinstance(value, list):
        return [_without_revision(v) for v in value]
    return value


def _upsert(sent: list[tuple[bytes | None, bytes | None]]) -> dict[str, Any]:
    """A compacted topic as a consumer that upserts by key holds it (a tombstone removes the key)."""
    last: dict[str, bytes | None] = {}
    for key, value in sent:
        last[key.decode() if key else ""] = value
    return {k: orjson.loads(v) for k, v in last.items() if v is not None}


def norm(value: Any) -> Any:
    """Floats to 9 significant digits (sums in another order differ in the last bits)."""
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return float(f"{value:.9g}") + 0.0
    if isinstance(value, dict):
        return {k: norm(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [norm(v) for v in value]
    return value


def account_keys(events: Sequence[Ev]) -> set[str]:
    keys = {SHOP_KEY, DIRECT_KEY}
    for ev in events:
        if ev.fields.get("platform") and ev.fields.get("account_id"):
            keys.add(f"{ev.fields['platform']}|{ev.fields['account_id']}")
    return keys


def run(events: Sequence[Ev], schedule: Schedule, keys: Iterable[str] | None = None,
        hot: int | None = None) -> tuple[Observation, Observation]:
    """Play one arrival order; (what is seen at the checkpoint, what is seen at the end). With
    ``hot``, at most that many account keys stay decoded (the cold tier)."""
    keys = sorted(keys if keys is not None else account_keys(events))
    w = Worker(hot=hot)
    newest = max(ev.ts for ev in events)
    cap = newest + CHECKPOINT_MS
    t = SETTINGS.topic
    deliveries = schedule.deliveries()
    if schedule.backlog:
        for i in deliveries:
            w.unread[f"{t(events[i].topic)}/{schedule.partition[i]}"] += 1
        w.wall = cap  # a backlog is history: the wall clock is past all of it
    else:
        w.wall = min(ev.ts for ev in events) - MIN
    # offsets: each event's first delivery is the next record of its input partition; a re-delivery
    # is the same record (offset and Kafka timestamp: its arrival)
    offsets: dict[int, int] = {}
    arrivals: dict[int, int] = {}
    next_offset: dict[str, int] = defaultdict(int)
    arrival0 = int(time.time() * 1000) - 120_000
    for seq, i in enumerate(deliveries):
        if i not in offsets:
            src = f"{t(events[i].topic)}/{schedule.partition[i]}"
            offsets[i] = next_offset[src]
            next_offset[src] += 1
            arrivals[i] = arrival0 + seq
    w.tick(idle=False)  # the first periodic marks: every partition settled, the watermark known
    for step in schedule.steps:
        if step[0] == "batch":
            raws = []
            for i in step[1]:
                ev = events[i]
                raws.append(Raw(t(ev.topic), schedule.partition[i], offsets[i], ev.value(), arrivals[i]))
                if not schedule.backlog:
                    w.wall = max(w.wall, ev.ts)  # live: the wall clock is past what arrives
            w.ingest_lane(raws)
        else:
            _, idle, advance_s = step
            if idle and not schedule.backlog:
                w.wall = min(w.wall + advance_s * 1000, cap)
            w.tick(idle=idle)
    w.settle(cap)
    checkpoint = w.observe(keys)
    w.settle(newest + FINAL_MS)
    return checkpoint, w.observe(keys)


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list) and value and any(isinstance(v, (dict, list)) for v in value):
        for k, v in enumerate(value):
            _flat(f"{prefix}[{k}]", v, out)
    else:
        out[prefix] = value


def diff(a: Any, b: Any, limit: int = 12) -> list[str]:
    """The leaves in which two values differ (``path: a != b``), at most ``limit`` of them."""
    fa: dict[str, Any] = {}
    fb: dict[str, Any] = {}
    _flat("", a, fa)
    _flat("", b, fb)
    lines = []
    for path in sorted(set(fa) | set(fb)):
        va, vb = fa.get(path, "<absent>"), fb.get(path, "<absent>")
        if va != vb:
            lines.append(f"    {path}: {va!r} != {vb!r}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"    ... and {len(lines) - limit} more"]
    return lines


#: what ``compare`` compares; a diagnostic run may narrow it to find a family's other differences
#: (``SOCIALPULSE_PROPERTY_ASPECTS=results,breaches``): the tests compare all four by default
ASPECTS = tuple(a for a in os.environ.get("SOCIALPULSE_PROPERTY_ASPECTS", "results,breaches,metrics,views").split(",")
                if a in ("results", "breaches", "metrics", "views"))


def compare(reference: tuple[Observation, Observation], other: tuple[Observation, Observation]) -> list[str]:
    """What differs between two runs: ``[]`` when nothing does."""
    lines: list[str] = []
    for when, ref, obs in (("checkpoint", reference[0], other[0]), ("final", reference[1], other[1])):
        for aspect in ASPECTS:
            if when == "checkpoint" and aspect in ("results", "breaches"):
                continue  # published while windows still close: compared at the end only
            a, b = getattr(ref, aspect), getattr(obs, aspect)
            if a != b and norm(a) != norm(b):
                lines.append(f"  {aspect} at the {when} ({'watermark + ' + ('10 min' if when == 'checkpoint' else '2 days')} "
                             "past the newest event), reference != this order:")
                lines.extend(diff(a, b))
    return lines
