"""The keyed stage: per-key state, de-duplication, lateness and window closing.

Ingest forwards validated events to an internal topic partitioned by key
(``account`` = platform|account, ``actor`` = shopper). This stage consumes it in
batches and owns, per key, one state dict:

    {"<family>": {...}}        # each family's slot

Each partition's watermark (``windows.EventClock``) is held by the slowest input
that feeds it: the readers of the input partitions send marks (``encode_marks``)
down the keyed topic after the events they forwarded, so a backlog read in any
order never makes its own events late. It is persisted in each flush's marker
(``FLUSH_KEY``), so a restarted worker never judges lateness against a lower
watermark than the one its windows were closed at.

An event up to ``ALLOWED_LATENESS`` behind the watermark is accepted. A window is
published when the watermark passes its end plus grace (revision 0) and each key's
aggregate of it is kept, a small document per key and window (``ENTRY_DOC``), until
the watermark passes its end plus the allowed lateness; late data for it merges
into that entry and the window is published again with the next revision. Kept
outside the keys' own documents, closed windows cost the hot path nothing.

De-duplication ids are kept per partition (``SeenIds``), not in the key's
state: a batch then writes only its own new ids to the changelog (``SEEN_KEY``),
where a per-key set would rewrite every id of a busy account with each batch.
They expire by arrival time (the Kafka timestamp of the input record), so a
re-delivery of the same record, however old, is always recognised, and memory is
arrival rate x ``DEDUP_HORIZON``. Ids and state reach the changelog in the same
atomic flush (``streams.pages``); a key record of format 1 carried its batch's
ids itself (``with_ids``), and is still read.

Kafka-free on purpose: the lane hands in decoded batches and gets back what to
publish; ``absorb`` keeps what they changed and ``flush`` gives the changelog
records of everything changed since the last flush (the pipeline calls it before
each commit).
"""

from __future__ import annotations

import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from schemas.events import INPUT_TOPICS, STAGE_MODELS, Event
from schemas.results import Result

from . import windows
from .family import Family, Output, Record, Sample
from .ingest import SETTLE_S, Raw, Rejection, SeenIds, partition_for
from .pages import (
    PAGE,
    RECORD_MAX,
    SPLIT_AT,
    STATE_FORMAT,
    Directory,
    FormatError,
    PageId,
    assemble,
    changes,
    check_format,
    decode_page,
    doc_prefix,
    paginate,
    parse_key,
    resolve,
)
from .topics import RESULTS
from .windows import ClosedWindow, EventClock, Mark, WindowSpec

__all__ = [
    "Forwarded", "KeyedStage", "StageOutput", "encode_forward", "forward_records", "decode_forward", "encode_marks", "marks_records",
    "WATERMARK_KEY", "SEEN_KEY", "CLOSED_KEY", "ENTRY_DOC", "FLUSH_KEY", "KEY_IDS", "FORMAT", "WIRE_FORMAT", "FormatError",
    "encode_seen",
    "decode_seen", "versioned", "unversioned", "check_format", "ids_by_key", "with_ids", "split_ids",
]

#: Table key holding a partition's watermark (cannot collide with a platform|account or actor key).
WATERMARK_KEY = "\x00watermark|{partition}"
#: Table key of one record of a partition's de-duplication ids.
SEEN_KEY = "\x00seen|{partition}|{name}"
#: One closed window of a partition: {key: {family: [revision, aggregate]}}. Format 1 wrote it as one
#: record under this key; format 2 writes each key's entry as a document of its own (``ENTRY_DOC``).
CLOSED_KEY = "\x00closed|{partition}|{size}|{start}"
#: Name of the document of one key's entry of a closed window: {family: [revision, aggregate]}
ENTRY_DOC = CLOSED_KEY + "|{key}"
#: Table key of a partition's flush marker: the epoch of its last complete flush and its watermark.
FLUSH_KEY = "\x00flush|{partition}"

_WATERMARK = WATERMARK_KEY.split("{", 1)[0]
_SEEN = SEEN_KEY.split("{", 1)[0]
_CLOSED = CLOSED_KEY.split("{", 1)[0]
_FLUSH = FLUSH_KEY.split("{", 1)[0]
_PAGE = PAGE.decode()

#: (partition, window size, window start) of a closed-window record
Group = tuple[int, int, int]

#: Format version of state records (bump it with a migration: docs/operations.md). Version 2: state
#: in pages written per flush (``streams.pages``); 1: one record per key and per closed window.
FORMAT = STATE_FORMAT
#: Format version written on the keyed topics (forwarded records and marks): their layout did not
#: change with format 2 of the state, so a worker of the previous release still reads what this one
#: forwards during a rolling upgrade. (Read: any version up to ``FORMAT``.)
WIRE_FORMAT = 1

#: closed-window entries (one key's aggregates of one window) a stage keeps decoded
RECENT_ENTRIES = 20_000


class _Cold:
    """The state of a key resting in the local store only (``KeyedStage.hot_keys``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "COLD"


COLD: Any = _Cold()

#: Name prefix of the ids restored from a key's own record (never written as a ``SEEN_KEY``)
KEY_IDS = "~key|"
_IDS_FIELD = b'{"~ids":'


_VERSIONED = b'{"~v":%d' % FORMAT


def versioned(value: bytes) -> bytes:
    """A JSON object with the format version as its first field ``~v``."""
    return _VERSIONED + (value[1:] if value[1:2] == b"}" else b"," + value[1:])


def unversioned(raw: bytes, what: str) -> dict[str, Any]:
    """A versioned JSON object without its ``~v`` (a version it does not know: ``FormatError``)."""
    data = orjson.loads(raw)
    if type(data) is not dict:
        raise TypeError(f"{what} is not a JSON object")
    check_format(data.pop("~v", 0), what)
    return data


def encode_seen(rows: list[list[Any]], epoch: int | None = None) -> bytes:
    """A de-duplication ids record: ``{"~v": FORMAT, "e": epoch, "ids": [[id, arrived], ...]}``
    (``e``: the flush it belongs to, ``streams.pages``)."""
    return versioned(orjson.dumps({"ids": rows} if epoch is None else {"e": epoch, "ids": rows}))


def decode_seen(raw: bytes) -> list[list[Any]]:
    return decode_seen_flush(raw)[0]


def decode_seen_flush(raw: bytes) -> tuple[list[list[Any]], int | None]:
    """An ids record's rows and the flush it belongs to (None: written before flushes)."""
    data = orjson.loads(raw)
    if type(data) is list:  # version 0: the bare rows
        return data, None
    if type(data) is not dict:
        raise TypeError("an ids record is not a JSON object")
    check_format(data.get("~v", 0), "an ids record")
    rows = data["ids"]
    if type(rows) is not list or any(type(r) is not list or len(r) != 2 for r in rows):
        raise TypeError("an ids record's ids are not [[id, arrived], ...]")
    epoch = data.get("e")
    if epoch is not None and type(epoch) is not int:
        raise TypeError("an ids record's flush is not an integer")
    return rows, epoch


