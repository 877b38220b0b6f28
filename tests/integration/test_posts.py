"""Per post and organic / paid on a real broker and worker: likes, impressions (some paid),
clicks (some paid, most naming their post), leads naming a post, an order attributed to a
click on a post and another placed then cancelled, and the follower count; the per-post table
and top posts by revenue on the results topic and in the API, and the two new gauges on
/metrics, against values computed here."""

from __future__ import annotations

import time

import orjson
import pytest
from confluent_kafka import Producer

from streams.windows import iso

from ..helpers import consume_all, metric_value, spawn_worker, stop_process, wait_until, worker_env

pytestmark = pytest.mark.integration
PREFIX = "posts."
IG = {"platform": "instagram", "account": "shop", "window": "5m"}
FOLLOWERS = 4000


def row(post, eng, imp, clicks, leads, revenue):
    return {"post_id": post, "engagements": eng, "impressions": imp, "engagement_rate": eng / imp if imp else None,
            "engagement_rate_by_followers": eng / FOLLOWERS, "clicks": clicks,
            "click_through_rate": clicks / imp if imp else None, "leads": leads, "revenue": revenue}


#: p1: 6 likes, 1000 organic + 1000 paid impressions, 8 organic + 2 paid clicks, 2 leads, a EUR 50 order;
#: p2: 2 likes, 500 organic impressions, 3 organic clicks, a EUR 30 order cancelled (credited, taken back);
#: p3: no likes, 500 paid impressions, 4 paid clicks, 1 lead
ROWS = [row("p1", 6, 2000, 10, 2, {"EUR": "50.000000"}), row("p2", 2, 500, 3, 0, {}),
        row("p3", 0, 500, 4, 1, {})]
CTR = {"organic": 12 / 1500, "paid": 6 / 1500}  # + a click naming no post (organic); impressions 1500 / 1500
PER_POST_RATE = 8 / (2 * FOLLOWERS)  # the mean over the posts engaged with (p1: 6, p2: 2) of 4000 followers


