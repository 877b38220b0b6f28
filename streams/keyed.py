"""The keyed stage: per-key state, de-duplication, lateness and window closing.

Ingest forwards validated events to an internal topic partitioned by key
(``account`` = platform|account, ``actor`` = shopper). This stage consumes it in
batches and owns, per key, one state dict:

    {"<family>": {...}}        # each family's slot

Each partition's watermark is persisted beside the keys (``WATERMARK_KEY``), so a
restarted worker never judges lateness against a lower watermark than the one
its windows were closed at: an emitted window never reopens.

De-duplication ids are kept per partition (``SeenIds``), not in the key's
state: a batch then writes only its own new ids to the changelog (one record
per partition, ``SEEN_KEY``), where a per-key set would rewrite every id of a
busy account with each batch.

Kafka-free on purpose: the lane hands in decoded batches and gets back what to
publish and which keys changed; the lane writes each changed key to the
changelog-backed table once per batch.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from schemas.events import STAGE_MODELS, Event

from . import windows
from .family import Family, Output, Sample
from .ingest import Raw, Rejection, SeenIds
from .windows import Watermark, WindowSpec

__all__ = ["Forwarded", "KeyedStage", "StageOutput", "encode_forward", "decode_forward", "WATERMARK_KEY", "SEEN_KEY"]

#: Table key holding a partition's watermark (cannot collide with a platform|account or actor key).
WATERMARK_KEY = "\x00watermark|{partition}"
#: Table key of one record of a partition's de-duplication ids.
SEEN_KEY = "\x00seen|{partition}|{name}"


class Forwarded(NamedTuple):
    """One validated event on its way to the keyed stage (a tuple: built per event, so cheap)."""

    topic: str  # bare input topic name (likes, clicks, ...)
    source: str  # full source topic name (with prefix)
    partition: int
    offset: int
    key: str
    event: dict[str, Any] | Event  # JSON fields on the wire; the model itself when handed over in-process
    primary: bool  # counts toward socialpulse_events_total (an event may feed two streams)


def encode_forward(items: Iterable[Forwarded]) -> bytes:
    return orjson.dumps([
        [f.topic, f.source, f.partition, f.offset, f.key,
         f.event.model_dump(mode="json") if isinstance(f.event, Event) else f.event, f.primary]
        for f in items
    ])


def decode_forward(value: bytes) -> list[Forwarded]:
    make = Forwarded._make
    return [make(row) for row in orjson.loads(value)]


@dataclass(slots=True)
class StageOutput:
    accepted: Counter[str] = field(default_factory=Counter)  # bare input topic -> n
    rejected: list[Rejection] = field(default_factory=list)
    results: list[Output] = field(default_factory=list)
    dirty: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    deleted: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    watermarks: dict[int, int] = field(default_factory=dict)  # partition -> watermark to persist
    seen: dict[int, tuple[str, list[list[Any]]]] = field(default_factory=dict)  # partition -> new ids record
    seen_expired: dict[int, list[str]] = field(default_factory=dict)  # partition -> expired record names


class KeyedStage:
    """State and event-time logic of one keyed stream (``account`` or ``actor``).

    States live per partition (``parts``), so a revoked partition drops all its
    keys at once. With ``compact`` (the shopper stream: many keys, no gauges) a
    state rests encoded as the bytes written to the changelog and is decoded
    only while a batch or the sweep works on it; the sweep then visits a slice
    of the keys each tick, every key about once per ``sweep_s`` seconds.
    """

    def __init__(
        self, name: str, spec: WindowSpec, families: list[Family], dedup_horizon: int, idle: int,
        compact: bool = False, sweep_s: int = 60,
    ) -> None:
        self.name = name
        self.spec = spec
        self.families = families
        self.dedup_horizon = dedup_horizon
        self.idle = idle
        self.compact = compact
        self.sweep_s = sweep_s
        self.parts: dict[int, dict[str, Any]] = defaultdict(dict)
        self.watermarks: dict[int, Watermark] = {}
        self.seen: dict[int, SeenIds] = {}
        self._hot: dict[int, set[str]] = defaultdict(set)
        self._sweep: dict[int, list[str]] = {}

    # -- state -------------------------------------------------------------
    def new_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for fam in self.families:
            state[fam.name] = fam.new_state()
        return state

    def dumps(self, state: dict[str, Any]) -> bytes:
        return orjson.dumps(state, option=orjson.OPT_NON_STR_KEYS)

    def _at_rest(self, state: dict[str, Any]) -> bytes:
        # orjson's output buffer is over-allocated (about 4 KiB); a state kept for
        # hours must hold only its own bytes, so copy it to an exact-size object
        return bytes(memoryview(self.dumps(state)))

    def loads(self, raw: bytes) -> dict[str, Any]:
        data = orjson.loads(raw)
        state: dict[str, Any] = {}
        for fam in self.families:
            state[fam.name] = fam.decode_state(data[fam.name]) if fam.name in data else fam.new_state()
        return state

    @property
    def states(self) -> dict[str, dict[str, Any]]:
        """Every owned key's decoded state (for reads and tests; the account stage keeps them decoded)."""
        return {k: (self.loads(v) if isinstance(v, bytes) else v) for part in self.parts.values() for k, v in part.items()}

    def state(self, partition: int, key: str, create: bool = False) -> dict[str, Any] | None:
        """The decoded state of a key (decoded and marked hot in compact mode)."""
        part = self.parts[partition]
        st = part.get(key)
        if st is None:
            if not create:
                return None
            st = part[key] = self.new_state()
            self._hot[partition].add(key)
        elif isinstance(st, bytes):
            st = part[key] = self.loads(st)
            self._hot[partition].add(key)
        return st  # type: ignore[no-any-return]

    def encoded(self, partition: int, key: str) -> bytes | None:
        st = self.parts[partition].get(key)
        if st is None or isinstance(st, bytes):
            return st
        return self._at_rest(st)  # the table (a memory store, too) keeps it

    def cool(self) -> None:
        """Compact mode: put the states a batch or sweep decoded back to rest, encoded."""
        if not self.compact:
            self._hot.clear()
            return
        for partition, keys in self._hot.items():
            part = self.parts[partition]
            for key in keys:
                st = part.get(key)
                if st is not None and not isinstance(st, bytes):
                    part[key] = self._at_rest(st)
        self._hot.clear()

    def restore(self, partition: int, key: str, raw: bytes) -> None:
        """Adopt a key recovered from the changelog."""
        self.parts[partition][key] = bytes(memoryview(raw)) if self.compact else self.loads(raw)

    def restore_watermark(self, partition: int, watermark: int) -> None:
        """Never start a partition's watermark below the one its windows closed at."""
        wm = self.watermark(partition)
        wm.event_max = max(wm.event_max, watermark)
        wm.persisted = max(wm.persisted, watermark)

    def seen_ids(self, partition: int) -> SeenIds:
        ids = self.seen.get(partition)
        if ids is None:
            ids = self.seen[partition] = SeenIds(epoch=time.time_ns())
        return ids

    def restore_seen(self, partition: int, name: str, rows: list[list[Any]]) -> None:
        self.seen_ids(partition).restore(name, rows)

    def watermark(self, partition: int) -> Watermark:
        wm = self.watermarks.get(partition)
        if wm is None:
            wm = self.watermarks[partition] = Watermark(self.idle)
        return wm

    def assign(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.watermark(p)

    def revoke(self, partitions: Iterable[int]) -> None:
        """Forget keys of partitions this worker lost (their series go with them)."""
        for p in partitions:
            self.parts.pop(p, None)
            self.watermarks.pop(p, None)
            self.seen.pop(p, None)
            self._hot.pop(p, None)
            self._sweep.pop(p, None)

    def size_bytes(self) -> int:
        """Encoded size of all owned state (what the changelog holds for it)."""
        return sum(len(st) if isinstance(st, bytes) else len(self.dumps(st)) for part in self.parts.values() for st in part.values())

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts.values())

    # -- events ------------------------------------------------------------
    def process(self, partition: int, items: list[Forwarded], out: StageOutput) -> None:
        """Apply one partition's forwarded events: dedup, lateness, then families."""
        wm = self.watermark(partition)
        seen = self.seen_ids(partition)
        per_key: dict[str, list[tuple[str, Event]]] = defaultdict(list)
        current, newest = wm.current(), 0  # the watermark, kept in step locally (per event, cheap)
        grace, add, models = self.spec.grace, seen.add, STAGE_MODELS
        accepted: Counter[str] = Counter()
        for item in items:
            ev = item.event  # validated already when it comes straight from this worker's ingest
            event: Event = models[item.topic].__pydantic_validator__.validate_python(ev) if type(ev) is dict else ev  # type: ignore[assignment]
            ts = event.ts
            uid = f"{item.key}\x1f{event.event_id}"  # ids are unique per key (an account, a shopper)
            if not add(uid, ts):
                if item.primary:
                    out.rejected.append(self._reject(item, "duplicate", f"event_id seen within {self.spec.label(self.dedup_horizon)}"))
                continue
            if ts < current - grace:  # windows.is_late, inlined: this runs per event
                seen.forget_last(uid)  # a late event is not "seen": a retry stays late
                if item.primary or item.topic == "credits":  # never drop credited revenue silently
                    behind = (current - ts) / 1000
                    out.rejected.append(self._reject(item, "late", f"{behind:.0f}s behind the watermark, grace {self.spec.label(grace)}"))
                continue
            if ts > newest:
                newest = ts
                if ts > current:
                    current = ts
            if item.primary:
                accepted[item.topic] += 1
            per_key[item.key].append((item.topic, event))
        out.accepted.update(accepted)
        if newest:
            wm.observe(newest)
        at, dirty, results = wm.current(), out.dirty[partition], out.results
        for key, evs in per_key.items():
            state = self.state(partition, key, create=True)
            assert state is not None
            for fam in self.families:
                topics = fam.topics
                mine = [e for t, e in evs if t in topics]
                if mine:
                    results.extend(fam.apply(key, state[fam.name], mine, at))
            dirty.add(key)
        record = seen.flush()
        if record is not None:
            out.seen[partition] = record

    @staticmethod
    def _reject(item: Forwarded, reason: str, detail: str) -> Rejection:
        ev = item.event
        data = ev.model_dump(mode="json") if isinstance(ev, Event) else ev
        raw = Raw(item.source, item.partition, item.offset, orjson.dumps(data))
        return Rejection(raw, reason, detail, data.get("event_id"))

    # -- time --------------------------------------------------------------
    def tick(self, out: StageOutput, caught_up: dict[int, bool] | None = None) -> None:
        """Advance watermarks, close due windows, expire state. Call about once a second.

        ``caught_up`` says per partition whether the consumer has read to the end;
        a partition that is not is never moved by the wall clock (a backlog is
        worked through by event time alone).
        """
        for partition, wm in list(self.watermarks.items()):
            at = wm.advance(caught_up is None or caught_up.get(partition, False))
            if at > wm.persisted:
                out.watermarks[partition] = wm.persisted = at
            expired = self.seen_ids(partition).expire(at, self.dedup_horizon)
            if expired:
                out.seen_expired[partition] = expired
            for key in self._due_keys(partition):
                state = self.state(partition, key)
                if state is None:
                    continue
                changed = False
                for fam in self.families:
                    outputs, fam_changed = fam.close(key, state[fam.name], at)
                    out.results.extend(outputs)
                    changed = changed or fam_changed
                if changed:
                    if all(fam.is_empty(state[fam.name]) for fam in self.families):
                        del self.parts[partition][key]
                        self._hot[partition].discard(key)
                        out.deleted[partition].add(key)
                    else:
                        out.dirty[partition].add(key)

    def _due_keys(self, partition: int) -> list[str]:
        """All keys each tick; in compact mode a rotating slice (each key once per sweep)."""
        part = self.parts.get(partition)
        if not part:
            return []
        if not self.compact:
            return list(part)
        queue = self._sweep.get(partition)
        if not queue:
            queue = self._sweep[partition] = list(part)
        n = max(1, -(-len(part) // self.sweep_s))
        chunk, self._sweep[partition] = queue[:n], queue[n:]
        return chunk

    # -- reads -------------------------------------------------------------
    def _find(self, key: str) -> tuple[int, dict[str, Any]] | None:
        for partition, part in self.parts.items():
            if key in part:
                st = self.state(partition, key)
                assert st is not None
                return partition, st
        return None

    def current_watermark(self, partition: int) -> int:
        wm = self.watermarks.get(partition)
        return wm.current() if wm is not None else 0

    def samples(self) -> Iterator[Sample]:
        for partition, part in list(self.parts.items()):
            at = self.current_watermark(partition)
            for key, state in list(part.items()):
                if isinstance(state, bytes):
                    continue  # compact stages export no per-key series
                for fam in self.families:
                    yield from fam.samples(key, state[fam.name], at)

    def view(self, key: str) -> dict[str, Any] | None:
        found = self._find(key)
        if found is None:
            return None
        partition, state = found
        at = self.current_watermark(partition)
        return {"watermark": windows.iso(at)} | {
            fam.name: fam.view(key, state[fam.name], at) for fam in self.families
        }
