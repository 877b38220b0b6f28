"""End to end on a real broker: hand-made events in, exact counts, gauges,
dead letters, results and API out. Produced with two independent clients:
aiokafka and confluent-kafka (librdkafka)."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from streams.windows import iso

from ..helpers import consume_all, metric_value, spawn_worker, stop_process, wait_until, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.kafka]
PREFIX = "e2e."




@pytest.fixture(scope="module")
def scenario(broker, tmp_path_factory):
    """Start a worker, produce the scenario, return (worker, B) once all is counted."""
    tmp = tmp_path_factory.mktemp("e2e")
    env = worker_env(
        broker, PREFIX, tmp / "data",
        SOCIALPULSE_BUCKET="1s", SOCIALPULSE_TRAILING_WINDOWS="5m", SOCIALPULSE_CLOSED_WINDOWS="10s",
        SOCIALPULSE_GRACE="10s", SOCIALPULSE_IDLE="1s", SOCIALPULSE_MAX_EVENT_BYTES="2048",
    )
    worker = spawn_worker(env, tmp)
    ready_s = worker.wait_ready(60)
    now = int(time.time() * 1000)
    b = (now // 10_000 + 1) * 10_000  # the next 10 s window: all of it still ahead of the wall clock

    def ev(eid, offset_ms, **fields):
        return {"event_id": eid, "ts": iso(b + offset_ms)} | fields

    ig = {"platform": "instagram", "account_id": "acme"}
    tt = {"platform": "tiktok", "account_id": "acme-tt"}
    likes = [  # out of order on purpose
        ev("l1", 8000, **ig, post_id="p2", actor_id="u1", kind="like"),
        ev("l2", 2000, **ig, post_id="p2", actor_id="u2", kind="comment"),
        ev("l3", 6000, **ig, post_id="p2", actor_id="u3", kind="share"),
        ev("l4", 3000, **ig, post_id="p1", actor_id="u4"),
        ev("l5", 7000, **ig, post_id="p1", actor_id="u5"),
    ] + [ev(f"t{i}", 4000, **tt, post_id="tp", actor_id=f"v{i}") for i in range(25)]
    aiokafka_records = [("likes", orjson.dumps(x)) for x in likes]
    aiokafka_records += [
        ("likes", orjson.dumps(likes[1])),  # an upstream retry: duplicate
        ("likes", orjson.dumps({"event_id": "late1", "ts": iso(now - 3 * 86_400_000), **ig, "post_id": "p1", "actor_id": "u9"})),
        ("likes", b'{"event_id": "broken"'),
        ("likes", b"\xff\xfe\xfa"),
        ("likes", orjson.dumps(ev("big", 1000, **ig, post_id="p1", actor_id="u1", note="x" * 3000))),
        ("impressions", orjson.dumps({"event_id": "i-missing", "ts": iso(b), **ig, "count": 3})),
        ("impressions", orjson.dumps(ev("i-neg", 1000, **ig, post_id="p1", count=-5))),
        ("clicks", orjson.dumps(ev("c-bad", 1000, platform="myspace", account_id="acme", actor_id="u1"))),
        ("orders", orjson.dumps(ev("o-bad", 1000, order_id="o9", actor_id="u1", amount="5", currency="ZZZ"))),
        ("audience", orjson.dumps({"event_id": "a-naive", "ts": "2026-01-01T10:00:00", **ig, "followers": 5})),
        ("orders", orjson.dumps(ev("o1", 5000, order_id="o1", actor_id="u7", amount="19.90", currency="EUR"))),
        ("messages", orjson.dumps(ev("m1", 5000, **ig, conversation_id="c1", direction="inbound", author_id="u7"))),
        ("spend", orjson.dumps(ev("s1", 5000, **ig, campaign_id="cmp", amount="40", currency="USD"))),
    ]
    confluent_records = [
        ("impressions", orjson.dumps(ev("i1", 1000, **ig, post_id="p1", count=1000))),
        ("impressions", orjson.dumps(ev("i2", 5000, **ig, post_id="p2", count=1000))),
        ("impressions", orjson.dumps(ev("i3", 5000, **tt, post_id="tp", count=500))),
        ("audience", orjson.dumps(ev("f1", 9000, **ig, followers=1000))),
        ("audience", orjson.dumps(ev("f0", 500, **ig, followers=900))),  # older snapshot, arrives later
    ] + [("clicks", orjson.dumps(ev(f"c{i}", 4000, **ig, actor_id=f"u{i}"))) for i in range(40)]

    async def produce_aiokafka():
        producer = AIOKafkaProducer(bootstrap_servers=broker)
        await producer.start()
        try:
            for topic, value in aiokafka_records:
                await producer.send_and_wait(PREFIX + topic, value)
        finally:
            await producer.stop()

    asyncio.run(produce_aiokafka())
    producer = Producer({"bootstrap.servers": broker})
    for topic, value in confluent_records:
        producer.produce(PREFIX + topic, value)
    assert producer.flush(15) == 0
    total = len(aiokafka_records) + len(confluent_records)
    wait_until(
        lambda: sum(v for _, v in _events(worker.metrics()).items()) == total, 60, what="every record counted"
    )
    yield worker, b, ready_s, broker
    stop_process(worker.proc)


def _events(text: str) -> dict[tuple[str, str], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "socialpulse_events_total":
                out[(s.labels["topic"], s.labels["outcome"])] = s.value
    return out


def test_worker_is_ready_quickly(scenario):
    _, _, ready_s, _ = scenario
    print(f"worker ready in {ready_s:.1f}s")
    assert ready_s < 20


def test_every_record_gets_the_right_outcome(scenario):
    worker, *_ = scenario
    got = {k: v for k, v in _events(worker.metrics()).items() if v}
    assert got == {
        ("likes", "accepted"): 30, ("likes", "duplicate"): 1, ("likes", "late"): 1, ("likes", "invalid"): 3,
        ("impressions", "accepted"): 3, ("impressions", "invalid"): 2,
        ("clicks", "accepted"): 40, ("clicks", "invalid"): 1,
        ("audience", "accepted"): 2, ("audience", "invalid"): 1,
        ("orders", "accepted"): 1, ("orders", "invalid"): 1,
        ("messages", "accepted"): 1, ("spend", "accepted"): 1,
    }


def test_every_rejection_is_dead_lettered_with_its_reason(scenario):
    worker, _, _, broker = scenario
    msgs = consume_all(broker, PREFIX + "socialpulse.dlq", expect=10)
    records = [orjson.loads(m.value()) for m in msgs]
    got = sorted((r["source_topic"].removeprefix(PREFIX), r["reason"]) for r in records)
    assert got == sorted([
        ("likes", "duplicate"), ("likes", "late"), ("likes", "not_json"), ("likes", "not_utf8"), ("likes", "too_large"),
        ("impressions", "invalid"), ("impressions", "invalid"), ("clicks", "invalid"), ("orders", "invalid"),
        ("audience", "invalid"),
    ])
    by_id = {r.get("event_id"): r for r in records}
    assert "post_id" in by_id["i-missing"]["detail"]
    assert "count" in by_id["i-neg"]["detail"]
    assert "currency" in by_id["o-bad"]["detail"].lower()
    assert "offset" in by_id["a-naive"]["detail"]
    assert by_id["late1"]["reason"] == "late" and by_id["l2"]["reason"] == "duplicate"
    assert all(r["offset"] >= 0 and r["partition"] >= 0 and r["raw"] for r in records)
    assert worker.proc.poll() is None  # bad input never stops the worker


def test_gauges_equal_hand_computed_values(scenario):
    worker, *_ = scenario
    text = worker.metrics()
    ig = {"platform": "instagram", "account": "acme", "window": "5m"}
    assert metric_value(text, "socialpulse_engagements", **ig) == 5
    assert metric_value(text, "socialpulse_impressions", **ig) == 2000
    assert metric_value(text, "socialpulse_clicks", **ig) == 40
    assert metric_value(text, "socialpulse_engagement_rate", **ig) == pytest.approx(5 / 2000)
    assert metric_value(text, "socialpulse_click_through_rate", **ig) == pytest.approx(40 / 2000)
    assert metric_value(text, "socialpulse_engagement_rate_by_followers", **ig) == pytest.approx(5 / 1000)
    assert metric_value(text, "socialpulse_follower_growth", **ig) == 100
    assert metric_value(text, "socialpulse_followers", platform="instagram", account="acme") == 1000
    tt = {"platform": "tiktok", "account": "acme-tt", "window": "5m"}
    assert metric_value(text, "socialpulse_engagement_rate", **tt) == pytest.approx(25 / 500)
    assert metric_value(text, "socialpulse_click_through_rate", **tt) == 0


def test_account_api_agrees_with_the_gauges(scenario):
    worker, *_ = scenario
    status, body = worker.get("/api/v1/accounts/instagram/acme")
    assert status == 200
    win = orjson.loads(body)["engagement"]["windows"]["5m"]
    assert (win["engagements"], win["impressions"], win["clicks"]) == (5, 2000, 40)
    assert win["engagement_rate"] == pytest.approx(0.0025) and win["click_through_rate"] == pytest.approx(0.02)
    assert win["follower_growth"] == 100 and win["by_kind"] == {"comment": 1, "like": 3, "share": 1}
    assert win["top_posts"] == [{"post_id": "p2", "engagements": 3}, {"post_id": "p1", "engagements": 2}]
    assert worker.get("/api/v1/accounts/instagram/nobody")[0] == 404
    assert worker.get("/api/v1/accounts/myspace/acme")[0] == 400


def test_closed_window_is_published_once_with_exact_values(scenario):
    worker, b, _, broker = scenario
    # the window [b, b+10s) closes once the wall clock passes b + 10s + 10s grace
    wait_until(lambda: time.time() * 1000 > b + 21_000, 45, what="window end + grace")
    wait_until(lambda: (metric_value(worker.metrics(), "socialpulse_results_published_total", family="engagement") or 0) >= 12,
               30, what="results published")
    msgs = consume_all(broker, PREFIX + "socialpulse.results", expect=12)
    records = [orjson.loads(m.value()) for m in msgs]
    mine = {r["metric"]: r for r in records
            if r["family"] == "engagement" and r["account_id"] == "acme" and r["window_start"] == iso(b)}
    assert {k: mine[k]["value"] for k in mine} == {
        "engagements": 5, "impressions": 2000, "clicks": 40, "engagement_rate": 0.0025,
        "engagement_rate_by_followers": 0.005, "click_through_rate": 0.02, "followers": 1000,
        "follower_growth": 100, "top_posts": 2,
        # per post: p1 2 and p2 3 engagements / 1000 followers, averaged; the clicks name no post and are organic
        "post_engagement_rate_by_followers": 0.0025, "click_through_rate_by_type": 0.02, "posts": 2,
    }
    assert mine["engagements"]["by_kind"] == {"comment": 1, "like": 3, "share": 1}
    assert mine["top_posts"]["top_posts"][0] == {"post_id": "p2", "engagements": 3}
    assert mine["engagement_rate"]["window"] == "10s" and mine["engagement_rate"]["window_end"] == iso(b + 10_000)
    keys = [m.key() for m in msgs]
    assert len(keys) == len(set(keys)), "a window was published twice"
    assert f"engagement_rate|instagram|acme|10s|{iso(b)}".encode() in keys
