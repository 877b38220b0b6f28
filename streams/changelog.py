"""Writing many keys of a changelog-backed Faust table at once.

``table[key] = value`` does, per key: look up the current event for the
partition, check the source topic, build the changelog message through the
channel's serializers, run the table's sensors, encode key and value for the
store and put them to RocksDB on their own. A stage writes every key a batch
changed, so that bookkeeping was most of the cost of a write (py-spy: ~14% of
the worker's time in the 100-events-per-message benchmark).

``write_many`` does the same work once per batch and partition: one changelog
record per key, sent with the same callback Faust uses (which keeps the
changelog offset in the store, so a restarted worker reads only what is newer),
and one RocksDB write batch. Keys and values are bytes (the tables are
``key_type=bytes, value_type=bytes``), so there is nothing to serialize.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import faust
from faust.stores import memory, rocksdb
from faust.types.tuples import FutureMessage, PendingMessage

__all__ = [
    "write_many", "read_one", "read_prefix", "unacknowledged", "write_stall", "send_failures", "delivered", "distrust_unclean", "mark_clean", "CLEAN_STOP",
    "CheckedTable", "ChangelogRecordError",
]

log = logging.getLogger("socialpulse")

#: changelog records sent and not yet acknowledged by the broker (all tables of this process)
_pending = 0
#: while some are: when the first of them was sent or the broker last answered one, the later
_waiting_since = 0.0
#: state or forwarded records the broker refused (all tables and keyed topics of this process)
_failed = 0


def unacknowledged() -> int:
    """How many changelog records this process sent that the broker has not acknowledged:
    while any are, the local store holds state Kafka may never get (``streams/cli.py``)."""
    return _pending


def write_stall(now: float | None = None) -> float:
    """Seconds changelog records have waited for the broker without any answered meanwhile
    (0 when none waits). It grows only while the cluster takes no write at all: fewer in-sync
    replicas than ``min.insync.replicas``, no controller quorum (``streams/health.py``)."""
    if not _pending:
        return 0.0
    return (time.monotonic() if now is None else now) - _waiting_since


def send_failures() -> int:
    """How many changelog or forwarded records the broker refused in this process: their
    inputs must be read again, so no commit may cover them (``streams/transport.py``)."""
    return _failed


def _failure(fut: Any, what: str) -> bool:
    global _failed
    if not fut.done():  # (a callback is called when the send is settled; nothing to judge otherwise)
        return False
    exc = None if fut.cancelled() else fut.exception()
    if not fut.cancelled() and exc is None:
        return False
    _failed += 1
    log.critical("a %s record was not written (%r): this worker stops before committing its input", what, exc)
    return True


def delivered(what: str) -> Callable[[Any], None]:
    """A send callback for records exactly-once depends on (forwarded events, marks)."""

    def callback(fut: Any) -> None:
        _failure(fut, what)

    return callback


def _acknowledged(table: Any) -> tuple[Any, Any]:
    """Send callbacks: one for every record (counts it acknowledged, notices a refusal), and
    one for the last record of a partition's write, which also has Faust keep the changelog
    offset in the store (records of a partition are acknowledged in order: one offset kept per
    write instead of a RocksDB write per record)."""
    on_sent = table._on_changelog_sent

    def counted(fut: Any) -> None:
        global _pending, _waiting_since
        _pending -= 1
        _waiting_since = time.monotonic()
        _failure(fut, "changelog")

    def last(fut: Any) -> None:
        global _pending, _waiting_since
        _pending -= 1
        _waiting_since = time.monotonic()
        if not _failure(fut, "changelog"):
            on_sent(fut)

    return counted, last


def write_many(table: Any, partition: int, changes: Iterable[tuple[bytes, bytes | None]]) -> int:
    """Set (value bytes) or delete (value None) keys of one partition of ``table``;
    each key is written once, as Faust's own ``table[key] = value`` would. Returns
    how many keys were written."""
    global _pending, _waiting_since
    app, store, channel = table.app, table.data, table.changelog_topic
    send, generation = app.producer.send_soon, app.consumer_generation_id
    counted, last = _acknowledged(table)
    changes = list(changes)
    if type(store) is rocksdb.Store and store.rocksdb_options.use_rocksdict:
        batch = rocksdb.rocksdict.WriteBatch(raw_mode=True)
    elif type(store) is memory.Store:
        batch = None
    else:  # settings allow rocksdb:// (with rocksdict, faust-streaming's default) and memory:// only
        raise TypeError(f"write_many: unsupported table store {type(store).__name__}")
    n = 0
    end = len(changes) - 1
    for key, value in changes:
        send(FutureMessage(PendingMessage(
            channel, key, value, partition, None, {}, "raw", "raw", last if n == end else counted, None, None, generation,
        )))
        if batch is not None:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
            store._key_index[key] = partition
        elif value is None:
            store.data.pop(key, None)
        else:
            store.data[key] = value
        n += 1
    if n and not _pending:
        _waiting_since = time.monotonic()
    _pending += n
    if batch is not None and n:
        store._db_for_partition(partition).write(batch)
    return n


def read_prefix(table: Any, partition: int, prefix: bytes) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of one partition of ``table``'s store whose key starts with ``prefix``
    (a document's pages, ``streams.pages``). RocksDB seeks; the memory store is scanned."""
    store = table.data
    if type(store) is memory.Store:
        return [(k, bytes(v)) for k, v in list(store.data.items()) if isinstance(k, bytes) and k.startswith(prefix)]
    it = store._db_for_partition(partition).iter()
    it.seek(prefix)
    out = []
    while it.valid():
        key = bytes(it.key())
        if not key.startswith(prefix):
            break
        out.append((key, bytes(it.value())))
        it.next()
    return out


