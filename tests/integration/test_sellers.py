"""Sellers end to end on a real broker and worker: a team of three sellers across two platforms
(posts, shares, comments on prospects' posts, likes on their posts arriving before and after the
post, connections with decision makers, outreach and replies, referred leads and orders, one
refund). Every metric, the index and its pillars are checked against values computed here, on
the API, the results topic (the day, revision 0) and /metrics."""

from __future__ import annotations

import time
from decimal import Decimal

import orjson
import pytest
from confluent_kafka import Producer

from streams.sellers import index as ix
from streams.windows import iso

from ..helpers import consume_all, metric_value, spawn_worker, stop_process, wait_until, worker_env

pytestmark = [pytest.mark.integration]
PREFIX = "sel."
DAY = 86_400_000
LI = {"platform": "linkedin", "account_id": "acme"}
XA = {"platform": "x", "account_id": "acme"}


def script(y: int) -> list[tuple[str, dict]]:
    """Yesterday's events (``y`` = yesterday 10:00 UTC), in the order they are produced."""
    n = 0

    def ev(topic: str, at_s: float, **fields) -> tuple[str, dict]:
        nonlocal n
        n += 1
        return topic, {"event_id": f"sel-{topic}-{n}", "ts": iso(y + int(at_s * 1000))} | fields

    def msg(base: dict, cid: str, at_s: float, direction: str, who: str) -> tuple[str, dict]:
        agent = {"agent_id": who} if direction == "outbound" else {}
        return ev("messages", at_s, **base, conversation_id=cid, direction=direction, author_id=who, **agent)

    out = [
        # ana on linkedin: a like that comes before its post
        ev("likes", 70, **LI, post_id="li-p1", actor_id="u1"),
        ev("posts", 0, **LI, post_id="li-p1", author_id="ana"),
        ev("posts", 3600, **LI, post_id="li-p2", author_id="ana", kind="original"),
        ev("posts", 7200, **LI, post_id="li-s1", author_id="ana", kind="share", target_post_id="prospect-9"),
        ev("likes", 80, **LI, post_id="li-p1", actor_id="u2", kind="comment"),
        ev("likes", 90, **LI, post_id="li-p1", actor_id="u3"),
        ev("likes", 7300, **LI, post_id="li-s1", actor_id="u1", kind="share"),
        ev("likes", 7400, **LI, post_id="li-s1", actor_id="u4"),
        ev("likes", 100, **LI, post_id="brand-post", actor_id="u9"),  # the brand's own post: nobody's
        ev("impressions", 60, **LI, post_id="li-p1", count=500),
        # ana's connections: 3 sent, 2 accepted (1 decision maker), 1 removed later
        *[ev("connections", 200 + i, **LI, author_id="ana", actor_id=f"c{i}", status="requested") for i in range(3)],
        ev("connections", 300, **LI, author_id="ana", actor_id="c0", status="accepted", decision_maker=True),
        ev("connections", 301, **LI, author_id="ana", actor_id="c1", status="accepted"),
        ev("connections", 5000, **LI, author_id="ana", actor_id="c1", status="removed"),
        # ana's outreach: the prospect answers after 10 min, ana replies 5 min later (read before the answer)
        msg(LI, "li-out", 1000, "outbound", "ana"),
        msg(LI, "li-out", 1900, "outbound", "ana"),
        msg(LI, "li-out", 1600, "inbound", "prospect1"),
        # a customer's question, ana answers after 2 min; cust1's DM lead is read before the conversation
        ev("leads", 2200, **LI, actor_id="cust1", kind="dm"),
        ev("orders", 2500, order_id="o-dm", actor_id="cust1", amount="70.00", currency="USD"),  # a sale of that talk
        msg(LI, "li-c1", 2000, "inbound", "cust1"),
        msg(LI, "li-c1", 2120, "outbound", "ana"),
        # a shopper clicks ana's post, leaves a lead and buys 100 USD (a new customer for her post)
        ev("clicks", 400, **LI, actor_id="s1", post_id="li-p1", click_id="k1"),
        ev("leads", 450, **LI, actor_id="s1", post_id="li-p1", kind="form"),
        ev("orders", 500, order_id="o1", actor_id="s1", amount="100.00", currency="USD", click_id="k1"),
        # ben on linkedin: a comment on a prospect's post (1 like), connections, referrals
        ev("posts", 800, **LI, post_id="li-c9", author_id="ben", kind="comment", target_post_id="prospect-7"),
        ev("likes", 900, **LI, post_id="li-c9", actor_id="u5"),
        *[ev("connections", 1000 + i, **LI, author_id="ben", actor_id=f"d{i}", status="requested") for i in range(4)],
        *[ev("connections", 1100 + i, **LI, author_id="ben", actor_id=f"d{i}", status="accepted",
             decision_maker=i < 2) for i in range(3)],
        ev("leads", 1200, **LI, actor_id="r1", kind="signup", referrer_id="ben"),
        ev("orders", 1300, order_id="o-r1", actor_id="r1", amount="60.00", currency="USD", referrer_id="ben"),
        ev("leads", 1400, **LI, actor_id="r2", kind="signup", referrer_id="ben"),
        ev("orders", 1500, order_id="o-r2", actor_id="r2", amount="40.00", currency="USD", referrer_id="ben"),
        ev("orders", 4000, order_id="o-r2", actor_id="r2", amount="40.00", currency="USD", status="refunded"),
        # cleo on x: an original whose like comes first, a conversation with a second, unanswered wait
        ev("likes", 120, **XA, post_id="x-p3", actor_id="u6"),
        ev("posts", 100, **XA, post_id="x-p3", author_id="cleo"),
        ev("likes", 130, **XA, post_id="x-p3", actor_id="u7", kind="reaction"),
        msg(XA, "x-c2", 3000, "inbound", "cust2"),
        msg(XA, "x-c2", 4800, "outbound", "cleo"),
        msg(XA, "x-c2", 6000, "inbound", "cust2"),
        # ana on x too: one post, one like
        ev("posts", 200, **XA, post_id="x-p4", author_id="ana"),
        ev("likes", 210, **XA, post_id="x-p4", actor_id="u8"),
    ]
    return out