@pytest.fixture(scope="module")
def run(broker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("posts")
    env = worker_env(broker, PREFIX, tmp / "data", SOCIALPULSE_BUCKET="1s", SOCIALPULSE_TRAILING_WINDOWS="5m",
                     SOCIALPULSE_CLOSED_WINDOWS="10s", SOCIALPULSE_GRACE="5s", SOCIALPULSE_IDLE="1s")
    worker = spawn_worker(env, tmp)
    worker.wait_ready(60)
    b = (int(time.time() * 1000) // 10_000 + 1) * 10_000
    n = 0

    def ev(topic, ts, **fields):
        nonlocal n
        n += 1
        return topic, {"event_id": f"{topic}-{n}", "ts": iso(b + ts)} | fields

    shop = {"platform": "instagram", "account_id": "shop"}

    def clicks(post, actors, paid=False):
        return [ev("clicks", 1000, **shop, actor_id=a, post_id=post, click_id=f"ck-{a}", paid=paid) for a in actors]

    events = [ev("audience", 500, **shop, followers=FOLLOWERS)]
    events += [ev("likes", 600 + i, **shop, post_id="p1", actor_id=f"f{i}") for i in range(6)]
    events += [ev("likes", 700 + i, **shop, post_id="p2", actor_id=f"g{i}", kind="share") for i in range(2)]
    events += [ev("impressions", 800, **shop, post_id="p1", count=1000),
               ev("impressions", 800, **shop, post_id="p1", count=1000, paid=True),
               ev("impressions", 800, **shop, post_id="p2", count=500),
               ev("impressions", 800, **shop, post_id="p3", count=500, paid=True)]
    events += clicks("p1", [f"a{i}" for i in range(8)]) + clicks("p1", ["b0", "b1"], paid=True)
    events += clicks("p2", ["c0", "c1", "c2"]) + clicks("p3", [f"d{i}" for i in range(4)], paid=True)
    events += [ev("clicks", 1000, **shop, actor_id="e0")]  # names no post
    events += [ev("leads", 2000, **shop, actor_id="a1", post_id="p1", click_id="ck-a1"),
               ev("leads", 2000, **shop, actor_id="a2", post_id="p1"),
               ev("leads", 2000, **shop, actor_id="d0", post_id="p3"),
               ev("leads", 2000, **shop, actor_id="zz", kind="dm")]  # names no post
    events += [ev("orders", 4000, order_id="o1", actor_id="a0", amount="50.00", currency="EUR", click_id="ck-a0"),
               ev("orders", 4000, order_id="o2", actor_id="c0", amount="30.00", currency="EUR"),
               ev("orders", 6000, order_id="o2", actor_id="c0", amount="30.00", currency="EUR", status="cancelled")]
    producer = Producer({"bootstrap.servers": broker})
    for topic, value in events:
        # an order and its cancellation keyed alike, as a shop's producer does: one partition, in order
        # (a cancellation read before its placement leaves nothing credited, by design)
        key = value.get("order_id")
        producer.produce(PREFIX + topic, orjson.dumps(value), key=key.encode() if key else None)
    assert producer.flush(15) == 0

    def settled():
        body = orjson.loads(worker.get("/api/v1/accounts/instagram/shop")[1])["engagement"]["windows"]["5m"]
        return body["posts"] == ROWS

    wait_until(settled, 40, what="per-post table in the API")
    yield worker, b, broker
    stop_process(worker.proc)


def test_api_per_post_table_top_posts_by_revenue_and_ctr_by_type(run):
    worker, *_ = run
    win = orjson.loads(worker.get("/api/v1/accounts/instagram/shop")[1])["engagement"]["windows"]["5m"]
    assert win["posts"] == ROWS
    assert win["top_posts_by_revenue"] == {"EUR": [{"post_id": "p1", "revenue": "50.000000"}]}  # p2's was taken back
    assert win["click_through_rate_by_type"] == CTR
    assert win["post_engagement_rate_by_followers"] == PER_POST_RATE
    assert (win["clicks"], win["impressions"]) == (18, 3000)  # the account's totals are unchanged


def test_gauges_per_post_rate_and_ctr_by_type(run):
    worker, *_ = run
    text = worker.metrics()
    assert metric_value(text, "socialpulse_post_engagement_rate_by_followers", **IG) == pytest.approx(PER_POST_RATE)
    for kind, value in CTR.items():
        assert metric_value(text, "socialpulse_click_through_rate_by_type", **IG, type=kind) == pytest.approx(value)
    assert "post_id" not in text and 'post="' not in text  # never a post as a label


def test_closed_window_results_carry_the_table(run):
    worker, b, broker = run
    wait_until(lambda: time.time() * 1000 > b + 10_000 + 5_000 + 1_000, 40, what="window end + grace")

    start = iso(b)
    wait_until(lambda: (metric_value(worker.metrics(), "socialpulse_results_published_total", family="engagement")
                        or 0) >= 14, 30, what="engagement results")

    def latest() -> dict[str, dict] | None:
        """The window's engagement results upserted by key (highest revision), once the table is right."""
        records = [orjson.loads(m.value()) for m in consume_all(broker, PREFIX + "socialpulse.results", expect=14)]
        out: dict[str, dict] = {}
        for r in sorted(records, key=lambda r: r["revision"]):
            if r["family"] == "engagement" and r["window_start"] == start and r["account_id"] == "shop":
                out[r["key"]] = r
        return out if out.get(f"posts|instagram|shop|10s|{start}|0", {}).get("posts") == ROWS else None

    got = wait_until(latest, 45, interval=1.0, what="the posts result")
    posts = got[f"posts|instagram|shop|10s|{start}|0"]
    assert (posts["value"], posts["page"], posts["pages"], posts["followers"]) == (3, 0, 1, FOLLOWERS)
    assert got[f"top_posts_by_revenue|instagram|shop|10s|{start}|EUR"]["top_posts_by_revenue"] == [
        {"post_id": "p1", "revenue": "50.000000"}]
    assert got[f"post_engagement_rate_by_followers|instagram|shop|10s|{start}"]["value"] == PER_POST_RATE
    for kind, value in CTR.items():
        r = got[f"click_through_rate_by_type|instagram|shop|10s|{start}|{kind}"]
        assert (r["value"], r["type"]) == (value, kind)
