"""A few thousand engagement events across platforms and accounts, in random order:
gauges, the account API and the closed-window results must all equal a plain
recomputation from the same events."""

from __future__ import annotations

import random
import time
from collections import defaultdict

import orjson
import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from streams.windows import iso

from ..helpers import consume_all, spawn_worker, stop_process, wait_until, worker_env

pytestmark = pytest.mark.integration
PREFIX = "big."
PLATFORMS = ("instagram", "tiktok", "facebook", "x", "linkedin")
ACCOUNTS = [(p, f"{p[:2]}-{i}") for p in PLATFORMS for i in range(4)]


def build(b: int, rng: random.Random) -> tuple[list[tuple[str, dict]], dict]:
    events: list[tuple[str, dict]] = []
    truth: dict = defaultdict(lambda: {"eng": 0, "imp": 0, "clk": 0, "f": [], "posts": defaultdict(int)})
    n = 0
    for platform, account in ACCOUNTS:
        t = truth[(platform, account)]
        for _ in range(rng.randint(60, 180)):
            n += 1
            post = f"p{rng.randint(0, 5)}"
            events.append(("likes", {"event_id": f"e{n}", "ts": iso(b + rng.randrange(10_000)), "platform": platform,
                                     "account_id": account, "post_id": post, "actor_id": f"u{n}"}))
            t["eng"] += 1
            t["posts"][post] += 1
        for _ in range(rng.randint(10, 30)):
            n += 1
            c = rng.randint(50, 400)
            events.append(("impressions", {"event_id": f"e{n}", "ts": iso(b + rng.randrange(10_000)), "platform": platform,
                                           "account_id": account, "post_id": "p0", "count": c}))
            t["imp"] += c
        for _ in range(rng.randint(5, 40)):
            n += 1
            events.append(("clicks", {"event_id": f"e{n}", "ts": iso(b + rng.randrange(10_000)), "platform": platform,
                                      "account_id": account, "actor_id": f"u{n}"}))
            t["clk"] += 1
        for _ in range(3):
            n += 1
            ts = b + rng.randrange(10_000)
            f = rng.randint(1000, 5000)
            events.append(("audience", {"event_id": f"e{n}", "ts": iso(ts), "platform": platform, "account_id": account,
                                        "followers": f}))
            t["f"].append((ts, f))
    rng.shuffle(events)
    return events, truth


def gauges(text: str) -> dict[tuple[str, str, str], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.labels.get("window") == "5m" or s.name == "socialpulse_followers":
                out[(s.name, s.labels.get("platform"), s.labels.get("account"))] = s.value
    return out


@pytest.fixture(scope="module")
def run(broker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("big")
    env = worker_env(broker, PREFIX, tmp / "data", SOCIALPULSE_BUCKET="1s", SOCIALPULSE_TRAILING_WINDOWS="5m",
                     SOCIALPULSE_CLOSED_WINDOWS="10s", SOCIALPULSE_GRACE="12s", SOCIALPULSE_IDLE="1s")
    worker = spawn_worker(env, tmp)
    worker.wait_ready(60)
    b = (int(time.time() * 1000) // 10_000 + 1) * 10_000
    events, truth = build(b, random.Random(5))
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 5})
    for topic, value in events:
        producer.produce(PREFIX + topic, orjson.dumps(value))
    assert producer.flush(30) == 0
    total = len(events)
    wait_until(lambda: sum(v for (n, _, _), v in gauges(worker.metrics()).items() if n == "socialpulse_engagements")
               == sum(t["eng"] for t in truth.values()), 60, what="all engagements counted")
    yield worker, b, truth, total, broker
    stop_process(worker.proc)


def expected(t: dict) -> dict[str, float | None]:
    first = min(t["f"])[1]
    last = max(t["f"])[1]
    return {
        "engagements": t["eng"], "impressions": t["imp"], "clicks": t["clk"],
        "engagement_rate": t["eng"] / t["imp"], "click_through_rate": t["clk"] / t["imp"],
        "followers": last, "follower_growth": last - first, "engagement_rate_by_followers": t["eng"] / last,
    }


def test_scenario_is_a_few_thousand_events(run):
    _, _, _, total, _ = run
    assert total >= 3000


def test_gauges_equal_the_recomputation(run):
    worker, _, truth, _, _ = run
    g = gauges(worker.metrics())
    for (platform, account), t in truth.items():
        for metric, value in expected(t).items():
            assert g[(f"socialpulse_{metric}", platform, account)] == pytest.approx(value), (platform, account, metric)


def test_api_equals_the_recomputation(run):
    worker, _, truth, _, _ = run
    for (platform, account), t in truth.items():
        body = orjson.loads(worker.get(f"/api/v1/accounts/{platform}/{account}")[1])["engagement"]
        win = body["windows"]["5m"]
        for metric, value in expected(t).items():
            got = body["followers"] if metric == "followers" else win[metric]
            assert got == pytest.approx(value), (platform, account, metric)
        top = sorted(t["posts"].items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        assert win["top_posts"] == [{"post_id": p, "engagements": n} for p, n in top]


def test_results_equal_the_recomputation(run):
    worker, b, truth, _, broker = run
    wait_until(lambda: time.time() * 1000 > b + 10_000 + 12_000 + 2_000, 60, what="window closed")
    n_expected = len(truth) * 9
    records = [orjson.loads(m.value()) for m in consume_all(broker, PREFIX + "socialpulse.results", expect=n_expected)]
    by = {(r["platform"], r["account_id"], r["metric"]): r for r in records if r["window_start"] == iso(b)}
    for (platform, account), t in truth.items():
        for metric, value in expected(t).items():
            assert by[(platform, account, metric)]["value"] == pytest.approx(value), (platform, account, metric)
        top = sorted(t["posts"].items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        assert by[(platform, account, "top_posts")]["top_posts"] == [{"post_id": p, "engagements": n} for p, n in top]
    assert len(records) == len({r["key"] for r in records})