#: what each seller did, as the index reads it (computed here from the script above)
WANT = {
    ("linkedin", "ana"): ix.Inputs(originals=2, original_engagement=3, accepted=2, decision_makers=1, outreach=1,
                                   outreach_answered=1, insights=1, insight_engagement=2, replies=2,
                                   reply_seconds=300 + 120, spells=2, answered=2),
    ("linkedin", "ben"): ix.Inputs(insights=1, insight_engagement=1, accepted=3, decision_makers=2),
    ("x", "cleo"): ix.Inputs(originals=1, original_engagement=2, replies=1, reply_seconds=1800, spells=2, answered=1),
    ("x", "ana"): ix.Inputs(originals=1, original_engagement=1),
}
ENGAGERS = {("linkedin", "ana"): 4, ("linkedin", "ben"): 1, ("x", "cleo"): 2, ("x", "ana"): 1}
IMPRESSIONS = {("linkedin", "ana"): 500}


def expected(platform: str, seller: str) -> dict:
    x = WANT[(platform, seller)]
    pillars = ix.pillars(x)
    return {"pillars": {p: str(v) for p, v in pillars.items()}, "selling_index": str(ix.index(pillars)),
            "influence": ix.influence(ENGAGERS[(platform, seller)], IMPRESSIONS.get((platform, seller), 0))}


