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

from collections.abc import Iterable
from typing import Any

from faust.stores import memory, rocksdb
from faust.types.tuples import FutureMessage, PendingMessage

__all__ = ["write_many", "read_one"]


def write_many(table: Any, partition: int, changes: Iterable[tuple[bytes, bytes | None]]) -> int:
    """Set (value bytes) or delete (value None) keys of one partition of ``table``;
    each key is written once, as Faust's own ``table[key] = value`` would. Returns
    how many keys were written."""
    app, store, channel = table.app, table.data, table.changelog_topic
    send, callback, generation = app.producer.send_soon, table._on_changelog_sent, app.consumer_generation_id
    if type(store) is rocksdb.Store and store.rocksdb_options.use_rocksdict:
        batch = rocksdb.rocksdict.WriteBatch(raw_mode=True)
    elif type(store) is memory.Store:
        batch = None
    else:  # settings allow rocksdb:// (with rocksdict, faust-streaming's default) and memory:// only
        raise TypeError(f"write_many: unsupported table store {type(store).__name__}")
    n = 0
    for key, value in changes:
        send(FutureMessage(PendingMessage(
            channel, key, value, partition, None, {}, "raw", "raw", callback, None, None, generation,
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
    if batch is not None and n:
        store._db_for_partition(partition).write(batch)
    return n


def read_one(table: Any, partition: int, key: bytes) -> bytes | None:
    """One key's value in one partition of ``table``'s store (None when absent)."""
    store = table.data
    value = store.data.get(key) if type(store) is memory.Store else store._db_for_partition(partition).get(key)
    return None if value is None else bytes(value)
