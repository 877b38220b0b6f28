"""One very hot account on two workers, on each broker (Apache Kafka with its default limits: a
record over 1 MB stops a producer): in one closed hour, thousands of conversations with hundreds
of agents, thousands of posts with long ids, clicks and orders attributed to them, TOP_POSTS at
its maximum, and a rejected input record of 900 KB. The totals are exact, and every record the
workers wrote, on every topic (changelogs, socialpulse.by-account / by-actor, results, breaches,
dead letters), read back by an independent client, is within the documented bound: 64 KiB, key
and value (``streams/pages.py`` RECORD_MAX)."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from schemas.events import INPUT_TOPICS
from streams.pages import RECORD_MAX

from ..helpers import metric_value, spawn_worker, wait_until, worker_env
from .test_scale_out import total

pytestmark = [pytest.mark.integration, pytest.mark.kafka]
PREFIX = "hot."
ACCOUNT = {"platform": "instagram", "account_id": "hot-" + "a" * 120}
CONVERSATIONS, AGENTS, POSTS, ORDERS = 2000, 400, 2000, 300
LONG = "x" * 180  # long post ids: a row of the per-post table, a forwarded like, are hundreds of bytes


def post(i: int) -> str:
    return f"post-{i:05d}-{LONG}"


def events(t0: int) -> list[tuple[str, str, dict]]:
    """(topic, message key, event): everything in the hour from ``t0``."""
    out: list[tuple[str, str, dict]] = []
    for i in range(CONVERSATIONS):
        ts, cid = t0 + i * 1_500, f"conv-{i:05d}-{LONG}"
        out.append(("messages", cid, ACCOUNT | {"event_id": f"m{i}", "ts": ts, "conversation_id": cid,
                                                "direction": "inbound", "author_id": f"customer-{i}"}))
        if i % 2 == 0:  # half answered within a minute, by one of many agents; the rest breach the SLO
            agent = f"agent-{(i // 2) % AGENTS:04d}"
            out.append(("messages", cid, ACCOUNT | {"event_id": f"r{i}", "ts": ts + 60_000, "conversation_id": cid,
                                                    "direction": "outbound", "author_id": agent, "agent_id": agent}))
    for i in range(2 * POSTS):
        out.append(("likes", post(i % POSTS), ACCOUNT | {"event_id": f"l{i}", "ts": t0 + i * 600, "post_id": post(i % POSTS),
                                                          "actor_id": f"fan-{i}"}))
    for i in range(ORDERS):
        shopper, ts = f"shopper-{i}", t0 + 60_000 + i * 9_000
        out.append(("clicks", shopper, ACCOUNT | {"event_id": f"c{i}", "ts": ts, "actor_id": shopper,
                                                  "post_id": post(i), "click_id": f"click-{i}"}))
        out.append(("orders", shopper, {"event_id": f"o{i}", "ts": ts + 60_000, "order_id": f"order-{i}",
                                        "actor_id": shopper, "amount": "10.00", "currency": "EUR",
                                        "click_id": f"click-{i}"}))
    return out


class Reader:
    """Reads topics from their start with librdkafka (an independent client), keeping every record."""

    def __init__(self, broker: str) -> None:
        self.broker = broker

    def read(self, topic: str) -> list:
        consumer = Consumer({"bootstrap.servers": self.broker, "group.id": f"hot-{time.monotonic_ns()}",
                             "enable.auto.commit": False, "fetch.message.max.bytes": 2_000_000})
        try:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in meta.partitions}
            consumer.assign([TopicPartition(topic, p, lo) for p, (lo, hi) in ends.items() if hi > lo])
            left = {p for p, (lo, hi) in ends.items() if hi > lo}
            out: list = []
            deadline = time.monotonic() + 30
            while left and time.monotonic() < deadline:
                for m in consumer.consume(1000, 0.5):
                    if m.error():
                        continue
                    out.append(m)
                    if m.offset() + 1 >= ends[m.partition()][1]:
                        left.discard(m.partition())
            assert not left, f"{topic}: partitions {left} not read to their end"
            # and on for a moment: Tansu reports the base offset of the newest batch as the end (too low
            # when it holds several); the results topic never stops growing, so a bounded look
            settle = time.monotonic() + 3
            while time.monotonic() < settle and (more := [m for m in consumer.consume(1000, 1.0) if not m.error()]):
                out.extend(more)
            return out
        finally:
            consumer.close()

    def topics(self) -> list[str]:
        consumer = Consumer({"bootstrap.servers": self.broker, "group.id": "hot-list"})
        try:
            return sorted(t for t in consumer.list_topics(timeout=10).topics if t.startswith(PREFIX))
        finally:
            consumer.close()


def latest(records: list) -> dict[bytes, dict]:
    out: dict[bytes, dict] = {}
    for m in records:
        if m.value() is None:
            out.pop(m.key(), None)
        else:
            out[m.key()] = orjson.loads(m.value())
    return out


def test_a_very_hot_account_stays_exact_with_every_record_under_the_bound(broker, tmp_path):
    env = worker_env(broker, PREFIX, tmp_path / "data", SOCIALPULSE_TOP_POSTS="1000", SOCIALPULSE_IDLE="2s")
    workers = [spawn_worker(env | {"SOCIALPULSE_DATA_DIR": str(tmp_path / f"data{i}")}, tmp_path, f"w{i}") for i in range(2)]
    for w in workers:
        w.wait_ready(90)
    now = int(time.time() * 1000)
    t0 = now - now % 3_600_000 - 2 * 3_600_000  # the hour two hours ago: closed once the clock events come
    batch = events(t0)
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 20})
    for topic, key, doc in batch:
        producer.produce(PREFIX + topic, orjson.dumps(doc), key=key)
    # a rejected record near the broker's limit: its dead letter keeps the start, length and digest
    giant = b'{"event_id": "giant", "blob": "' + b"z" * 900_000 + b'"}'
    producer.produce(PREFIX + "likes", giant, key=b"giant")
    producer.flush(30)
    # then the present on every partition of the topics used: the watermark passes the hour
    for topic in ("messages", "likes", "clicks", "orders"):
        for p in range(2):
            doc = {"event_id": f"now-{topic}-{p}", "ts": int(time.time() * 1000)} | (
                {"order_id": f"now-{p}", "actor_id": "nobody", "amount": "1", "currency": "EUR"} if topic == "orders" else
                ACCOUNT | {"platform": "x", "post_id": "now", "actor_id": "nobody", "conversation_id": f"now-{p}",
                           "direction": "inbound", "author_id": "nobody"})
            producer.produce(PREFIX + topic, orjson.dumps(doc), partition=p)
    producer.flush(30)
    sent = len(batch) + 8

    reader = Reader(broker)
    start = time.monotonic()

    def accepted() -> float:
        return total([w.metrics() for w in workers], "socialpulse_events_total", outcome="accepted")

    wait_until(lambda: accepted() >= sent, 90, what=f"{sent} events accepted")
    hour = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0 / 1000))
    # the workers started with no input: their watermark followed the wall clock, so the hour was
    # closed already and every event of it is late data (within ALLOWED_LATENESS) correcting it,
    # revision after revision: the latest revision of each result is exact
    want = {"conversations_started": CONVERSATIONS, "engagements": 2 * POSTS, "attributed_orders": ORDERS}
    hot: dict[tuple[str, int | None], dict] = {}
    results: dict[bytes, dict] = {}

    def exact() -> bool:
        results.update(latest(reader.read(PREFIX + "socialpulse.results")))
        hot.clear()
        hot.update({(r["metric"], r.get("page")): r for r in results.values()
                    if (r["platform"], r["account_id"]) == tuple(ACCOUNT.values()) and r["window"] == "1h"
                    and r["window_start"].startswith(hour)})
        rows = sum(len(r["posts"]) for (metric, _), r in hot.items() if metric == "posts")
        return rows == POSTS and all((hot.get((metric, None)) or {}).get("value") == n for metric, n in want.items())

    wait_until(exact, 90, interval=2, what=f"the hot hour's results: {want}, {POSTS} posts")
    time.sleep(3)  # the last flush and commit
    print(f"counted, closed and exact in {time.monotonic() - start:.1f} s "
          f"(revision {hot[('engagements', None)]['revision']} of the hour's engagements)")
    assert accepted() == sent
    assert total([w.metrics() for w in workers], "socialpulse_events_total", outcome="invalid") == 1
    pages = [r for (metric, _), r in hot.items() if metric == "posts"]
    assert sorted(p["post_id"] for r in pages for p in r["posts"]) == sorted(post(i) for i in range(POSTS))
    assert len(pages) > 4 and {r["pages"] for r in pages} == {len(pages)}  # 500 rows would be 150 KB: cut by bytes
    assert 0 < len(hot[("top_posts", None)]["top_posts"]) < 1000  # TOP_POSTS 1000: cut where 48 KiB ends
    agents = {r["agent_id"] for r in results.values() if r["metric"] == "agent_reply_seconds"
              and r["account_id"] == ACCOUNT["account_id"] and r["window"] == "1h" and r["window_start"].startswith(hour)}
    assert len(agents) == AGENTS
    def hot_breaches() -> int:  # (published by the ticks that judged them: they may trail the results)
        breaches = latest(reader.read(PREFIX + "socialpulse.reply-breaches"))
        return len([b for b in breaches.values() if (b["platform"], b["account_id"]) == tuple(ACCOUNT.values())])

    with contextlib.suppress(AssertionError):
        wait_until(lambda: hot_breaches() >= CONVERSATIONS // 2, 30, interval=2, what="every breach published")
    assert hot_breaches() == CONVERSATIONS // 2

    dead = [orjson.loads(m.value()) for m in reader.read(PREFIX + "socialpulse.dlq")]
    (letter,) = [d for d in dead if d.get("raw_truncated")]
    assert letter["reason"] == "too_large" and letter["raw_bytes"] == len(giant)

    # every record on every topic the workers wrote: within the bound
    inputs = {PREFIX + t for t in INPUT_TOPICS}
    largest: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    for topic in reader.topics():
        if topic in inputs:
            continue
        for m in reader.read(topic):
            largest[topic] = max(largest[topic], len(m.key() or b"") + len(m.value() or b""))
            counts[topic] += 1
    for topic in sorted(largest):
        print(f"{topic}: {counts[topic]:,} records, the largest {largest[topic]:,} B (key and value)")
    print(f"the largest record observed: {max(largest.values()):,} B; bound {RECORD_MAX:,} B")
    for name in ("socialpulse.by-account", "socialpulse.by-actor", "socialpulse.results", "socialpulse.reply-breaches",
                 "socialpulse.dlq", "socialpulse-account-state-changelog", "socialpulse-actor-state-changelog"):
        assert counts[PREFIX + name] > 0, f"nothing written to {name}"
    assert max(largest.values()) <= RECORD_MAX, {t: n for t, n in largest.items() if n > RECORD_MAX}
    assert largest[PREFIX + "socialpulse.by-account"] > 16 * 1024  # forwards were batched, and cut by bytes
    for topic in ("socialpulse.results", "socialpulse.dlq"):
        seen = max(metric_value(w.metrics(), "socialpulse_record_max_bytes", topic=topic) or 0 for w in workers)
        assert 0 < seen <= RECORD_MAX