@pytest.fixture(scope="module")
def run(broker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sellers")
    env = worker_env(broker, PREFIX, tmp / "data", SOCIALPULSE_GRACE="10s", SOCIALPULSE_IDLE="1s",
                     SOCIALPULSE_ALLOWED_LATENESS="3d")
    worker = spawn_worker(env, tmp)
    worker.wait_ready(60)
    now = int(time.time() * 1000)
    y = now - now % DAY - DAY + 10 * 3_600_000
    producer = Producer({"bootstrap.servers": broker})
    for topic, value in script(y):
        producer.produce(PREFIX + topic, orjson.dumps(value))
        producer.flush(5)  # in this order: a like before its post, a reply before what it answers
    wait_until(lambda: metric_value(worker.metrics(), "socialpulse_seller_referrals", platform="linkedin",
                                    account="acme", seller="ben", kind="order") == 1, 60,
               what="ben's referred order, net of the refund")
    wait_until(lambda: metric_value(worker.metrics(), "socialpulse_seller_new_customers", platform="linkedin",
                                    account="acme", seller="ana") == 2, 60, what="ana's new customers (post, conversation)")
    yield worker, y, broker
    stop_process(worker.proc)


def api(worker, platform: str, seller: str) -> dict:
    status, body = worker.get(f"/api/v1/sellers/{platform}/acme/{seller}")
    assert status == 200, body
    return orjson.loads(body)


def test_every_metric_on_the_api(run):
    worker, *_ = run
    ana = api(worker, "linkedin", "ana")
    assert ana["posts"] == {"original": 2, "share": 1, "comment": 0}
    assert (ana["engagements"], ana["engagements_on_originals"], ana["engagements_on_insights"]) == (5, 3, 2)
    assert ana["engagers"] == 4 and ana["impressions"] == 500  # u1 liked twice: one person
    assert ana["connections"] == {"requested": 3, "accepted": 2, "removed": 1}
    assert ana["acceptance_rate"] == pytest.approx(2 / 3) and ana["decision_makers"] == 1 and ana["network_size"] == 1
    assert (ana["clicks"], ana["leads"], ana["new_customers"]) == (1, 2, 2)  # a lead from her post, one from a DM
    assert (ana["leads_from_posts"], ana["leads_from_conversations"]) == (1, 1)
    assert (ana["new_customers_from_posts"], ana["new_customers_from_conversations"]) == (1, 1)
    # 100 USD by the click on her post, 70 USD by the shopper she talked with (a DM lead before the order)
    assert {k: Decimal(v) for k, v in ana["attributed_revenue"].items()} == {"USD": Decimal(170)}
    assert {k: Decimal(v) for k, v in ana["revenue_from_conversations"].items()} == {"USD": Decimal(70)}
    assert (ana["replies"], ana["mean_reply_seconds"], ana["response_rate"]) == (2, 210.0, 1.0)
    assert (ana["outreach"], ana["outreach_answered"], ana["prospect_response_rate"]) == (1, 1, 1.0)
    assert ana["referrals"]["orders"] == 0 and ana["window"] == "28d"
    for key in ("pillars", "selling_index", "influence"):
        assert ana[key] == expected("linkedin", "ana")[key], key
    ben = api(worker, "linkedin", "ben")
    assert ben["posts"] == {"original": 0, "share": 0, "comment": 1} and ben["engagements_on_insights"] == 1
    assert ben["connections"] == {"requested": 4, "accepted": 3, "removed": 0} and ben["acceptance_rate"] == 0.75
    assert ben["decision_makers"] == 2 and ben["network_size"] == 3
    ref = ben["referrals"]
    # two referred leads, two orders of which one was refunded: 1 order, 60 USD, 1 new customer of
    # the team's 3 (ana's by her post and by her conversation, ben's referred one)
    assert (ref["leads"], ref["orders"], ref["new_customers"], ref["repeat_customers"]) == (2, 1, 1, 0)
    assert {k: Decimal(v) for k, v in ref["revenue"].items()} == {"USD": Decimal(60)}
    assert ref["customer_share"] == pytest.approx(1 / 3)
    for key in ("pillars", "selling_index", "influence"):
        assert ben[key] == expected("linkedin", "ben")[key], key
    cleo = api(worker, "x", "cleo")
    assert cleo["posts"]["original"] == 1 and cleo["engagements"] == 2 and cleo["engagers"] == 2
    assert (cleo["replies"], cleo["mean_reply_seconds"], cleo["response_rate"]) == (1, 1800.0, 0.5)
    for key in ("pillars", "selling_index", "influence"):
        assert cleo[key] == expected("x", "cleo")[key], key
    ana_x = api(worker, "x", "ana")  # a seller on two platforms: each account's numbers on their own
    assert ana_x["posts"]["original"] == 1 and ana_x["selling_index"] == expected("x", "ana")["selling_index"]
    assert ana["team_size"] == 2 and ana_x["team_size"] == 2
    assert worker.get("/api/v1/sellers/linkedin/acme/nobody")[0] == 404


def test_the_index_and_outcomes_on_metrics(run):
    worker, *_ = run
    text = worker.metrics()
    for (platform, seller) in WANT:
        labels = {"platform": platform, "account": "acme", "seller": seller, "window": "28d"}
        want = expected(platform, seller)
        assert metric_value(text, "socialpulse_selling_index", **labels) == float(want["selling_index"])
        for pillar, v in want["pillars"].items():
            assert metric_value(text, "socialpulse_selling_index_pillar", **labels, pillar=pillar) == float(v)
        assert metric_value(text, "socialpulse_seller_influence", **labels) == want["influence"]
    ana = {"platform": "linkedin", "account": "acme", "seller": "ana", "window": "28d"}
    assert metric_value(text, "socialpulse_seller_attributed_revenue", **ana, currency="USD") == 170
    assert metric_value(text, "socialpulse_seller_posts", **ana, kind="share") == 1
    assert metric_value(text, "socialpulse_seller_connections", **ana, status="accepted") == 2
    assert metric_value(text, "socialpulse_seller_network_size", platform="linkedin", account="acme", seller="ana") == 1
    ben = ana | {"seller": "ben"}
    assert metric_value(text, "socialpulse_seller_referral_revenue", **ben, currency="USD") == 60
    assert metric_value(text, "socialpulse_seller_referral_customer_share", **ben) == pytest.approx(1 / 3)
    team = {"platform": "linkedin", "account": "acme", "window": "28d"}
    assert metric_value(text, "socialpulse_team_sellers", **team) == 2
    mean = (Decimal(expected("linkedin", "ana")["selling_index"]) + Decimal(expected("linkedin", "ben")["selling_index"])) / 2
    assert metric_value(text, "socialpulse_team_selling_index", **team) == float(mean)
    assert metric_value(text, "socialpulse_team_seller_revenue", **team, currency="USD") == 230
    assert 'seller="u1"' not in text and "li-p1" not in text  # no person or post id is a label


def test_yesterday_on_the_results_topic(run):
    worker, y, broker = run
    day = iso(y - y % DAY)

    def sellers_results() -> dict:
        latest: dict = {}
        for msg in consume_all(broker, PREFIX + "socialpulse.results", 10**6, 6):
            r = orjson.loads(msg.value())
            if r["family"] == "sellers" and r["window_start"] == day and r["revision"] >= latest.get(r["key"], {}).get("revision", -1):
                latest[r["key"]] = r
        return {(r["metric"], r["platform"], r["author_id"], r.get("currency")): r for r in latest.values()}

    def settled(s: dict) -> bool:
        """Every seller's day is out, at the revision that counts every event (a forwarded referral or
        sale may correct a day already published: the test waits for that revision, not the first)."""
        ben = s.get(("seller_referrals", "linkedin", "ben", None), {})
        revenue = s.get(("seller_attributed_revenue", "linkedin", "ana", "USD"), {})
        return (all(("selling_index", p, a, None) in s for p, a in WANT) and ben.get("orders") == 1
                and ben.get("new_customers") == 1 and revenue.get("value") == 170)

    got = wait_until(lambda: (s := sellers_results()) and settled(s) and s, 90, what="yesterday's sellers results")
    for (platform, seller) in WANT:
        r = got[("selling_index", platform, seller, None)]
        want = expected(platform, seller)
        assert (r["value"], r["pillars"], r["trailing_window"]) == (float(want["selling_index"]), want["pillars"], "28d")
        assert r["window"] == "1d" and r["account_id"] == "acme"
        assert got[("seller_influence", platform, seller, None)]["value"] == want["influence"]
    assert got[("seller_posts", "linkedin", "ana", None)]["by_kind"] == {"original": 2, "share": 1, "comment": 0}
    assert got[("seller_engagements", "linkedin", "ana", None)]["value"] == 5
    revenue = got[("seller_attributed_revenue", "linkedin", "ana", "USD")]
    assert (revenue["value"], Decimal(revenue["from_posts"]), Decimal(revenue["from_conversations"])) == (170, 100, 70)
    customers = got[("seller_new_customers", "linkedin", "ana", None)]
    assert (customers["value"], customers["from_posts"], customers["from_conversations"]) == (2, 1, 1)
    leads = got[("seller_leads", "linkedin", "ana", None)]
    assert (leads["value"], leads["from_posts"], leads["from_conversations"]) == (2, 1, 1)
    ben = got[("seller_referrals", "linkedin", "ben", None)]
    assert (ben["leads"], ben["orders"], ben["new_customers"], ben["revenue"]) == (2, 1, 1, {"USD": "60.00"})
    acc = got[("seller_connections_accepted", "linkedin", "ben", None)]
    assert (acc["value"], acc["requested"], acc["decision_makers"]) == (3, 4, 2)
