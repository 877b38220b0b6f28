"""Every private Faust / aiokafka member socialpulse relies on, checked against the
installed versions: a dependency upgrade that removes or renames one fails here, with
the member and the module that uses it, instead of deep inside a running worker."""

from __future__ import annotations

import inspect

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.client import AIOKafkaClient
from faust.stores import memory, rocksdb
from faust.tables.base import Collection
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as driver
from faust.types.tuples import FutureMessage, PendingMessage

# (owner, member, what uses it)
CLASS_MEMBERS = [
    (faust_consumer.Consumer, "_drain_messages", "streams/transport.py: the lanes replace Faust's per-message loop"),
    (faust_consumer.Consumer, "_wait_next_records", "streams/transport.py: fetches a batch"),
    (faust_consumer.Consumer, "_to_message", "streams/transport.py: topics without a lane (changelogs)"),
    (faust_consumer.Consumer, "_add_gap", "streams/transport.py: offsets a compacted topic skips"),
    (faust_consumer.Consumer, "_commit_tps", "streams/transport.py: commits wait for the broker's acks"),
    (faust_consumer.Consumer, "_filter_committable_offsets", "streams/transport.py: the offsets a commit covers"),
    (faust_consumer.Consumer, "_handle_attached", "streams/transport.py: attached messages before a commit"),
    (faust_consumer.Consumer, "_commit_offsets", "streams/transport.py: the commit itself"),
    (faust_consumer.Consumer, "pause_partitions", "streams/pipeline.py: watermark alignment"),
    (faust_consumer.Consumer, "resume_partitions", "streams/pipeline.py: watermark alignment"),
    (driver.AIOKafkaConsumerThread, "_create_worker_consumer", "streams/transport.py: a short fetch wait"),
    (driver.AIOKafkaConsumerThread, "_ensure_consumer", "streams/pipeline.py: cluster metadata for the expected inputs"),
    (Collection, "_on_changelog_sent", "streams/changelog.py: the changelog offset kept in the store"),
    (Collection, "apply_changelog_batch", "streams/changelog.py: recovery checks each record"),
    (rocksdb.Store, "_db_for_partition", "streams/changelog.py: one RocksDB write batch per partition"),
]
#: attributes set in __init__ (checked on the source, as instances need a running app)
INIT_ATTRIBUTES = [
    (faust_consumer.Consumer, "_read_offset", "streams/transport.py, streams/pipeline.py"),
    (faust_consumer.Consumer, "_committed_offset", "streams/transport.py, streams/pipeline.py"),
    (faust_consumer.Consumer, "_acked", "streams/transport.py: acks a processed batch"),
    (faust_consumer.Consumer, "_acked_index", "streams/transport.py"),
    (faust_consumer.Consumer, "_n_acked", "streams/transport.py"),
    (faust_consumer.Consumer, "_waiting_for_ack", "streams/transport.py"),
    (faust_consumer.Consumer, "_buffered_partitions", "streams/transport.py"),
    (rocksdb.Store, "_key_index", "streams/changelog.py: keys written by a batch"),
    (AIOKafkaConsumer, "_client", "streams/pipeline.py: cluster metadata"),
    (AIOKafkaConsumer, "_fetch_max_wait_ms", "streams/transport.py: a short fetch wait"),
    (AIOKafkaClient, "cluster", "streams/pipeline.py: partitions of every input topic"),
]


@pytest.mark.parametrize(("owner", "member", "user"), CLASS_MEMBERS, ids=lambda x: getattr(x, "__name__", str(x))[:40])
def test_private_member_still_exists(owner, member, user):
    assert hasattr(owner, member), f"{owner.__module__}.{owner.__qualname__}.{member} is gone ({user}): adapt the code"


@pytest.mark.parametrize(("owner", "member", "user"), INIT_ATTRIBUTES, ids=lambda x: getattr(x, "__name__", str(x))[:40])
def test_private_attribute_is_still_set(owner, member, user):
    source = "".join(inspect.getsource(klass) for klass in owner.__mro__ if klass.__module__.split(".")[0] in ("faust", "aiokafka"))
    assert f"self.{member}" in source, f"{owner.__qualname__} no longer sets {member} ({user}): adapt the code"


def test_pending_message_fields_match_what_write_many_builds():
    """streams/changelog.py builds PendingMessage positionally (the table's changelog record)."""
    assert PendingMessage._fields[:12] == (
        "channel", "key", "value", "partition", "timestamp", "headers", "key_serializer", "value_serializer",
        "callback", "topic", "offset", "generation_id",
    )
    assert "message" in inspect.signature(FutureMessage.__init__).parameters
    assert hasattr(memory.Store, "data") or "self.data" in inspect.getsource(memory.Store)