def seen_chunks(rows: list[list[Any]], limit: int = RECORD_MAX - 1024) -> list[list[list[Any]]]:
    """A flush's ids in records of at most ``limit`` bytes each."""
    out: list[list[list[Any]]] = [[]]
    size = 0
    for row in rows:
        uid = row[0]
        # an id's JSON is at most twice its UTF-8 length (escapes; \x1f, the one control
        # character, takes 6 bytes: within the 24 of the row's brackets and arrival)
        n = (len(uid) if uid.isascii() else len(uid.encode())) * 2 + 24
        if size + n > limit and out[-1]:
            out.append([])
            size = 0
        out[-1].append(row)
        size += n
    return out


def ids_by_key(rows: list[list[Any]]) -> dict[str, list[Any]]:
    """A batch's new ids (``[[key\x1fevent_id, arrived], ...]``) grouped by key, compact:
    ``key -> [newest arrival, event_id, event_id, ...]`` (the key is the record's own, and
    one arrival per key only keeps its ids a little longer)."""
    by_key: dict[str, list[Any]] = {}
    for uid, arrived in rows:
        key, _, event_id = uid.partition("\x1f")
        ids = by_key.get(key)
        if ids is None:
            by_key[key] = [arrived, event_id]
        else:
            ids.append(event_id)
            if arrived > ids[0]:
                ids[0] = arrived
    return by_key


def with_ids(value: bytes, ids: list[Any]) -> bytes:
    """A key's encoded state (a JSON object) with the ids its batch applied, as field ``~ids``."""
    rest = value[1:]
    return _IDS_FIELD + orjson.dumps(ids) + (rest if rest[:1] == b"}" else b"," + rest)


def split_ids(value: bytes, key: str = "") -> tuple[bytes, list[list[Any]] | None]:
    """(the key's state, the ids carried with it as ``[[key\x1fevent_id, arrived], ...]``)."""
    if not value.startswith(_IDS_FIELD):
        return value, None
    data = orjson.loads(value)
    carried = data.pop("~ids")
    if carried and type(carried[0]) is list:  # written before the compact form
        rows = carried
    else:
        rows = [[f"{key}\x1f{event_id}", carried[0]] for event_id in carried[1:]]
    return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS), rows


class Forwarded(NamedTuple):
    """One validated event on its way to the keyed stage (a tuple: built per event, so cheap)."""

    topic: str  # bare input topic name (likes, clicks, ...)
    source: str  # full source topic name (with prefix)
    partition: int
    offset: int  # -1 (and partition -1): a record a family derived (``family.Forward``), e.g. a credit
    key: str
    event: dict[str, Any] | Event  # JSON fields on the wire; the model itself when handed over in-process
    primary: bool  # counts toward socialpulse_events_total (an event may feed two streams)
    arrived: int = 0  # Kafka timestamp (ms) of the input record: de-duplication is by arrival time


def _row(f: Forwarded) -> bytes:
    return orjson.dumps([f.topic, f.source, f.partition, f.offset, f.key,
                         f.event.model_dump(mode="json") if isinstance(f.event, Event) else f.event, f.primary, f.arrived])


_WIRE_HEAD = b"[%d" % WIRE_FORMAT


def encode_forward(items: Iterable[Forwarded]) -> bytes:
    """Forwarded events: ``[FORMAT, row, row, ...]`` (version 0 had no leading version)."""
    return b",".join([_WIRE_HEAD, *map(_row, items)]) + b"]"


def forward_records(items: Iterable[Forwarded], limit: int = RECORD_MAX, most: int = 500) -> Iterator[bytes]:
    """Forwarded events in records of at most ``most`` events and ``limit`` bytes each, in their
    order (each is ``encode_forward`` of a run of them: the layout and version are unchanged,
    so a reader of the last release reads these too). A validated event is a few KiB at most
    (its ids and names are bounded by the schemas), so every event fits: one larger than
    ``limit`` would still go, alone."""
    rows: list[bytes] = [_WIRE_HEAD]
    size = len(_WIRE_HEAD) + 1
    for f in items:
        row = _row(f)
        if len(rows) > 1 and (size + 1 + len(row) > limit or len(rows) > most):
            yield b",".join(rows) + b"]"
            rows, size = [_WIRE_HEAD], len(_WIRE_HEAD) + 1
        rows.append(row)
        size += 1 + len(row)
    if len(rows) > 1:
        yield b",".join(rows) + b"]"


def encode_marks(marks: dict[str, Mark]) -> bytes:
    """Watermark marks of input partitions (``"topic/partition"``) for a keyed partition."""
    return orjson.dumps({"v": WIRE_FORMAT, "marks": {source: mark.row() for source, mark in marks.items()}})


def marks_records(marks: dict[str, Mark], limit: int = RECORD_MAX) -> list[bytes]:
    """``encode_marks`` in records of at most ``limit`` bytes (a worker reading hundreds of input
    partitions): each source's mark stands alone, so a reader takes them in any grouping."""
    out: list[bytes] = []
    part: dict[str, Mark] = {}
    size = 32
    for source, mark in marks.items():
        n = len(source.encode()) * 2 + 64  # (escapes; four numbers and flags)
        if part and size + n > limit:
            out.append(encode_marks(part))
            part, size = {}, 32
        part[source] = mark
        size += n
    out.append(encode_marks(part))
    return out


def decode_forward(value: bytes) -> list[Forwarded] | dict[str, Mark]:
    """A keyed-topic record: forwarded events (a JSON array) or marks (an object). Raises
    ``FormatError`` for a version it does not know, ValueError/TypeError for anything malformed."""
    data = orjson.loads(value)
    if isinstance(data, dict):
        check_format(data.get("v", 0), "a marks record")
        return {str(source): Mark(bool(r[0]), int(r[1]), bool(r[2]), int(r[3])) for source, r in data["marks"].items()}
    if not isinstance(data, list):
        raise TypeError(f"a keyed-topic record is a JSON array or object, not {type(data).__name__}")
    if data and not isinstance(data[0], list):
        check_format(data[0], "a forwarded-events record")
        data = data[1:]
    make = Forwarded._make
    return [make(row) if len(row) == 8 else Forwarded(*row) for row in data]


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
    groups: dict[Group, dict[str, Any] | None] = field(default_factory=dict)  # closed windows to write (None: delete)
    corrected: int = 0  # closed windows published again after late data


