"""Raw bytes -> validated events; de-duplication; dead letters; routing.

Nothing here touches Kafka: the agents hand in raw records and get back
validated events and rejections, so every rule is unit-tested on plain values.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from typing import Annotated, Any, NamedTuple

import orjson
from aiokafka.partitioner import murmur2
from pydantic import Field, TypeAdapter, ValidationError

from schemas.events import Event
from schemas.results import OUTCOMES, REJECT_REASONS, DeadLetter

from .pages import RECORD_MAX
from .windows import iso

__all__ = [
    "Raw",
    "Rejection",
    "decode",
    "decode_batch",
    "OUTCOME_OF",
    "partition_for",
    "SeenIds",
    "SETTLE_S",
    "dead_letter",
    "dead_letter_value",
    "RAW_KEEP",
]

#: ``socialpulse_events_total{outcome}`` for each rejection reason (schemas.results.REJECT_REASONS)
OUTCOME_OF = {reason: reason if reason in OUTCOMES else "invalid" for reason in REJECT_REASONS}


class Raw(NamedTuple):
    """One input record as Kafka gave it (a tuple: one is built per record)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    timestamp: int = 0  # the record's Kafka timestamp (ms): its arrival


@dataclass(slots=True, frozen=True)
class Rejection:
    """Why one input record (or one event of a batched record) was not counted."""

    raw: Raw
    reason: str
    detail: str
    event_id: str | None = None
    value: bytes | None = None  # the offending event, when it is part of a batched record


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "value"
    msg = err["msg"].removeprefix("Value error, ")
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{loc}: {msg}{more}"


def _event_id_of(obj: Any) -> str | None:
    if isinstance(obj, dict):
        eid = obj.get("event_id")
        if isinstance(eid, str) and 0 < len(eid) <= 128:
            return eid
    return None


@cache
def _array_of(model: type[Event]) -> TypeAdapter[list[Any]]:
    """A JSON array -> each element as the model or, where it is not valid, as parsed."""
    item = Annotated[model | Any, Field(union_mode="left_to_right")]  # type: ignore[valid-type]
    return TypeAdapter(list[item])  # type: ignore[valid-type]


def decode(raw: Raw, model: type[Event], max_bytes: int) -> list[Event | Rejection]:
    """Validate one record. A record is one JSON object, a JSON array of objects,
    or newline-delimited JSON objects; each event is validated on its own."""
    value = raw.value
    if value is None or len(value) == 0:
        return [Rejection(raw, "not_json", "empty value")]
    if len(value) > max_bytes:
        return [Rejection(raw, "too_large", f"{len(value)} bytes > {max_bytes} (SOCIALPULSE_MAX_EVENT_BYTES)")]
    # Fast path: pydantic-core parses and validates the whole record in one pass, in
    # Rust (about half the cost of orjson + model_validate). Only a record that is
    # entirely valid leaves here; anything else takes the path below, which finds each
    # bad event and says why.
    try:
        if value[0] == 0x5B:  # "[": a batch of events
            items = _array_of(model).validate_json(value)
            if items:
                return [item if type(item) is model else _element(raw, model, item) for item in items]
        else:
            return [model.__pydantic_validator__.validate_json(value)]
    except (ValueError, ArithmeticError):  # ValidationError is a ValueError
        pass
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        if b"\n" in value.strip():
            return [_one(raw, model, line) for line in value.split(b"\n") if line.strip()]
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return [Rejection(raw, "not_utf8", f"not UTF-8: {uexc.reason} at byte {uexc.start}")]
        return [Rejection(raw, "not_json", f"not JSON: {exc.msg}")]
    if isinstance(parsed, list):
        if not parsed:
            return [Rejection(raw, "invalid", "empty JSON array")]
        return [_element(raw, model, item) for item in parsed]
    return [_validate(raw, model, parsed, None)]


def _element(raw: Raw, model: type[Event], obj: Any) -> Event | Rejection:
    """An array element the fast path could not validate: why (it keeps its own JSON)."""
    out = _validate(raw, model, obj, None)
    if isinstance(out, Rejection):
        try:
            text = orjson.dumps(obj)
        except TypeError:  # e.g. an integer beyond 64 bits, which pydantic's parser accepts
            text = json.dumps(obj).encode()
        return replace(out, value=text)
    return out


