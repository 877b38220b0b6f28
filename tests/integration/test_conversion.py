"""Conversion end to end on a real broker: the worked example (CPA $20), actors with
one, two and many touches across platforms, a click_id order, an order outside the
lookback, a refund and mixed currencies; equal on /metrics, results and the API."""

from __future__ import annotations

import time
from decimal import Decimal

import orjson
import pytest
from confluent_kafka import Producer

from streams.conversion.attribution import credits
from streams.windows import iso

from ..helpers import consume_all, metric_value, spawn_worker, stop_process, wait_until, worker_env

pytestmark = pytest.mark.integration
PREFIX = "conv."




@pytest.fixture(scope="module")
def run(broker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conv")
    env = worker_env(
        broker, PREFIX, tmp / "data", SOCIALPULSE_BUCKET="1s", SOCIALPULSE_TRAILING_WINDOWS="5m",
        SOCIALPULSE_CLOSED_WINDOWS="10s", SOCIALPULSE_GRACE="15s", SOCIALPULSE_IDLE="1s",
        SOCIALPULSE_ATTRIBUTION_LOOKBACK="30s",
    )
    worker = spawn_worker(env, tmp)
    worker.wait_ready(60)
    b = (int(time.time() * 1000) // 10_000 + 1) * 10_000
    s = 1000
    n = 0

    def ev(topic, ts, **fields):
        nonlocal n
        n += 1
        return topic, {"event_id": f"{topic}-{n}", "ts": iso(ts)} | fields

    def click(ts, actor, platform, account, campaign, click_id=None):
        return ev("clicks", ts, platform=platform, account_id=account, actor_id=actor, campaign_id=campaign,
                  **({"click_id": click_id} if click_id else {}))

    def order(ts, oid, actor, amount, currency, status="placed", click_id=None):
        return ev("orders", ts, order_id=oid, actor_id=actor, amount=amount, currency=currency, status=status,
                  **({"click_id": click_id} if click_id else {}))

    phase1 = [ev("spend", b, platform="facebook", account_id="acme", campaign_id="post", amount="40.00", currency="USD")]
    phase1 += [click(b + 1 * s, f"u{i}", "facebook", "acme", "post") for i in range(10)]
    phase1 += [order(b + 5 * s, "w0", "u0", "25.00", "USD"), order(b + 5 * s, "w1", "u1", "35.00", "USD")]
    phase1 += [  # m1: three touches on three platforms
        click(b + 2 * s, "m1", "instagram", "shop", "ig1"), click(b + 3 * s, "m1", "tiktok", "shop", "tt1"),
        click(b + 4 * s, "m1", "x", "shop", "x1", click_id="xk"), order(b + 6 * s, "m1o", "m1", "120.00", "EUR"),
        # m2: click_id pins the earlier of two touches
        click(b + 2 * s, "m2", "instagram", "shop", "ig1", click_id="p1"), click(b + 3 * s, "m2", "tiktok", "shop", "tt1", click_id="p2"),
        order(b + 6 * s, "m2o", "m2", "50.00", "USD", click_id="p1"),
        # m3: clicked, but orders only after the 30 s lookback (phase 2)
        click(b + 1 * s, "m3", "x", "shop", "x1"),
        # m4: one touch, refunded
        click(b + 2 * s, "m4", "tiktok", "shop", "tt1"), order(b + 5 * s, "m4o", "m4", "30.00", "USD"),
        order(b + 8 * s, "m4o", "m4", "30.00", "USD", status="refunded"),
    ]
    producer = Producer({"bootstrap.servers": broker})
    for topic, value in phase1:
        producer.produce(PREFIX + topic, orjson.dumps(value))
    assert producer.flush(15) == 0
    wait_until(lambda: metric_value(worker.metrics(), "socialpulse_attributed_orders", platform="x", account="shop", window="5m") == 1,
               40, what="credits applied")
    topic, value = order(b + 35 * s, "m3o", "m3", "10.00", "GBP")  # 34 s after its click: outside the 30 s lookback
    producer.produce(PREFIX + topic, orjson.dumps(value))
    assert producer.flush(15) == 0
    wait_until(lambda: metric_value(worker.metrics(), "socialpulse_unattributed_orders_total", currency="GBP") == 1, 90,
               what="unattributed order")
    yield worker, b, broker
    stop_process(worker.proc)


def td(i: int, amount: str) -> float:
    return float((Decimal(amount) * credits([4.0, 3.0, 2.0])["time_decay"][i]).quantize(Decimal("1e-6")))


EXPECTED = {  # (platform, account) -> {(model, currency): revenue}, orders, clicks
    ("facebook", "acme"): ({(m, "USD"): 60.0 for m in ("last_touch", "first_touch", "linear", "time_decay", "position_based")}, 2, 10),
    ("instagram", "shop"): ({("last_touch", "EUR"): 0.0, ("first_touch", "EUR"): 120.0, ("linear", "EUR"): 40.0,
                             ("position_based", "EUR"): 48.0, ("time_decay", "EUR"): td(0, "120"),
                             **{(m, "USD"): 50.0 for m in ("last_touch", "first_touch", "linear", "time_decay", "position_based")}}, 1, 2),
    ("tiktok", "shop"): ({("last_touch", "EUR"): 0.0, ("first_touch", "EUR"): 0.0, ("linear", "EUR"): 40.0,
                          ("position_based", "EUR"): 24.0, ("time_decay", "EUR"): td(1, "120"),
                          **{(m, "USD"): 0.0 for m in ("last_touch", "first_touch", "linear", "time_decay", "position_based")}}, 0, 3),
    ("x", "shop"): ({("last_touch", "EUR"): 120.0, ("first_touch", "EUR"): 0.0, ("linear", "EUR"): 40.0,
                     ("position_based", "EUR"): 48.0, ("time_decay", "EUR"): td(2, "120")}, 1, 2),
}


def test_revenue_per_model_and_platform_on_metrics(run):
    worker, *_ = run
    text = worker.metrics()
    for (platform, account), (revenue, orders, clicks) in EXPECTED.items():
        labels = {"platform": platform, "account": account, "window": "5m"}
        for (model, cur), amount in revenue.items():
            got = metric_value(text, "socialpulse_attributed_revenue", **labels, model=model, currency=cur)
            if amount == 0 and got is None:
                continue  # a refund that overtook its order leaves no series at all, which is also exact
            assert got == pytest.approx(amount, abs=1e-6), (platform, model, cur)
        assert metric_value(text, "socialpulse_attributed_orders", **labels) == orders, platform
        assert metric_value(text, "socialpulse_conversion_rate", **labels) == pytest.approx(orders / clicks), platform


def test_worked_example_cpa_twenty_dollars_on_metrics(run):
    worker, *_ = run
    text = worker.metrics()
    fb = {"platform": "facebook", "account": "acme", "window": "5m", "currency": "USD"}
    assert metric_value(text, "socialpulse_cost_per_acquisition", **fb) == 20.0
    assert metric_value(text, "socialpulse_return_on_investment", **fb) == 0.5
    assert metric_value(text, "socialpulse_average_order_value", **fb) == 30.0
    assert metric_value(text, "socialpulse_campaign_cost_per_acquisition", platform="facebook", account="acme", campaign="post",
                  window="5m", currency="USD") == 20.0


def test_api_conversion_block_agrees(run):
    worker, *_ = run
    body = orjson.loads(worker.get("/api/v1/accounts/facebook/acme")[1])["conversion"]["windows"]["5m"]
    assert body["attributed_orders"] == 2 and body["clicks"] == 10 and body["conversion_rate"] == 0.2
    assert Decimal(body["cost_per_acquisition"]["USD"]) == 20 and Decimal(body["return_on_investment"]["USD"]) == Decimal("0.5")
    ig = orjson.loads(worker.get("/api/v1/accounts/instagram/shop")[1])["conversion"]["windows"]["5m"]
    assert Decimal(ig["attributed_revenue"]["position_based"]["EUR"]) == 48
    assert Decimal(ig["attributed_revenue"]["last_touch"]["USD"]) == 50


def test_closed_window_results_agree(run):
    worker, b, broker = run
    wait_until(lambda: time.time() * 1000 > b + 10_000 + 15_000 + 2_000, 60, what="window closed")
    wait_until(lambda: (metric_value(worker.metrics(), "socialpulse_results_published_total", family="conversion") or 0) > 20, 30,
               what="conversion results")
    records = [orjson.loads(m.value()) for m in consume_all(broker, PREFIX + "socialpulse.results", expect=40)]
    mine = [r for r in records if r["family"] == "conversion" and r["window_start"] == iso(b)]
    by = {(r["platform"], r["account_id"], r["metric"], r.get("model"), r.get("currency"), r.get("campaign_id")): r["value"] for r in mine}
    for (platform, account), (revenue, orders, clicks) in EXPECTED.items():
        for (model, cur), amount in revenue.items():
            got = by.get((platform, account, "attributed_revenue", model, cur, None), 0.0 if amount == 0 else None)
            assert got == pytest.approx(amount, abs=1e-6)
        assert by[(platform, account, "attributed_orders", None, None, None)] == orders
        assert by[(platform, account, "conversion_rate", None, None, None)] == pytest.approx(orders / clicks)
    assert by[("facebook", "acme", "cost_per_acquisition", None, "USD", None)] == 20.0
    assert by[("facebook", "acme", "campaign_cost_per_acquisition", None, "USD", "post")] == 20.0
    keys = [r["key"] for r in mine]
    assert len(keys) == len(set(keys))