@dataclass(slots=True)
class Pending:
    """What a partition's next flush writes: everything changed since the last one (a record
    cache, as Kafka Streams' ``cache.max.bytes.buffering``: each changed key once per flush)."""

    keys: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    groups: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)  # window -> entries changed
    gone: set[tuple[int, int]] = field(default_factory=set)  # windows past the allowed lateness
    seen: list[tuple[str, list[list[Any]]]] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    garbage: list[bytes] = field(default_factory=list)  # keys to tombstone after the marker
    #: records of a flush that never completed (an epoch beyond the marker): tombstoned before the
    #: next marker, which would otherwise stand above them and make them count on a later restore
    unfinished: list[bytes] = field(default_factory=list)
    watermark: bool = False

    def __bool__(self) -> bool:
        return bool(self.keys or self.deleted or self.groups or self.gone or self.seen or self.expired or self.garbage
                    or self.unfinished                    or self.watermark)


class KeyedStage:
    """State and event-time logic of one keyed stream (``account`` or ``actor``).

    States live per partition (``parts``), so a revoked partition drops all its
    keys at once. With ``compact`` (the shopper stream: many keys, no gauges) a
    state rests encoded as the bytes written to the changelog and is decoded
    only while a batch or the sweep works on it; the sweep then visits a slice
    of the keys each tick, every key about once per ``sweep_s`` seconds.
    """

    def __init__(
        self, name: str, spec: WindowSpec, families: list[Family], dedup_horizon_ms: int, idle_ms: int,
        compact: bool = False, sweep_s: int = 60, hot_keys: int | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.families = families
        self.dedup_horizon_ms = dedup_horizon_ms
        self.idle_ms = idle_ms
        self.compact = compact
        self.sweep_s = sweep_s
        #: keys kept decoded at most (the most recently active); the others rest in the local store
        #: (``COLD``, decoded on demand, visited by a sweep each ``sweep_s``) once ``load_pages`` reads
        #: the store and ``cold`` is set (the pipeline, with RocksDB). None: every key stays decoded
        self.hot_keys = hot_keys
        self.cold = False
        self.parts: dict[int, dict[str, Any]] = defaultdict(dict)
        self.clocks: dict[int, EventClock] = {}
        self.seen: dict[int, SeenIds] = {}
        self.windowed = [fam for fam in families if fam.merge is not None]
        #: the closed windows kept per partition: (size, start)
        self.closed: dict[int, set[tuple[int, int]]] = defaultdict(set)
        #: reads a closed-window record (the pipeline reads its table); None: kept in ``memory``
        self.load_closed: Callable[[int, int, int], bytes | None] | None = None
        self.memory: dict[Group, dict[str, Any]] = {}
        #: closed-window entries decoded lately (least recently used first), see ``_entry``
        self._recent: dict[tuple[Group, str], dict[str, Any]] = {}
        #: closed windows of format 1 read lately (whole windows: their keys' entries are taken from them)
        self._legacy_read: dict[Group, dict[str, Any]] = {}
        self.settle_s = SETTLE_S
        self._hot: dict[int, set[str]] = defaultdict(set)
        self._sweep: dict[int, list[str]] = {}
        # -- the changelog (``streams.pages``): what the next flush writes, per partition
        self.pending: dict[int, Pending] = defaultdict(Pending)
        #: the epoch of each partition's last flush (new flushes count on from it)
        self.epochs: dict[int, int] = {}
        #: the epoch of each partition's last complete flush (what its records are read against)
        self.markers: dict[int, int] = {}
        #: what is written of each key's document, per partition (``pages.Directory``)
        self.dirs: dict[int, dict[str, Directory]] = defaultdict(dict)
        #: what is written of the closed-window entries held decoded (in ``memory``, ``_recent`` or pending)
        self.entry_dirs: dict[tuple[Group, str], Directory] = {}
        #: reads the records of a document from the local store (``pages.doc_prefix``); None: in memory
        self.load_pages: Callable[[int, bytes], list[tuple[bytes, bytes]]] | None = None
        #: ids records of this run written in several parts: name -> parts
        self._seen_parts: dict[int, dict[str, int]] = defaultdict(dict)
        #: keys and closed windows restored from a record of format 1 (replaced by pages at their next flush)
        self._legacy: dict[int, set[str]] = defaultdict(set)
        self._legacy_groups: set[Group] = set()
        # recovery: the records adopted, resolved against the partition's marker by ``finish_restore``
        self._restoring: dict[int, dict[str, list[tuple[int, PageId, bytes, bytes | None]]]] = defaultdict(dict)
        self._restoring_seen: dict[int, list[tuple[str, int, list[list[Any]], bytes]]] = defaultdict(list)
        self._newest: dict[int, int] = {}
        # -- the cold tier: decoded keys by recent activity (oldest first), keys decoded only for a
        # look (the sweep, the API), and the gauge rows of the keys at rest (their series at rest)
        #: per changed key, the families whose slot changed since the last flush (None: any)
        self._slots: dict[tuple[int, str], set[str] | None] = {}
        self._recency: dict[tuple[int, str], None] = {}
        self._looked: set[tuple[int, str]] = set()
        #: (the rows as compressed JSON: under a KiB per key at rest instead of ~11 KiB of tuples; read at scrape time)
        self.rows: dict[int, dict[str, tuple[bytes, int]]] = defaultdict(dict)

    # -- state -------------------------------------------------------------
    def new_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for fam in self.families:
            state[fam.name] = fam.new_state()
        return state

    def dumps(self, state: dict[str, Any]) -> bytes:
        return versioned(orjson.dumps(state, option=orjson.OPT_NON_STR_KEYS))

    def _at_rest(self, state: dict[str, Any]) -> bytes:
        # orjson's output buffer is over-allocated (about 4 KiB); a state kept for
        # hours must hold only its own bytes, so copy it to an exact-size object
        return bytes(memoryview(self.dumps(state)))

    def loads(self, raw: bytes) -> dict[str, Any]:
        return self._decode(unversioned(raw, "a key's state record"))

    def _decode(self, data: dict[str, Any]) -> dict[str, Any]:
        if type(data) is not dict:
            raise TypeError("a key's state is not a JSON object")
        check_format(data.pop("~v", 0), "a key's state")
        state: dict[str, Any] = {}
        for fam in self.families:
            state[fam.name] = fam.decode_state(data[fam.name]) if fam.name in data else fam.new_state()
        return state

    @property
    def states(self) -> dict[str, dict[str, Any]]:
        """Every owned key's decoded state (for reads and tests; the account stage keeps them decoded)."""
        self._finish()
        out: dict[str, dict[str, Any]] = {}
        for p, part in list(self.parts.items()):
            for k, v in list(part.items()):
                out[k] = self.loads(v) if isinstance(v, bytes) else self.state(p, k) if v is COLD else v  # type: ignore[assignment]
        return out

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
        elif st is COLD:
            pages, directory = self._stored(partition, key)
            st = part[key] = self._decode(assemble(pages))
            self.dirs[partition][key] = directory
            self._looked.add((partition, key))
        return st  # type: ignore[no-any-return]

    def _changed(self, partition: int, key: str, families: list[str]) -> None:
        where = (partition, key)
        if where not in self._slots:
            self._slots[where] = set(families)
        elif (known := self._slots[where]) is not None:
            known.update(families)

    def touch(self, partition: int, key: str) -> None:
        """A key events changed: the most recently active (``hot_keys``)."""
        if not self.cold:
            return
        where = (partition, key)
        self._recency.pop(where, None)
        self._recency[where] = None
        self._looked.discard(where)

    def _evict(self) -> None:
        """After a flush: keys beyond ``hot_keys`` (least recently active first) and keys
        decoded only for a look rest in the store again, with their gauge rows kept."""
        if not self.cold or self.hot_keys is None:
            return
        at_rest = [w for w in self._looked]
        self._looked.clear()
        excess = len(self._recency) - self.hot_keys
        if excess > 0:
            for where in list(self._recency)[:excess]:
                del self._recency[where]
                at_rest.append(where)
        for partition, key in at_rest:
            self._rest(partition, key)

    def _rest(self, partition: int, key: str) -> None:
        """Let a decoded key's state go (its pages are in the store), keeping its gauge rows."""
        part = self.parts.get(partition)
        st = None if part is None else part.get(key)
        if part is None or st is None or st is COLD or isinstance(st, bytes):
            return
        if key in self.pending[partition].keys:  # not written yet: stays until the next flush
            self._looked.add((partition, key))
            return
        self._looked.discard((partition, key))
        clock = self.clocks.get(partition)
        kept = self.rows[partition].get(key)
        if kept is None or clock is None or clock.live:
            # (while a backlog is read the watermark is held and keys come and go by the thousand:
            # a key's rows of its last look stay until the partition is live, the sweep's turn)
            at = self.current_watermark(partition)
            rows = [sample for fam in self.families for sample in fam.samples(key, st[fam.name], at)]
            self.rows[partition][key] = (zlib.compress(orjson.dumps(rows), 1), len(self.dumps(st)))
        part[key] = COLD
        self.dirs[partition].pop(key, None)

    def encoded(self, partition: int, key: str) -> bytes | None:
        st = self.parts[partition].get(key)
        if st is COLD:
            st = self.state(partition, key)
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

    # -- the changelog ---------------------------------------------------------
    def absorb(self, out: StageOutput) -> None:
        """Take what a processed batch (or tick) changed into the record cache: the next
        ``flush`` writes it, each changed key and closed window once."""
        for partition, keys in out.dirty.items():
            if keys:
                pend = self.pending[partition]
                pend.keys |= keys
                pend.deleted -= keys
        for partition, keys in out.deleted.items():
            if keys:
                pend = self.pending[partition]
                pend.deleted |= keys
                pend.keys -= keys
        for partition in out.watermarks:
            self.pending[partition].watermark = True
        for partition, record in out.seen.items():
            self.pending[partition].seen.append(record)
        for partition, names in out.seen_expired.items():
            self.pending[partition].expired.extend(names)
        for (partition, size, start), entries in out.groups.items():
            pend = self.pending[partition]
            if entries is None:
                pend.groups.pop((size, start), None)
                pend.gone.add((size, start))
            else:
                pend.groups.setdefault((size, start), {}).update(entries)
        # (compact stages: the states a batch decoded stay decoded until the flush, which encodes
        # them once, however many batches touched them)

    def flush(self, partitions: Iterable[int] | None = None) -> dict[int, list[tuple[bytes, bytes | None]]]:
        """The changelog records of everything changed since the last flush, per partition, as
        one atomic flush each (``streams.pages``): the pages that changed and removal notes, the
        batches' ids, the partition's marker (epoch and watermark), then the tombstones of what
        they superseded. Every record is at most ``pages.RECORD_MAX`` bytes plus its key. Puts
        decoded states of compact stages back to rest, and keys beyond ``hot_keys`` to rest."""
        self._finish()
        writes: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for partition in list(self.pending) if partitions is None else list(partitions):
            pend = self.pending.get(partition)
            if not pend:
                continue
            del self.pending[partition]
            epoch = self.epochs.get(partition, 0) + 1
            before: list[tuple[bytes, bytes | None]] = []
            after: list[tuple[bytes, bytes | None]] = []
            part, dirs, legacy = self.parts.get(partition, {}), self.dirs[partition], self._legacy.get(partition, set())
            slots = self._slots
            for key in pend.keys:
                st = part.get(key)
                fams = slots.pop((partition, key), None)
                if st is None or st is COLD:
                    continue
                old = dirs.get(key, {})
                if self.compact and not isinstance(st, bytes):  # put to rest now: encoded once, for both
                    st = part[key] = self._at_rest(st)
                    self._hot[partition].discard(key)
                if fams and old and ((), "") not in old and not isinstance(st, bytes):
                    # split by family already: only the slots of the families that changed are encoded
                    new = dict(old)
                    for name in fams:
                        mine = {pid: v for pid, v in old.items() if pid[0][:1] == (name,)}
                        b, a, written = changes(key, epoch, mine, paginate(st[name], path=(name,)))
                        for pid in mine:
                            del new[pid]
                        new.update(written)
                        before += b
                        after += a
                    dirs[key] = new
                else:
                    if isinstance(st, bytes):
                        pages = paginate(orjson.loads(st) if len(st) > SPLIT_AT else None, st)
                    else:
                        pages = paginate(st)
                    b, a, dirs[key] = changes(key, epoch, old, pages)
                    before += b
                    after += a
                if key in legacy:  # its format-1 record goes once the pages are there
                    legacy.discard(key)
                    after.append((key.encode(), None))
            for key in pend.deleted:
                slots.pop((partition, key), None)
                b, a, _ = changes(key, epoch, dirs.pop(key, {}), None)
                before += b
                after += a
                if key in legacy:
                    legacy.discard(key)
                    after.append((key.encode(), None))
            for (size, start), entries in pend.groups.items():
                group = (partition, size, start)
                for key, entry in entries.items():
                    doc = ENTRY_DOC.format(partition=partition, size=size, start=start, key=key)
                    kept = self.entry_dirs.pop((group, key), None)
                    b, a, new = changes(doc, epoch, self._stored(partition, doc)[1] if kept is None else kept, paginate(entry))
                    before += b
                    after += a
                    if self.load_pages is None or (group, key) in self._recent:
                        self.entry_dirs[(group, key)] = new
            for size, start in pend.gone:  # every entry of the window, and its record of format 1
                group = (partition, size, start)
                window = CLOSED_KEY.format(partition=partition, size=size, start=start)
                docs: dict[str, Directory] = {}
                for (g, key) in [w for w in self.entry_dirs if w[0] == group]:
                    docs[ENTRY_DOC.format(partition=partition, size=size, start=start, key=key)] = self.entry_dirs.pop((g, key))
                if self.load_pages is not None:
                    versions: dict[str, list[tuple[int, PageId, bytes, bytes | None]]] = defaultdict(list)
                    for raw, value in self.load_pages(partition, PAGE + orjson.dumps([window + "|"])[:-2]):
                        doc, e, pid = parse_key(raw)
                        versions[doc].append((e, pid, raw, decode_page(value)))
                    for doc, found in versions.items():
                        _, directory, garbage = resolve(found, self.markers.get(partition, 0))
                        docs.setdefault(doc, directory)
                        self._discard(pend, garbage, self.markers.get(partition, 0))
                for doc, directory in docs.items():
                    b, a, _ = changes(doc, epoch, directory, None)
                    before += b
                    after += a
                self._legacy_groups.discard(group)
                after.append((window.encode(), None))
            parts = self._seen_parts[partition]
            for name, rows in pend.seen:
                chunks = seen_chunks(rows)
                if len(chunks) > 1:
                    parts[name] = len(chunks)
                for i, chunk in enumerate(chunks):
                    record = name if i == 0 else f"{name}.{i}"
                    before.append((SEEN_KEY.format(partition=partition, name=record).encode(), encode_seen(chunk, epoch)))
            for name in pend.expired:
                for i in range(parts.pop(name, 1)):
                    record = name if i == 0 else f"{name}.{i}"
                    after.append((SEEN_KEY.format(partition=partition, name=record).encode(), None))
            clock = self.clock(partition)
            marker = versioned(orjson.dumps({"e": epoch, "wm": clock.persisted}))
            writes[partition] = [*((key, None) for key in pend.unfinished), *before,
                                 (FLUSH_KEY.format(partition=partition).encode(), marker), *after, *((key, None) for key in pend.garbage)]
            self.epochs[partition] = self.markers[partition] = epoch
        self.cool()
        self._evict()
        return writes

    def changelog_records(self, out: StageOutput) -> dict[int, list[tuple[bytes, bytes | None]]]:
        """``absorb`` a batch and ``flush`` at once (a flush per batch: what tests and tools use)."""
        self.absorb(out)
        return self.flush()

    @staticmethod
    def _discard(pend: Pending, garbage: list[bytes], marker: int) -> None:
        """Tombstone what ``pages.resolve`` found no use for: superseded versions after the next
        marker, records of an unfinished flush (an epoch beyond ``marker``) before it."""
        for key in garbage:
            (pend.unfinished if parse_key(key)[1] > marker else pend.garbage).append(key)

    def _stored(self, partition: int, doc: str) -> tuple[dict[PageId, bytes], Directory]:
        """A document's pages as the local store holds them (garbage found is tombstoned next)."""
        if self.load_pages is None:
            return {}, {}
        versions = []
        for key, value in self.load_pages(partition, doc_prefix(doc)):
            _, epoch, pid = parse_key(key)
            versions.append((epoch, pid, key, decode_page(value)))
        pages, directory, garbage = resolve(versions, self.markers.get(partition, 0))
        self._discard(self.pending[partition], garbage, self.markers.get(partition, 0))
        return pages, directory

    def adopt(self, key: str, value: bytes | None, mine: set[int], partitions: int) -> int:
        """Take one recovered changelog record (a page, a flush marker, an ids record, or a
        record of format 1: a key, a watermark, a closed window) if its partition is one of
        ``mine``; 1 if it was a key's state of format 1. Pages are resolved against their
        partition's marker once every record is in (``finish_restore``, also called by any
        read). Raises on a record it cannot read (``FormatError`` for a version it does not know)."""
        if key.startswith(_PAGE):
            raw = key.encode()
            doc, epoch, pid = parse_key(raw)
            partition = self._doc_partition(doc, partitions)
            if partition in mine and value is not None:
                self._restoring[partition].setdefault(doc, []).append((epoch, pid, raw, decode_page(value)))
                self._newest[partition] = max(self._newest.get(partition, 0), epoch)
            return 0
        if key.startswith(_FLUSH):
            partition = int(key[len(_FLUSH):])
            if partition in mine and value is not None:
                data = unversioned(value, "a flush marker")
                self.markers[partition] = max(self.markers.get(partition, 0), int(data["e"]))
                self.restore_watermark(partition, int(data["wm"]))
            return 0
        if key.startswith(_WATERMARK):
            partition = int(key[len(_WATERMARK):])
            if partition in mine and value is not None:
                self.restore_watermark(partition, int(value))
            return 0
        if key.startswith(_CLOSED):
            part, size, start = key[len(_CLOSED):].split("|")
            if int(part) in mine and value is not None:
                group = (int(part), int(size), int(start))
                if self.load_pages is None:  # kept in memory: the record itself
                    self.memory.setdefault(group, unversioned(value, "a closed-window record"))
                else:
                    unversioned(value, "a closed-window record")  # readable, or recovery stops here
                self._legacy_groups.add(group)
                self.restore_closed(*group)
            return 0
        if key.startswith(_SEEN):
            part, record = key[len(_SEEN):].split("|", 1)
            if int(part) in mine and value is not None:
                rows, flushed = decode_seen_flush(value)
                if flushed is None:
                    self.restore_seen(int(part), record, rows)
                else:
                    self._restoring_seen[int(part)].append((record, flushed, rows, key.encode()))
            return 0
        partition = partition_for(key, partitions)
        if partition not in mine:
            return 0
        if value is None:
            self.parts[partition].pop(key, None)
            return 0
        self.restore(partition, key, value)
        return 1

    def _doc_partition(self, doc: str, partitions: int) -> int:
        if doc.startswith(_CLOSED):
            return int(doc[len(_CLOSED):].split("|", 1)[0])
        return partition_for(doc, partitions)

    def finish_restore(self) -> int:
        """Resolve the adopted pages against their partition's marker (``pages.resolve``):
        the documents of complete flushes become the keys' states and closed windows, the
        rest is tombstoned by the next flush. Returns how many keys were restored from pages."""
        n = 0
        for partition, docs in self._restoring.items():
            marker = self.markers.get(partition, 0)
            pend = self.pending[partition]
            for doc, versions in docs.items():
                pages, directory, garbage = resolve(versions, marker)
                self._discard(pend, garbage, marker)
                if not pages:
                    continue
                if doc.startswith(_CLOSED):
                    _, size, start, owner = doc[len(_CLOSED):].split("|", 3)
                    group = (partition, int(size), int(start))
                    self.restore_closed(*group)
                    if self.load_pages is None:
                        self.memory.setdefault(group, {})[owner] = assemble(pages)
                        self.entry_dirs[(group, owner)] = directory
                    continue
                state = self._decode(assemble(pages))
                self.parts[partition][doc] = self._at_rest(state) if self.compact else state
                self.dirs[partition][doc] = directory
                if self.cold and self.hot_keys is not None:  # at rest from the start: decoded when needed
                    self._rest(partition, doc)
                if doc in self._legacy[partition]:
                    self._legacy[partition].discard(doc)
                    pend.garbage.append(doc.encode())
                n += 1
        for partition, records in self._restoring_seen.items():
            marker = self.markers.get(partition, 0)
            for name, epoch, rows, key in records:
                if epoch > marker:  # the ids of a flush that never completed: their events come again
                    self.pending[partition].unfinished.append(key)
                else:
                    self.restore_seen(partition, name, rows)
                self._newest[partition] = max(self._newest.get(partition, 0), epoch)
        for partition in set(self._newest) | set(self.markers):
            self.epochs[partition] = max(self.epochs.get(partition, 0), self.markers.get(partition, 0),
                                         self._newest.get(partition, 0))
        self._restoring.clear()
        self._restoring_seen.clear()
        self._newest.clear()
        self._evict()  # restored keys rest in the store until events or a look need them
        return n

    def _finish(self) -> None:
        if self._restoring or self._restoring_seen:
            self.finish_restore()

    def check_record(self, key: str, value: bytes | None) -> None:
        """Raise if a changelog record could not be adopted (read during recovery, with its offset)."""
        if key.startswith(_PAGE):
            parse_key(key.encode())
            if value is not None:
                decode_page(value)
            return
        if value is None:
            return
        if key.startswith(_FLUSH):
            data = unversioned(value, "a flush marker")
            int(data["e"]), int(data["wm"])
        elif key.startswith(_WATERMARK):
            int(value)
        elif key.startswith(_CLOSED):
            unversioned(value, "a closed-window record")
        elif key.startswith(_SEEN):
            decode_seen(value)
        else:
            self.loads(split_ids(value)[0])

    def restore(self, partition: int, key: str, raw: bytes) -> None:
        """Adopt a key's record of format 1 (with the ids its last batch applied)."""
        raw, ids = split_ids(raw, key)
        if ids:
            self.restore_seen(partition, KEY_IDS + key, ids)
        state = self.loads(raw)  # readable, or recovery stops here
        self.parts[partition][key] = self._at_rest(state) if self.compact else state
        if self.cold and self.hot_keys is not None:
            self._looked.add((partition, key))
        self._legacy[partition].add(key)
        self.pending[partition].keys.add(key)  # written in pages by the next flush
        self._slots[(partition, key)] = None

    def restore_watermark(self, partition: int, watermark: int) -> None:
        """Never start a partition's watermark below the one its windows closed at."""
        clock = self.clock(partition)
        clock.current = max(clock.current, watermark)
        clock.persisted = max(clock.persisted, watermark)

    def restore_closed(self, partition: int, size: int, start: int) -> None:
        """A closed window recovered from the changelog (its record stays in the table)."""
        self.closed[partition].add((size, start))

    def seen_ids(self, partition: int) -> SeenIds:
        ids = self.seen.get(partition)
        if ids is None:
            ids = self.seen[partition] = SeenIds(epoch=time.time_ns())
        return ids

    def restore_seen(self, partition: int, name: str, rows: list[list[Any]]) -> None:
        self.seen_ids(partition).restore(name, rows)

    def clock(self, partition: int) -> EventClock:
        clock = self.clocks.get(partition)
        if clock is None:
            clock = self.clocks[partition] = EventClock()
        return clock

    def mark(self, partition: int, marks: dict[str, Mark]) -> None:
        """Marks of input partitions that arrived on (or were handed to) a keyed partition."""
        clock = self.clock(partition)
        for source, mark in marks.items():
            clock.mark(source, mark)

    def assign(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.clock(p)

    def revoke(self, partitions: Iterable[int]) -> None:
        """Forget keys of partitions this worker lost (their series go with them)."""
        for p in partitions:
            self.parts.pop(p, None)
            self.clocks.pop(p, None)
            self.closed.pop(p, None)
            self.seen.pop(p, None)
            for where in [w for w in self._recent if w[0][0] == p]:
                del self._recent[where]
            for where in [w for w in self.entry_dirs if w[0][0] == p]:
                del self.entry_dirs[where]
            for group in [g for g in self._legacy_read if g[0] == p]:
                del self._legacy_read[group]
            for group in [g for g in self.memory if g[0] == p]:
                del self.memory[group]
            self._legacy_groups = {g for g in self._legacy_groups if g[0] != p}
            self._hot.pop(p, None)
            self._sweep.pop(p, None)
            # (the pipeline flushes a partition before it lets it go)
            self._recency = {w: None for w in self._recency if w[0] != p}
            self._slots = {w: v for w, v in self._slots.items() if w[0] != p}
            self._looked = {w for w in self._looked if w[0] != p}
            for table in (self.pending, self.epochs, self.markers, self.dirs, self._seen_parts, self._legacy, self.rows):
                table.pop(p, None)  # type: ignore[attr-defined]

    def size_bytes(self) -> int:
        """Encoded size of all owned state (what the changelog holds for it)."""
        total = 0
        for partition, part in self.parts.items():
            rows = self.rows.get(partition, {})
            for key, st in part.items():
                total += len(st) if isinstance(st, bytes) else rows[key][1] if st is COLD else len(self.dumps(st))
        return total

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts.values())

    # -- events ------------------------------------------------------------
    def process(self, partition: int, items: list[Forwarded], out: StageOutput) -> None:
        """Apply one partition's forwarded events: dedup, lateness, then families."""
        self._finish()
        clock = self.clock(partition)
        seen = self.seen_ids(partition)
        per_key: dict[str, list[tuple[str, Event]]] = defaultdict(list)
        # live (every input read to its end): events move the watermark, kept in step per event
        current, live = clock.current, clock.live
        allowed, add, models = self.spec.lateness_ms, seen.add, STAGE_MODELS
        low = current - allowed
        accepted: Counter[str] = Counter()
        now = 0
        for item in items:
            ev = item.event  # validated already when it comes straight from this worker's ingest
            try:
                if type(ev) is dict:  # from Kafka: written by another worker (or another version, or by hand)
                    event: Event = models[item.topic].__pydantic_validator__.validate_python(ev)
                    if type(item.key) is not str or type(item.arrived) is not int:
                        raise TypeError("key or arrival of the wrong type")
                elif isinstance(ev, Event):
                    event = ev
                else:
                    raise TypeError(f"event is a {type(ev).__name__}, not an object")
            except Exception as exc:  # a poison record: dead-lettered, the rest of the batch goes on
                out.rejected.append(self._bad(item, exc))
                continue
            ts = event.ts
            uid = f"{item.key}\x1f{event.event_id}"  # ids are unique per key (an account, a shopper)
            arrived = item.arrived
            if not arrived:
                arrived = now = now or int(time.time() * 1000)
            if not add(uid, arrived):
                if item.primary:
                    out.rejected.append(self._reject(item, "duplicate", f"event_id seen within {self.spec.label(self.dedup_horizon_ms)} of arrival"))
                continue
            # older than the allowed lateness: an input event's windows are gone. A record a family derived
            # (a credit, a checkout's outcome) is a decision due earlier and taken late (the watermark jumped a
            # day ahead after an outage): it is applied; windows past their lateness ignore it, totals count it
            if ts < low and (item.primary or item.topic in INPUT_TOPICS):
                seen.forget_last(uid)  # a late event is not "seen": a retry stays late
                if item.primary or item.offset < 0:
                    behind = (current - ts) / 1000
                    out.rejected.append(self._reject(
                        item, "late", f"{behind:.0f}s behind the watermark, allowed lateness {self.spec.label(allowed)}"))
                continue
            if live and ts > current:
                current = ts
                low = current - allowed
            if item.primary:
                accepted[item.topic] += 1
            per_key[item.key].append((item.topic, event))
        out.accepted.update(accepted)
        if current > clock.current:
            clock.current = current
        at, dirty, results = clock.current, out.dirty[partition], out.results
        for key, evs in per_key.items():
            state = self.state(partition, key, create=True)
            assert state is not None
            self.touch(partition, key)
            touched: list[str] = []
            for fam in self.families:
                topics = fam.topics
                mine = [e for t, e in evs if t in topics]
                if mine:
                    touched.append(fam.name)
                    results.extend(fam.apply(key, state[fam.name], mine, at))
                    if fam.merge is not None:
                        self._correct(partition, key, fam, state, out)
                        # windows the watermark has passed close now, not only on the next tick:
                        # during a backlog the key's record stays small (it is rewritten each batch)
                        win = fam.windowed(state[fam.name])
                        if win is not None and win["w"]:
                            self._publish_closed(partition, key, fam, state, at, out)
                            windows.prune(win, at, self.spec)
            dirty.add(key)
            self._changed(partition, key, touched)
        # one ids record per partition and batch: a batch whose events come in several runs
        # (marks between them) writes the ids of every run, not only of the last
        prior = out.seen.get(partition)
        record = seen.flush(into=prior[0] if prior is not None else None)
        if record is not None:
            if prior is None:
                out.seen[partition] = record
            elif record[0] == prior[0]:
                prior[1].extend(record[1])  # in place: a batch of many runs stays linear
            else:  # (the earlier runs' record is gone from memory: one record with all of them)
                out.seen[partition] = (record[0], prior[1] + record[1])

    def _bad(self, item: Forwarded, exc: Exception) -> Rejection:
        """A forwarded event that does not validate here: dead-lettered as ``bad_internal``."""
        source = item.source if type(item.source) is str else f"socialpulse.by-{self.name}"
        partition = item.partition if type(item.partition) is int else -1
        offset = item.offset if type(item.offset) is int else -1
        detail = f"forwarded event rejected by the {self.name} stage: {type(exc).__name__}: {str(exc)[:300]}"
        try:
            value = orjson.dumps(item.event.model_dump(mode="json") if isinstance(item.event, Event) else item.event)
        except TypeError:
            value = repr(item.event).encode()
        event_id = item.event.get("event_id") if isinstance(item.event, dict) else None
        return Rejection(Raw(source, partition, offset, value), "bad_internal", detail, event_id if isinstance(event_id, str) else None)

    @staticmethod
    def _reject(item: Forwarded, reason: str, detail: str) -> Rejection:
        ev = item.event
        data = ev.model_dump(mode="json") if isinstance(ev, Event) else ev
        raw = Raw(item.source, item.partition, item.offset, orjson.dumps(data))
        return Rejection(raw, reason, detail, data.get("event_id"))

    # -- closed windows ------------------------------------------------------
    def _entry(self, out: StageOutput, group: Group, key: str) -> dict[str, Any]:
        """One key's entry of a closed window ({family: [revision, aggregate]}), read once per
        batch and written back, on its own, by the next flush."""
        touched = out.groups.get(group)
        if touched is not None and key in touched:
            return touched[key]  # type: ignore[no-any-return]
        partition = group[0]
        entry = self.pending[partition].groups.get(group[1:], {}).get(key)  # changed since the last flush
        if entry is None:
            if self.load_pages is None:
                entry = self.memory.setdefault(group, {}).setdefault(key, {})
            else:
                # the entries of the last batches stay decoded: corrections (replies to conversations
                # whose window closed, late sources) come in runs
                entry = self._recent.pop((group, key), None)
                if entry is None:
                    entry = self._load_entry(group, key)
        if self.load_pages is not None:
            self._recent[(group, key)] = entry  # the same dict the batch changes and writes: never stale
            while len(self._recent) > RECENT_ENTRIES:
                gone = next(iter(self._recent))
                del self._recent[gone]
                if gone[1] not in self.pending[gone[0][0]].groups.get(gone[0][1:], {}):
                    self.entry_dirs.pop(gone, None)
        if touched is None:
            touched = out.groups[group] = {}
        touched[key] = entry
        self.closed[partition].add(group[1:])  # type: ignore[arg-type]
        return entry

    def _load_entry(self, group: Group, key: str) -> dict[str, Any]:
        """A key's entry of a closed window from the local store: its pages, or its part of the
        window's record of format 1."""
        partition, size, start = group
        pages, directory = self._stored(partition, ENTRY_DOC.format(partition=partition, size=size, start=start, key=key))
        self.entry_dirs[(group, key)] = directory
        if pages:
            return assemble(pages)  # type: ignore[no-any-return]
        if group not in self._legacy_groups or self.load_closed is None:
            return {}
        legacy = self._legacy_read.get(group)
        if legacy is None:
            raw = self.load_closed(*group)
            legacy = {} if raw is None else unversioned(raw, "a closed-window record")
            self._legacy_read[group] = legacy
            while len(self._legacy_read) > 8:
                del self._legacy_read[next(iter(self._legacy_read))]
        return orjson.loads(orjson.dumps(legacy.get(key, {})))  # type: ignore[no-any-return]

    def closed_window(self, group: Group) -> dict[str, Any]:
        """Every key's entry of a closed window (for reads and tests)."""
        if self.load_pages is None:
            return dict(self.memory.get(group, {}))
        partition, size, start = group
        window = CLOSED_KEY.format(partition=partition, size=size, start=start)
        keys = {parse_key(raw)[0][len(window) + 1:] for raw, _ in self.load_pages(partition, PAGE + orjson.dumps([window + "|"])[:-2])}
        keys |= {k for (g, k) in self._recent if g == group}
        if group in self._legacy_groups and self.load_closed is not None and (raw := self.load_closed(*group)) is not None:
            keys |= set(unversioned(raw, "a closed-window record"))
        look = StageOutput()
        out = {key: self._entry(look, group, key) for key in sorted(keys)}
        return {key: entry for key, entry in out.items() if entry}

    def _publish_closed(self, partition: int, key: str, fam: Family, state: dict[str, Any], at: int, out: StageOutput) -> bool:
        """Publish a family's windows that closed at ``at`` (revision 0) and keep them for corrections."""
        win = fam.windowed(state[fam.name])
        assert win is not None
        closed = windows.close_due(win, at, self.spec)
        for cw in closed:
            out.results.extend(fam.results(key, cw, state[fam.name], 0))
            self._entry(out, (partition, cw.size, cw.start), key)[fam.name] = [0, cw.agg]
        return bool(closed)

    def _correct(self, partition: int, key: str, fam: Family, state: dict[str, Any], out: StageOutput) -> None:
        """Merge late parts into their published windows; publish each again, next revision."""
        win, merge = fam.windowed(state[fam.name]), fam.merge
        assert win is not None and merge is not None
        for size, start, part in windows.take_late(win):
            kept = self._entry(out, (partition, size, start), key)
            entry = kept.get(fam.name)
            label = self.spec.label(size)
            before: set[str] = set()
            if entry is None:  # the window had nothing of this key when it closed: first publication
                entry = kept[fam.name] = [0, part]
            else:
                before = {r.key for r in fam.results(key, ClosedWindow(size, label, start, start + size, entry[1]),
                                                     state[fam.name], entry[0]) if isinstance(r, Result)}
                entry[0] += 1
                merge(entry[1], part)
                out.corrected += 1
            cw = ClosedWindow(size, label, start, start + size, entry[1])
            now = fam.results(key, cw, state[fam.name], entry[0])
            out.results.extend(now)
            # a value the correction took away entirely (e.g. a breach withdrawn): a tombstone under its key
            gone = before - {r.key for r in now if isinstance(r, Result)}
            out.results.extend(Record(RESULTS, k, None) for k in sorted(gone))

    # -- time --------------------------------------------------------------
    def tick(self, out: StageOutput, expected: Iterable[str] | None = None, budget: int | None = None) -> None:
        """Advance watermarks, close due windows, expire state. Call about once a second.

        ``expected`` names every input partition that feeds this stage (``topic/partition``):
        the watermark waits for a mark from each (``windows.hold``). With ``budget``, keys
        are closed only until that many results are out; the rest wait for the next tick
        (a watermark that jumps a day ahead must not publish a day of windows at once).
        """
        self._finish()
        sources = None if expected is None else list(expected)
        for partition, clock in list(self.clocks.items()):
            at = clock.advance(sources)
            if at > clock.persisted:
                out.watermarks[partition] = clock.persisted = at
            seen = self.seen_ids(partition)
            expired = [name for name in seen.expire(seen.clock, self.dedup_horizon_ms, self.settle_s)
                       if not name.startswith(KEY_IDS)]  # those live in the key's record
            if expired:
                out.seen_expired[partition] = expired
            kept = self.closed.get(partition)
            # published windows past the allowed lateness are dropped after the families had their turn:
            # a decision due before the watermark jumped past a window's lateness (a breach) still corrects it
            gone = [(size, start) for size, start in kept if start + size <= at - self.spec.lateness_ms] if kept else []
            for key in self._due_keys(partition):
                if budget is not None and len(out.results) >= budget:
                    break
                state = self.state(partition, key)
                if state is None:
                    continue
                changed: list[str] = []
                for fam in self.families:
                    outputs, fam_changed = fam.close(key, state[fam.name], at)
                    out.results.extend(outputs)
                    if fam.merge is not None:
                        fam_changed = self._publish_closed(partition, key, fam, state, at, out) or fam_changed
                        self._correct(partition, key, fam, state, out)  # e.g. a breach of a spell that came late
                    if fam_changed:
                        changed.append(fam.name)
                # (a key whose events all went to published windows or gone buckets is empty without
                # having changed here: it goes too, so a key's presence never depends on arrival order)
                if all(fam.is_empty(state[fam.name]) for fam in self.families):
                    del self.parts[partition][key]
                    self._hot[partition].discard(key)
                    self._recency.pop((partition, key), None)
                    self._looked.discard((partition, key))
                    self.rows[partition].pop(key, None)
                    out.deleted[partition].add(key)
                    out.dirty[partition].discard(key)
                elif changed:
                    out.dirty[partition].add(key)
                    self._changed(partition, key, changed)
            if kept:
                for size, start in gone:
                    kept.discard((size, start))
                    group = (partition, size, start)
                    out.groups[group] = None
                    for where in [w for w in self._recent if w[0] == group]:
                        del self._recent[where]
                    self.memory.pop(group, None)
                    self._legacy_read.pop(group, None)
                    self.pending[partition].groups.pop((size, start), None)

    def _due_keys(self, partition: int) -> list[str]:
        """All keys each tick; in compact mode a rotating slice (each key once per sweep)."""
        part = self.parts.get(partition)
        if not part:
            return []
        if not self.compact:
            if not self.cold:
                return list(part)
            # every decoded key each tick; the keys at rest by a rotating slice (each once per sweep)
            hot = [key for key, st in part.items() if st is not COLD]
            if len(hot) == len(part):
                return hot
            queue = self._sweep.get(partition)
            if not queue:
                queue = self._sweep[partition] = [key for key, st in part.items() if st is COLD]
            n = max(1, -(-(len(part) - len(hot)) // self.sweep_s))
            chunk, self._sweep[partition] = queue[:n], queue[n:]
            return hot + [key for key in chunk if part.get(key) is COLD]
        queue = self._sweep.get(partition)
        if not queue:
            queue = self._sweep[partition] = list(part)
        n = max(1, -(-len(part) // self.sweep_s))
        chunk, self._sweep[partition] = queue[:n], queue[n:]
        return chunk

    # -- reads -------------------------------------------------------------
    def _find(self, key: str) -> tuple[int, dict[str, Any]] | None:
        self._finish()
        for partition, part in self.parts.items():
            if key in part:
                st = self.state(partition, key)
                assert st is not None
                return partition, st
        return None

    def current_watermark(self, partition: int) -> int:
        clock = self.clocks.get(partition)
        return clock.current if clock is not None else 0

    def samples(self) -> Iterator[Sample]:
        self._finish()
        for partition, part in list(self.parts.items()):
            at = self.current_watermark(partition)
            rows = self.rows.get(partition, {})
            for key, state in list(part.items()):
                if isinstance(state, bytes):
                    continue  # compact stages export no per-key series
                if state is COLD:  # at rest: its rows as of its last look (the sweep's, at most sweep_s old)
                    for name, labels, value in orjson.loads(zlib.decompress(rows[key][0])):
                        yield name, tuple(labels), value
                    continue
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