def _one(raw: Raw, model: type[Event], line: bytes) -> Event | Rejection:
    try:
        return model.__pydantic_validator__.validate_json(line)
    except (ValueError, ArithmeticError):
        pass  # the path below says why
    try:
        parsed = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return Rejection(raw, "not_json", f"not JSON: {exc.msg}", value=line)
    return _validate(raw, model, parsed, line)


def _validate(raw: Raw, model: type[Event], obj: Any, part: bytes | None) -> Event | Rejection:
    if not isinstance(obj, dict):
        return Rejection(raw, "invalid", f"expected a JSON object, got {type(obj).__name__}", value=part)
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        return Rejection(raw, "invalid", _first_error(exc), _event_id_of(obj), value=part)
    except (ValueError, ArithmeticError) as exc:  # e.g. a number too large for Decimal
        return Rejection(raw, "invalid", f"value: {exc}", _event_id_of(obj), value=part)


def decode_batch(
    raws: Iterable[Raw], models: dict[str, type[Event]], max_bytes: int
) -> tuple[list[tuple[Raw, Event]], list[Rejection]]:
    """Validate many records (``models`` maps topic name to model); return
    (accepted, rejected) in input order."""
    good: list[tuple[Raw, Event]] = []
    bad: list[Rejection] = []
    for raw in raws:
        model, value = models[raw.topic], raw.value
        if value and value[0] == 0x7B and len(value) <= max_bytes:  # one JSON object: decode's fast path, inlined
            try:  # the validator itself: model_validate_json's checks of its arguments cost ~1.4 us a call
                good.append((raw, model.__pydantic_validator__.validate_json(value)))
                continue
            except (ValueError, ArithmeticError):
                pass
        for item in decode(raw, model, max_bytes):
            if type(item) is Rejection:
                bad.append(item)  # type: ignore[arg-type]
            else:
                good.append((raw, item))  # type: ignore[arg-type]
    return good, bad


