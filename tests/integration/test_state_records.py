"""One very hot account on a real worker, as a new user would make it: thousands of
conversations, posts with likes and agents within the windows. Its state is well over 1 MB,
yet no changelog record the worker writes exceeds the documented bound (64 KiB,
``streams/pages.py``), read back from the changelog topic by an independent client; and a
worker killed with SIGKILL and restarted with its data dir wiped comes back to exactly the same
numbers from those records."""

from __future__ import annotations

import shutil
import signal
import time

import orjson
import pytest
from confluent_kafka import Producer

from streams.pages import PAGE, RECORD_MAX

from ..helpers import consume_all, metric_value, spawn_worker, wait_until, worker_env
from .test_scale_out import summed

pytestmark = pytest.mark.integration
PREFIX = "sr."
ACCOUNT = {"platform": "instagram", "account_id": "hot"}
CONVERSATIONS, POSTS, AGENTS = 3000, 2000, 600


def events(now_ms: int) -> list[tuple[str, dict]]:
    out: list[tuple[str, dict]] = []
    t0 = now_ms - 9 * 60_000  # the last nine minutes: every window still open
    for i in range(CONVERSATIONS):
        ts = t0 + i * 150
        out.append(("messages", ACCOUNT | {"event_id": f"m{i}", "ts": ts, "conversation_id": f"conv-{i:05d}",
                                           "direction": "inbound", "author_id": f"customer-{i}"}))
        if i % 2 == 0:  # half answered, by one of many agents
            agent = f"agent-{i % AGENTS:04d}"
            out.append(("messages", ACCOUNT | {"event_id": f"r{i}", "ts": ts + 30_000, "conversation_id": f"conv-{i:05d}",
                                               "direction": "outbound", "author_id": agent, "agent_id": agent}))
    for i in range(2 * POSTS):
        out.append(("likes", ACCOUNT | {"event_id": f"l{i}", "ts": t0 + i * 100, "post_id": f"post-{i % POSTS:05d}",
                                        "actor_id": f"fan-{i}", "kind": "like"}))
    return out


def numbers(worker) -> tuple[float, float, float]:
    texts = [worker.metrics()]
    return (
        sum(summed(texts, "socialpulse_conversations_started", window="1h").values()),
        sum(summed(texts, "socialpulse_reply_latency_seconds_count").values()),
        sum(summed(texts, "socialpulse_engagements", window="1h").values()),
    )


def test_a_very_hot_account_writes_only_small_records_and_restores_exactly(broker, tmp_path):
    data = tmp_path / "data"
    env = worker_env(broker, PREFIX, data)
    worker = spawn_worker(env, tmp_path, "first")
    worker.wait_ready(60)
    batch = events(int(time.time() * 1000))
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 20})
    for topic, doc in batch:
        producer.produce(PREFIX + topic, orjson.dumps(doc), key=doc["conversation_id" if topic == "messages" else "post_id"])
    producer.flush(30)
    want = (float(CONVERSATIONS), float(CONVERSATIONS // 2), float(2 * POSTS))
    wait_until(lambda: numbers(worker) == want, 90, what=f"the hot account counted: {want}")
    time.sleep(3)  # a flush and a commit

    largest = metric_value(worker.metrics(), "socialpulse_changelog_record_max_bytes", stage="account")
    assert largest is not None and 0 < largest <= RECORD_MAX

    # the changelog as any Kafka client reads it: every record small, the account's state large
    records = consume_all(broker, f"{PREFIX}socialpulse-account-state-changelog", expect=100, timeout=30)
    assert records, "nothing read from the account changelog"
    assert max(len(m.value() or b"") for m in records) <= RECORD_MAX
    assert max(len(m.key()) for m in records) < 1024
    latest: dict[bytes, bytes] = {}
    for m in records:
        if m.value() is None:
            latest.pop(m.key(), None)
        else:
            latest[m.key()] = m.value()
    hot = PAGE + orjson.dumps(["instagram|hot"])[:-1]
    state_bytes = sum(len(v) for k, v in latest.items() if k.startswith(hot))
    print(f"{len(records):,} changelog records, largest {largest:,.0f} B; the hot account's state {state_bytes:,} B "
          f"in {sum(k.startswith(hot) for k in latest):,} pages")
    assert state_bytes > 1_000_000  # as one record it would pass Kafka's default limit

    worker.proc.send_signal(signal.SIGKILL)
    worker.proc.wait(10)
    shutil.rmtree(data)  # everything comes back from the changelog's small records
    restored = spawn_worker(env, tmp_path, "restored")
    print(f"restored from the changelog, ready in {restored.wait_ready(90):.1f} s")
    wait_until(lambda: numbers(restored) == want, 60, what=f"the same numbers after the restore: {want}")