def read_one(table: Any, partition: int, key: bytes) -> bytes | None:
    """One key's value in one partition of ``table``'s store (None when absent)."""
    store = table.data
    value = store.data.get(key) if type(store) is memory.Store else store._db_for_partition(partition).get(key)
    return None if value is None else bytes(value)


#: written into the table directory when a worker stops with every changelog record acknowledged
CLEAN_STOP = ".clean-stop"


def distrust_unclean(tabledir: Path) -> bool:
    """At start-up: keep the local table stores only if the last run stopped cleanly.

    The stores are written as a batch is processed, before the broker has acknowledged its
    changelog records. A worker killed in between leaves local state Kafka never got, while
    the input offsets of that batch were not committed: the batch comes again and would be
    counted on top of it, and Faust's recovery (from the offset the store last saw
    acknowledged) can mix it with older records. The changelog is the truth, so after an
    unclean stop the stores are removed and rebuilt from it. Returns True if they were."""
    mark = tabledir / CLEAN_STOP
    if mark.exists():
        mark.unlink()
        return False
    if tabledir.is_dir() and any(tabledir.iterdir()):
        shutil.rmtree(tabledir)
        return True
    return False


def mark_clean(tabledir: Path) -> bool:
    """At the end of a run: mark the stores trustworthy if the broker acknowledged everything."""
    if _pending or not tabledir.is_dir():
        return False
    (tabledir / CLEAN_STOP).touch()
    return True


def _hard_exit() -> None:
    log.critical("could not stop cleanly within 10 s: exiting")
    logging.shutdown()
    os._exit(1)


class ChangelogRecordError(RuntimeError):
    """A changelog record recovery cannot read: recovery stops (state is never dropped silently)."""


class CheckedTable(faust.Table):
    """A table whose recovery reads every changelog record through ``check`` first.

    ``check(key, value)`` raises for a record the stage could not adopt (corrupt, or written
    in a format version this worker does not know); recovery then stops with the topic,
    partition and offset of that record and the way out, instead of dropping the state."""

    check: Callable[[str, bytes | None], None] | None = None

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        batch = list(batch)
        check = self.check
        if check is not None:
            for event in batch:
                msg = event.message
                key = msg.key.decode("utf-8", "replace") if isinstance(msg.key, bytes) else str(msg.key)
                try:
                    check(key, msg.value)
                except Exception as exc:
                    text = (
                        f"changelog record {msg.topic}[{msg.partition}] offset {msg.offset} (key {key!r}) cannot be "
                        f"read: {type(exc).__name__}: {exc}. Recovery stops so that no state is dropped. Way out: run "
                        "the socialpulse version that wrote it, or rebuild the state from the input topics "
                        "(docs/operations.md, 'A state record cannot be read')"
                    )
                    log.critical("%s", text)
                    error = ChangelogRecordError(text)
                    # Faust retries a failed recovery forever: stop the worker instead
                    loop = asyncio.get_event_loop()
                    loop.create_task(self.app.crash(error))
                    loop.call_later(10, _hard_exit)
                    raise error from exc
        super().apply_changelog_batch(batch)