@lru_cache(maxsize=65_536)
def partition_for(key: str, partitions: int) -> int:
    """Kafka's default partitioner (murmur2), so Faust's router agrees on the owner."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


#: seconds a de-duplication record outlives its horizon: input offsets are committed every second
SETTLE_S = 10.0


class SeenIds:
    """The de-duplication ids of one keyed partition, kept as an append-only log.

    Each id is kept with its *arrival* time (the Kafka timestamp of the input
    record that carried it), never its event time: an upstream re-send is a
    duplicate within the horizon of the first arrival, whatever the event's age,
    and Kafka's re-delivery of the same record (after a crash, a rebalance, an
    outage of any length) carries the same timestamp, so it is always recognised.
    ``clock`` is the newest arrival seen; ids older than ``clock - horizon``
    expire, so memory is arrival rate x horizon, not event-time span. A record
    also stays for ``SETTLE_S`` seconds after it was written or restored, whatever
    the clock says: long enough for its input offsets to be committed, so a
    record Kafka can still re-deliver (read but not yet committed when a worker
    died or lost the partition) never finds its ids gone, even when the backlog
    it came from spans more than the horizon of arrivals.

    Each flush turns the ids first seen since the last one into a small record
    (name -> [[id, arrived], ...]) for the changelog, so a batch writes only its
    own ids, never the whole set. A record expires as a whole once its newest id
    is older than the horizon; its ids go with it. ``restore`` rebuilds the set
    from the records a recovering worker reads back.
    """

    __slots__ = ("ids", "records", "fresh", "epoch", "seq", "clock")

    def __init__(self, epoch: int = 0) -> None:
        self.ids: dict[str, int] = {}
        self.records: dict[str, tuple[int, list[str], float]] = {}  # name -> (newest arrival, ids, written at)
        self.fresh: list[list[Any]] = []  # [[id, arrived], ...] since the last flush
        self.epoch = epoch  # makes record names unique across the workers a partition moves between
        self.seq = 0
        self.clock = 0  # newest arrival (ms) flushed or restored

    def add(self, uid: str, arrived: int) -> bool:
        """Record ``uid``; False if it was already recorded (a duplicate)."""
        if uid in self.ids:
            return False
        self.ids[uid] = arrived
        self.fresh.append([uid, arrived])
        return True

    def forget_last(self, uid: str) -> None:
        """Un-record the id just added (a late event is not "seen": a retry stays late)."""
        if self.fresh and self.fresh[-1][0] == uid:
            self.fresh.pop()
            self.ids.pop(uid, None)

    def flush(self, into: str | None = None) -> tuple[str, list[list[Any]]] | None:
        """The record of the ids added since the last flush, if any: a new one, or more ids
        for record ``into`` (not written yet: one batch, one record, however many flushes)."""
        if not self.fresh:
            return None
        rows, self.fresh = self.fresh, []
        newest = max(row[1] for row in rows)
        if into is not None and (kept := self.records.get(into)) is not None:
            name = into
            kept[1].extend(row[0] for row in rows)  # in place: a batch of many runs stays linear
            self.records[name] = (max(kept[0], newest), kept[1], time.monotonic())
        else:
            self.seq += 1
            name = f"{self.epoch:x}-{self.seq}"
            self.records[name] = (newest, [row[0] for row in rows], time.monotonic())
        if newest > self.clock:
            self.clock = newest
        return name, rows

    def restore(self, name: str, rows: list[list[Any]]) -> None:
        for uid, ts in rows:
            self.ids[uid] = ts
        if rows:
            newest = max(ts for _, ts in rows)
            self.records[name] = (newest, [uid for uid, _ in rows], time.monotonic())
            self.clock = max(self.clock, newest)

    def expire(self, clock: int, horizon: int, settle_s: float = SETTLE_S) -> list[str]:
        """Drop records wholly older than ``clock - horizon`` (arrival time) and written
        more than ``settle_s`` ago; return their names."""
        low = clock - horizon
        written = time.monotonic() - settle_s
        gone = [name for name, (newest, _, at) in self.records.items() if newest < low and at <= written]
        for name in gone:
            for uid in self.records.pop(name)[1]:
                if self.ids.get(uid, low) < low:
                    del self.ids[uid]
        return gone

    def __len__(self) -> int:
        return len(self.ids)


#: raw bytes a dead letter keeps of a rejected value when the whole would pass ``RECORD_MAX``
#: (the dead letter then says ``raw_truncated`` and carries the value's length and SHA-256)
RAW_KEEP = 16 * 1024
#: characters of ``detail`` a dead letter keeps
DETAIL_MAX = 1024


def dead_letter(rej: Rejection, now_ms: int | None = None, limit: int = RECORD_MAX) -> DeadLetter:
    """The dead letter of a rejection, at most ``limit`` bytes as JSON (``dead_letter_value``)."""
    return _bounded(rej, now_ms, limit)[0]


def dead_letter_value(rej: Rejection, now_ms: int | None = None, limit: int = RECORD_MAX) -> bytes:
    """The JSON of a rejection's dead letter: whole when it fits in ``limit`` bytes, else with
    the first ``RAW_KEEP`` bytes of the raw value (fewer if its escapes still make it too long),
    ``raw_truncated``, and the whole value's ``raw_bytes`` and ``raw_sha256``."""
    return _bounded(rej, now_ms, limit)[1]


def _bounded(rej: Rejection, now_ms: int | None, limit: int) -> tuple[DeadLetter, bytes]:
    value = rej.value if rej.value is not None else rej.raw.value
    raw_bytes = value or b""
    try:
        raw_bytes.decode("utf-8")
        utf8 = True
    except UnicodeDecodeError:
        utf8 = False
    at = iso(int(time.time() * 1000) if now_ms is None else now_ms)
    letter = _letter(rej, raw_bytes, utf8, at)
    encoded = letter.model_dump_json().encode()
    keep = RAW_KEEP
    if len(encoded) > limit:
        whole = {"raw_truncated": True, "raw_bytes": len(raw_bytes), "raw_sha256": hashlib.sha256(raw_bytes).hexdigest()}
    while len(encoded) > limit and keep >= 64:
        letter = _letter(rej, raw_bytes[:keep], utf8, at, **whole)
        encoded = letter.model_dump_json().encode()
        keep //= 2  # (escapes can make a value's JSON six times its length)
    return letter, encoded


def _letter(rej: Rejection, part: bytes, utf8: bool, at: str, **whole: Any) -> DeadLetter:
    return DeadLetter(
        source_topic=rej.raw.topic,
        partition=rej.raw.partition,
        offset=rej.raw.offset,
        # (a cut value may end inside a character: that partial character is left out)
        raw=part.decode("utf-8", errors="ignore") if utf8 else base64.b64encode(part).decode(),
        raw_encoding="utf-8" if utf8 else "base64",
        reason=rej.reason,  # type: ignore[arg-type]
        detail=rej.detail[:DETAIL_MAX],
        event_id=rej.event_id,
        rejected_at=at,
        **whole,
    )
