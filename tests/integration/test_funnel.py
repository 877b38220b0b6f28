"""The selling funnel end to end on a real broker and worker: leads, lead rates, cost per
lead, sessions from social, new customers and CPA (the seed's $40 post: 10 sign-ups, 2 buy,
CPA $20, with a repeat order that is not a second acquisition) and checkouts abandoned by the
source of the shopper's last touch; equal on /metrics, the API and the results topic."""

from __future__ import annotations

import time
from decimal import Decimal

import orjson
import pytest
from confluent_kafka import Producer

from streams.windows import iso

from ..helpers import consume_all, metric_value, spawn_worker, stop_process, wait_until, worker_env

pytestmark = pytest.mark.integration
PREFIX = "fun."
FB = {"platform": "facebook", "account": "acme", "window": "5m"}


@pytest.fixture(scope="module")
def run(broker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("funnel")
    env = worker_env(
        broker, PREFIX, tmp / "data", SOCIALPULSE_BUCKET="1s", SOCIALPULSE_TRAILING_WINDOWS="5m",
        SOCIALPULSE_CLOSED_WINDOWS="10s", SOCIALPULSE_GRACE="15s", SOCIALPULSE_IDLE="1s",
        SOCIALPULSE_CHECKOUT_TIMEOUT="20s",
    )
    worker = spawn_worker(env, tmp)
    worker.wait_ready(60)
    b = (int(time.time() * 1000) // 10_000 + 1) * 10_000
    n = 0

    def ev(topic, ts, **fields):
        nonlocal n
        n += 1
        return topic, {"event_id": f"{topic}-{n}", "ts": iso(ts)} | fields

    acme = {"platform": "facebook", "account_id": "acme"}
    events = [ev("spend", b, **acme, campaign_id="post", amount="40.00", currency="USD")]
    events += [ev("clicks", b + 1000, **acme, actor_id=f"u{i}", campaign_id="post") for i in range(100)]
    events += [ev("sessions", b + 1500, actor_id=f"u{i}", source="facebook", account_id="acme", duration_s=30) for i in range(20)]
    events += [ev("sessions", b + 1000, actor_id="u50", source="direct"), ev("sessions", b + 1000, actor_id="u51", source="search"),
               ev("sessions", b + 1000, actor_id="u52", source="instagram")]  # social, but no account: the shopper's only
    events += [ev("leads", b + 2000, **acme, actor_id=f"u{i}", campaign_id="post", kind="form" if i < 2 else "signup")
               for i in range(10)]
    events += [ev("orders", b + 5000, order_id="o0", actor_id="u0", amount="25.00", currency="USD"),
               ev("orders", b + 5000, order_id="o1", actor_id="u1", amount="35.00", currency="USD"),
               ev("orders", b + 6000, order_id="o1b", actor_id="u1", amount="10.00", currency="USD")]  # a repeat order

    def checkout(ts, cid, actor, status):
        return ev("checkouts", ts, checkout_id=cid, actor_id=actor, status=status)

    events += [checkout(b + 4000, "k0", "u0", "started"), checkout(b + 5000, "k0", "u0", "completed"),
               checkout(b + 4500, "k1", "u1", "started"), checkout(b + 5500, "k1", "u1", "completed"),
               checkout(b + 3000, "k5", "u5", "started"),  # left behind
               checkout(b + 2000, "k50", "u50", "started"), checkout(b + 3000, "k50", "u50", "completed"),
               checkout(b + 2000, "k51", "u51", "started")]  # left behind, after a search visit
    producer = Producer({"bootstrap.servers": broker})
    for topic, value in events:
        producer.produce(PREFIX + topic, orjson.dumps(value))
    assert producer.flush(15) == 0
    wait_until(lambda: metric_value(worker.metrics(), "socialpulse_new_customers", **FB) == 2, 40, what="new customers")
    yield worker, b, broker
    stop_process(worker.proc)


def test_funnel_and_cpa_on_metrics(run):
    worker, *_ = run
    text = worker.metrics()
    got = {name: metric_value(text, f"socialpulse_{name}", **FB) for name in (
        "leads", "lead_rate", "lead_rate_by_sessions", "social_sessions", "new_customers", "attributed_orders", "conversion_rate")}
    assert got == {"leads": 10, "lead_rate": 0.1, "lead_rate_by_sessions": 0.5, "social_sessions": 20,
                   "new_customers": 2, "attributed_orders": 3, "conversion_rate": 0.03}
    assert metric_value(text, "socialpulse_cost_per_lead", **FB, currency="USD") == 4.0
    assert metric_value(text, "socialpulse_cost_per_acquisition", **FB, currency="USD") == 20.0  # $40 / 2 new customers
    assert metric_value(text, "socialpulse_leads", platform="instagram", account="acme", window="5m") is None
    # each of the 3 orders' shopper visited once from facebook (30 s) before buying
    assert metric_value(text, "socialpulse_sessions_before_purchase", **FB) == 1.0
    assert metric_value(text, "socialpulse_time_on_site_before_purchase_seconds", **FB) == 30.0


def test_checkouts_abandoned_by_the_source_of_the_last_touch(run):
    worker, *_ = run

    def checkouts():
        text = worker.metrics()
        return {(src, outcome): metric_value(text, "socialpulse_checkouts_total", source=src, outcome=outcome)
                for src in ("facebook", "direct", "search") for outcome in ("started", "completed", "abandoned")}

    want = {("facebook", "started"): 3, ("facebook", "completed"): 2, ("facebook", "abandoned"): 1,
            ("direct", "started"): 1, ("direct", "completed"): 1, ("direct", "abandoned"): None,
            ("search", "started"): 1, ("search", "completed"): None, ("search", "abandoned"): 1}
    seen: list[dict] = [{}]

    def settled() -> bool:
        seen[0] = checkouts()
        return seen[0] == want

    try:
        wait_until(settled, 150, what="checkouts by source")
    except AssertionError:
        lines = [ln for ln in worker.metrics().splitlines() if "checkout" in ln and not ln.startswith("#")]
        raise AssertionError(f"checkouts by source: {seen[0]}, want {want}; on /metrics: {lines}") from None


def test_api_funnel_block_agrees(run):
    worker, *_ = run
    body = orjson.loads(worker.get("/api/v1/accounts/facebook/acme")[1])
    funnel, conversion = body["funnel"]["windows"]["5m"], body["conversion"]["windows"]["5m"]
    assert funnel["leads"] == 10 and funnel["leads_by_kind"] == {"form": 2, "signup": 8}
    assert Decimal(funnel["cost_per_lead"]["USD"]) == 4 and funnel["campaigns"]["post"]["leads"] == 10
    assert Decimal(funnel["campaigns"]["post"]["cost_per_lead"]["USD"]) == 4
    assert conversion["new_customers"] == 2 and Decimal(conversion["cost_per_acquisition"]["USD"]) == 20


def test_closed_window_results_agree(run):
    worker, b, broker = run
    wait_until(lambda: (metric_value(worker.metrics(), "socialpulse_results_published_total", family="funnel") or 0) >= 5, 60,
               what="funnel results")
    records = [orjson.loads(m.value()) for m in consume_all(broker, PREFIX + "socialpulse.results", expect=30)]
    mine = {(r["family"], r["metric"], r.get("currency"), r.get("campaign_id")): r for r in records
            if r["window_start"] == iso(b) and r["platform"] == "facebook" and r["account_id"] == "acme"}
    assert mine[("funnel", "leads", None, None)]["value"] == 10
    assert mine[("funnel", "leads", None, None)]["by_kind"] == {"form": 2, "signup": 8}
    assert mine[("funnel", "lead_rate", None, None)]["value"] == 0.1
    assert mine[("funnel", "social_sessions", None, None)]["value"] == 20
    assert mine[("funnel", "cost_per_lead", "USD", None)]["value"] == 4.0
    assert mine[("funnel", "campaign_cost_per_lead", "USD", "post")]["value"] == 4.0
    assert mine[("conversion", "new_customers", None, None)]["value"] == 2
    assert mine[("conversion", "cost_per_acquisition", "USD", None)]["value"] == 20.0
