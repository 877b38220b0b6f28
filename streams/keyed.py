"""The keyed stage: per-key state, de-duplication, lateness and window closing.

Ingest forwards validated events to an internal topic partitioned by key
(``account`` = platform|account, ``actor`` = shopper). This stage consumes it in
batches and owns, per key, one state dict:

    {"seen": {event_id: ts},   # de-duplication horizon
     "<family>": {...}}        # each family's slot

Each partition's watermark is persisted beside the keys (``WATERMARK_KEY``), so a
restarted worker never judges lateness against a lower watermark than the one
its windows were closed at: an emitted window never reopens.

Kafka-free on purpose: the agent hands in decoded batches and gets back what to
publish and which keys changed; the agent writes each changed key to the
changelog-backed table once per flush.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas.events import STAGE_MODELS, Event

from . import windows
from .family import Family, Output, Sample
from .ingest import Raw, Rejection, prune_seen, seen_before
from .windows import Watermark, WindowSpec

__all__ = ["Forwarded", "KeyedStage", "StageOutput", "encode_forward", "decode_forward", "WATERMARK_KEY"]

#: Table key holding a partition's watermark (cannot collide with a platform|account or actor key).
WATERMARK_KEY = "\x00watermark|{partition}"


@dataclass(slots=True, frozen=True)
class Forwarded:
    """One validated event on its way to the keyed stage."""

    topic: str  # bare input topic name (likes, clicks, ...)
    source: str  # full source topic name (with prefix)
    partition: int
    offset: int
    key: str
    event: dict[str, Any]
    primary: bool  # counts toward socialpulse_events_total (an event may feed two streams)


def encode_forward(items: Iterable[Forwarded]) -> bytes:
    return orjson.dumps([[f.topic, f.source, f.partition, f.offset, f.key, f.event, f.primary] for f in items])


def decode_forward(value: bytes) -> list[Forwarded]:
    return [Forwarded(*row) for row in orjson.loads(value)]


@dataclass(slots=True)
class StageOutput:
    accepted: Counter[str] = field(default_factory=Counter)  # bare input topic -> n
    rejected: list[Rejection] = field(default_factory=list)
    results: list[Output] = field(default_factory=list)
    dirty: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    deleted: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    watermarks: dict[int, int] = field(default_factory=dict)  # partition -> watermark to persist


class KeyedStage:
    """State and event-time logic of one keyed stream (``account`` or ``actor``)."""

    def __init__(self, name: str, spec: WindowSpec, families: list[Family], dedup_horizon: int, idle: int) -> None:
        self.name = name
        self.spec = spec
        self.families = families
        self.dedup_horizon = dedup_horizon
        self.idle = idle
        self.states: dict[str, dict[str, Any]] = {}
        self.partition_of: dict[str, int] = {}
        self.keys_in: dict[int, set[str]] = defaultdict(set)
        self.watermarks: dict[int, Watermark] = {}
        self._by_topic: dict[str, list[Family]] = defaultdict(list)
        for fam in families:
            for topic in fam.topics:
                self._by_topic[topic].append(fam)

    # -- state -------------------------------------------------------------
    def new_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"seen": {}}
        for fam in self.families:
            state[fam.name] = fam.new_state()
        return state

    def dumps(self, state: dict[str, Any]) -> bytes:
        return orjson.dumps(state, option=orjson.OPT_NON_STR_KEYS)

    def loads(self, raw: bytes) -> dict[str, Any]:
        data = orjson.loads(raw)
        state: dict[str, Any] = {"seen": data.get("seen", {})}
        for fam in self.families:
            state[fam.name] = fam.decode_state(data[fam.name]) if fam.name in data else fam.new_state()
        return state

    def restore(self, partition: int, key: str, raw: bytes) -> None:
        """Adopt a key recovered from the changelog."""
        self._own(partition, key, self.loads(raw))

    def restore_watermark(self, partition: int, watermark: int) -> None:
        """Never start a partition's watermark below the one its windows closed at."""
        wm = self.watermark(partition)
        wm.event_max = max(wm.event_max, watermark)
        wm.persisted = max(wm.persisted, watermark)

    def _own(self, partition: int, key: str, state: dict[str, Any]) -> None:
        self.states[key] = state
        self.partition_of[key] = partition
        self.keys_in[partition].add(key)

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
            for key in self.keys_in.pop(p, set()):
                self.states.pop(key, None)
                self.partition_of.pop(key, None)
            self.watermarks.pop(p, None)

    # -- events ------------------------------------------------------------
    def process(self, partition: int, items: list[Forwarded], out: StageOutput) -> None:
        """Apply one partition's forwarded events: dedup, lateness, then families."""
        wm = self.watermark(partition)
        per_key: dict[str, list[tuple[str, Event]]] = defaultdict(list)
        for item in items:
            state = self.states.get(item.key)
            if state is None:
                state = self.new_state()
                self._own(partition, item.key, state)
            event = STAGE_MODELS[item.topic].model_validate(item.event)
            if seen_before(state["seen"], event.event_id, event.ts):
                if item.primary:
                    out.rejected.append(self._reject(item, "duplicate", f"event_id seen within {self.spec.label(self.dedup_horizon)}"))
                continue
            current = wm.current()
            if windows.is_late(event.ts, current, self.spec.grace):
                del state["seen"][event.event_id]  # a late event is not "seen": a retry stays late
                if item.primary or item.topic == "credits":  # never drop credited revenue silently
                    behind = (current - event.ts) / 1000
                    out.rejected.append(self._reject(item, "late", f"{behind:.0f}s behind the watermark, grace {self.spec.label(self.spec.grace)}"))
                continue
            wm.observe(event.ts)
            if item.primary:
                out.accepted[item.topic] += 1
            per_key[item.key].append((item.topic, event))
        for key, evs in per_key.items():
            state = self.states[key]
            for fam in self.families:
                mine = [e for t, e in evs if fam in self._by_topic[t]]
                if mine:
                    out.results.extend(fam.apply(key, state[fam.name], mine, wm.current()))
            out.dirty[partition].add(key)

    @staticmethod
    def _reject(item: Forwarded, reason: str, detail: str) -> Rejection:
        raw = Raw(item.source, item.partition, item.offset, orjson.dumps(item.event))
        return Rejection(raw, reason, detail, item.event.get("event_id"))

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
            for key in list(self.keys_in.get(partition, ())):
                state = self.states[key]
                changed = False
                for fam in self.families:
                    outputs, fam_changed = fam.close(key, state[fam.name], at)
                    out.results.extend(outputs)
                    changed = changed or fam_changed
                before = len(state["seen"])
                prune_seen(state["seen"], at, self.dedup_horizon)
                if changed or len(state["seen"]) != before:
                    if not state["seen"] and all(fam.is_empty(state[fam.name]) for fam in self.families):
                        self._drop(partition, key)
                        out.deleted[partition].add(key)
                    else:
                        out.dirty[partition].add(key)

    def _drop(self, partition: int, key: str) -> None:
        self.states.pop(key, None)
        self.partition_of.pop(key, None)
        self.keys_in[partition].discard(key)

    # -- reads -------------------------------------------------------------
    def current_watermark(self, key: str) -> int:
        wm = self.watermarks.get(self.partition_of[key])
        return wm.current() if wm is not None else 0

    def samples(self) -> Iterator[Sample]:
        for key, state in list(self.states.items()):
            at = self.current_watermark(key)
            for fam in self.families:
                yield from fam.samples(key, state[fam.name], at)

    def view(self, key: str) -> dict[str, Any] | None:
        state = self.states.get(key)
        if state is None:
            return None
        at = self.current_watermark(key)
        return {"watermark": windows.iso(at)} | {
            fam.name: fam.view(key, state[fam.name], at) for fam in self.families
        }
