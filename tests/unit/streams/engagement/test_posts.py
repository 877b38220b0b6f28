"""Per-post results and the organic / paid click-through rate of the engagement family
(streams/engagement/), without Kafka: values computed by hand from a handful of events, a
cancelled order's negative credit, a late correction re-published under the same keys, and
aggregates written before these fields existed."""

import json
import time
from decimal import Decimal
from pathlib import Path

import pytest

from schemas.events import Audience, Click, Credit, Impression, Lead, Like
from schemas.results import Result
from streams import windows
from streams.engagement import Engagement
from streams.engagement import metrics as m
from streams.keyed import Forwarded, KeyedStage, StageOutput
from streams.windows import Mark, WindowSpec
from tests.fixtures import state_scenario as sc

MIN = 60_000
SPEC = WindowSpec(bucket_ms=MIN, trailing_ms=(60 * MIN,), closed_ms=(60 * MIN,), grace_ms=5 * MIN, allowed_ms=180 * MIN)
KEY = "instagram|shop"
ACCT = {"platform": "instagram", "account_id": "shop"}


@pytest.fixture
def t0() -> int:
    now = int(time.time() * 1000)
    return now - now % (60 * MIN) - 2 * 60 * MIN  # an hour, two hours ago


def credit(eid: str, ts: int, post: str | None, amount: str, currency: str = "EUR", order: str = "o1") -> Credit:
    # every model credits something; only last touch counts per post
    return Credit(event_id=eid, ts=ts, **ACCT, post_id=post, order_id=order, currency=currency,
                  revenue={"last_touch": Decimal(amount), "linear": Decimal(amount) / 2})


def scenario(t0: int) -> list:
    """p1: 3 likes, 1000 organic + 500 paid impressions, 3 organic + 1 paid clicks, 2 leads,
    EUR 50 and USD 20; p2: 1 like, 500 paid impressions, 2 paid clicks, EUR 80 credited then
    taken back (a cancelled order) and EUR 30; p3: only an organic click and a lead. Plus a
    click, a lead and a credit that name no post, and 2000 followers."""
    ev: list = [Audience(event_id="a", ts=t0, **ACCT, followers=2000)]
    ev += [Like(event_id=f"l1{i}", ts=t0 + i, **ACCT, post_id="p1", actor_id=f"u{i}") for i in range(3)]
    ev += [Like(event_id="l2", ts=t0 + 10, **ACCT, post_id="p2", actor_id="u9", kind="comment")]
    ev += [Impression(event_id="i1", ts=t0 + 20, **ACCT, post_id="p1", count=1000),
           Impression(event_id="i1p", ts=t0 + 21, **ACCT, post_id="p1", count=500, paid=True),
           Impression(event_id="i2p", ts=t0 + 22, **ACCT, post_id="p2", count=500, paid=True)]
    ev += [Click(event_id=f"c1{i}", ts=t0 + 30 + i, **ACCT, actor_id=f"u{i}", post_id="p1", paid=i == 3) for i in range(4)]
    ev += [Click(event_id=f"c2{i}", ts=t0 + 40 + i, **ACCT, actor_id=f"v{i}", post_id="p2", paid=True) for i in range(2)]
    ev += [Click(event_id="c3", ts=t0 + 50, **ACCT, actor_id="w", post_id="p3"),
           Click(event_id="c-", ts=t0 + 51, **ACCT, actor_id="x")]  # no post
    ev += [Lead(event_id=f"d1{i}", ts=t0 + 60 + i, **ACCT, actor_id=f"u{i}", post_id="p1") for i in range(2)]
    ev += [Lead(event_id="d3", ts=t0 + 62, **ACCT, actor_id="w", post_id="p3"),
           Lead(event_id="d-", ts=t0 + 63, **ACCT, actor_id="x")]  # no post
    ev += [credit("k1", t0 + 70, "p1", "50.000000"), credit("k1u", t0 + 71, "p1", "20.000000", "USD", "o2"),
           credit("k2", t0 + 72, "p2", "80.000000", order="o3"), credit("k2x", t0 + 73, "p2", "-80.000000", order="o3"),
           credit("k2b", t0 + 74, "p2", "30.000000", order="o4"),
           credit("k3", t0 + 75, "p3", "0.000000", order="o4"),  # an earlier touch: no last-touch credit
           credit("k-", t0 + 76, None, "99.000000", order="o5")]  # a click without a post
    return ev


P1 = {"post_id": "p1", "engagements": 3, "impressions": 1500, "engagement_rate": 3 / 1500,
      "engagement_rate_by_followers": 3 / 2000, "clicks": 4, "click_through_rate": 4 / 1500, "leads": 2,
      "revenue": {"EUR": "50.000000", "USD": "20.000000"}}
P2 = {"post_id": "p2", "engagements": 1, "impressions": 500, "engagement_rate": 1 / 500,
      "engagement_rate_by_followers": 1 / 2000, "clicks": 2, "click_through_rate": 2 / 500, "leads": 0,
      "revenue": {"EUR": "30.000000"}}
P3 = {"post_id": "p3", "engagements": 0, "impressions": 0, "engagement_rate": None,
      "engagement_rate_by_followers": 0.0, "clicks": 1, "click_through_rate": None, "leads": 1, "revenue": {}}


def closed(fam: Engagement, state, t0: int):
    (cw,) = windows.close_due(state["win"], t0 + 66 * MIN, SPEC)
    return cw, fam.results(KEY, cw, state, 0)


def test_a_closed_window_publishes_the_per_post_table_and_top_posts_by_revenue(t0):
    fam = Engagement(SPEC, top_n=10)
    state = fam.new_state()
    fam.apply(KEY, state, scenario(t0), t0)
    _, results = closed(fam, state, t0)
    by = {(r.metric, getattr(r, "type", None) or getattr(r, "currency", None)): r for r in results}
    posts = by[("posts", None)]
    assert posts.value == 3 and (posts.page, posts.pages, posts.followers) == (0, 1, 2000)
    assert posts.posts == [P1, P2, P3]
    assert posts.key == f"posts|instagram|shop|1h|{windows.iso(t0)}|0"
    assert by[("top_posts_by_revenue", "EUR")].top_posts_by_revenue == [
        {"post_id": "p1", "revenue": "50.000000"}, {"post_id": "p2", "revenue": "30.000000"}]
    assert by[("top_posts_by_revenue", "USD")].top_posts_by_revenue == [{"post_id": "p1", "revenue": "20.000000"}]
    assert by[("top_posts_by_revenue", "EUR")].key.endswith("|EUR")
    # the mean over p1 and p2 (p3 had neither engagements nor impressions): (3 + 1) / 2 / 2000
    per_post = by[("post_engagement_rate_by_followers", None)]
    assert per_post.value == 0.001 and (per_post.followers, per_post.posts_counted) == (2000, 2)
    # organic: 5 clicks (3 on p1, p3's, the one without a post) / 1000; paid: 3 / 1000
    assert by[("click_through_rate_by_type", "organic")].value == 0.005
    assert by[("click_through_rate_by_type", "paid")].value == 0.003
    assert by[("click_through_rate", None)].value == 8 / 2000  # the account total is unchanged
    assert len({r.key for r in results}) == len(results)


def test_gauges_and_api_view_agree_with_the_closed_window(t0):
    fam = Engagement(SPEC, top_n=1)
    state = fam.new_state()
    fam.apply(KEY, state, scenario(t0), t0)
    wm = t0 + 10 * MIN
    samples = {(name, labels[3:]): v for name, labels, v in fam.samples(KEY, state, wm)}
    assert samples[("socialpulse_post_engagement_rate_by_followers", ())] == 0.001
    assert samples[("socialpulse_click_through_rate_by_type", ("organic",))] == 0.005
    assert samples[("socialpulse_click_through_rate_by_type", ("paid",))] == 0.003
    view = fam.view(KEY, state, wm)["windows"]["1h"]
    assert view["posts"] == [P1, P2, P3]
    assert view["top_posts_by_revenue"] == {"EUR": [{"post_id": "p1", "revenue": "50.000000"}],
                                            "USD": [{"post_id": "p1", "revenue": "20.000000"}]}
    assert view["click_through_rate_by_type"] == {"organic": 0.005, "paid": 0.003}
    assert view["post_engagement_rate_by_followers"] == 0.001


def test_no_paid_impressions_means_no_paid_ctr_and_no_posts_no_per_post_rate():
    agg = m.empty()
    assert m.click_through_rate_by_type(agg) == {"organic": None, "paid": None}
    assert m.post_engagement_rate_by_followers(agg, 1000) is None
    m.fold(agg, Click(event_id="c", ts=sc.T0, **ACCT, actor_id="u", paid=True))
    m.fold(agg, Impression(event_id="i", ts=sc.T0, **ACCT, post_id="p", count=40))
    assert m.click_through_rate_by_type(agg) == {"organic": 0.0, "paid": None}  # a paid click, organic reach only
    assert m.post_engagement_rate_by_followers(agg, 0) is None
    # a post seen, not engaged with: the mean is over posts engaged with (the trailing buckets
    # keep engagements per post, not impressions per post)
    assert m.post_engagement_rate_by_followers(agg, 1000) is None


def test_a_cancellation_in_a_later_window_makes_that_window_negative_and_out_of_the_top():
    agg = m.empty()
    m.fold(agg, credit("x", sc.T0, "p1", "-50.000000"))
    assert m.post_table(agg, None)[0]["revenue"] == {"EUR": "-50.000000"}
    assert m.top_posts_by_revenue(agg, 10) == {}


def test_a_busy_window_is_published_in_pages_under_stable_keys(t0, monkeypatch):
    monkeypatch.setattr("streams.engagement.family.POSTS_PER_RESULT", 2)
    fam = Engagement(SPEC)
    state = fam.new_state()
    fam.apply(KEY, state, [Like(event_id=f"l{i}", ts=t0 + i, **ACCT, post_id=f"p{i}", actor_id="u") for i in range(5)], t0)
    _, results = closed(fam, state, t0)
    pages = [r for r in results if r.metric == "posts"]
    assert [(r.page, r.pages, r.value, [p["post_id"] for p in r.posts]) for r in pages] == [
        (0, 3, 5, ["p0", "p1"]), (1, 3, 5, ["p2", "p3"]), (2, 3, 5, ["p4"])]
    assert [r.key.rsplit("|", 1)[1] for r in pages] == ["0", "1", "2"]


# -- through the keyed stage: late data, and state written before these fields ------------

def forwarded(i: int, topic: str, event) -> Forwarded:
    derived = topic == "credits"
    return Forwarded(topic, topic, -1 if derived else 0, -1 if derived else i, KEY, event, not derived)


def test_a_late_cancellation_republishes_the_posts_with_the_next_revision(t0):
    fam = Engagement(SPEC)
    stage = KeyedStage("account", SPEC, [fam], dedup_horizon_ms=10 * MIN, idle_ms=0)
    stage.mark(0, {"likes/0": Mark(False, 0, False, int(time.time() * 1000))})
    stage.tick(StageOutput(), ["likes/0"])
    out = StageOutput()
    events = [("audience", Audience(event_id="a", ts=t0, **ACCT, followers=1000)),
              ("likes", Like(event_id="l", ts=t0 + 1, **ACCT, post_id="p1", actor_id="u")),
              ("impressions", Impression(event_id="i", ts=t0 + 2, **ACCT, post_id="p1", count=200, paid=True)),
              ("credits", credit("k", t0 + 3, "p1", "40.000000"))]
    stage.process(0, [forwarded(i, t, e) for i, (t, e) in enumerate(events)], out)
    stage.process(0, [forwarded(9, "likes", Like(event_id="l9", ts=t0 + 70 * MIN, **ACCT, post_id="p9", actor_id="u"))], out)
    first = {r.metric: r for r in out.results if r.window_start == windows.iso(t0)}
    assert first["posts"].revision == 0 and first["posts"].posts[0]["revenue"] == {"EUR": "40.000000"}
    assert first["top_posts_by_revenue"].top_posts_by_revenue == [{"post_id": "p1", "revenue": "40.000000"}]
    assert first["click_through_rate_by_type"].value == 0.0 and first["click_through_rate_by_type"].type == "paid"

    late = StageOutput()  # the order is cancelled: its credit, at the order's time, comes back negative
    stage.process(0, [forwarded(10, "credits", credit("k~", t0 + 3, "p1", "-40.000000"))], late)
    again = {r.metric: r for r in late.results if isinstance(r, Result)}
    assert again["posts"].key == first["posts"].key and again["posts"].revision == 1
    assert again["posts"].posts == [{
        "post_id": "p1", "engagements": 1, "impressions": 200, "engagement_rate": 0.005,
        "engagement_rate_by_followers": 0.001, "clicks": 0, "click_through_rate": 0.0, "leads": 0,
        "revenue": {}}]  # credited and taken back: no revenue (the revision replaces the row whole)
    assert "top_posts_by_revenue" not in again  # nothing positive left to rank


def test_aggregates_written_before_the_per_post_fields_merge_and_publish():
    old = {"eng": 3, "kinds": {"like": 3}, "imp": 100, "clk": 1, "posts": {"p1": 2, "p2": 1}, "f0": None, "f1": None}
    part = m.empty()
    m.fold(part, Impression(event_id="i", ts=sc.T0, **ACCT, post_id="p1", count=50, paid=True))
    m.fold(part, Lead(event_id="d", ts=sc.T0, **ACCT, actor_id="u", post_id="p2"))
    into_old = json.loads(json.dumps(old))
    m.merge(into_old, part)
    into_new = m.empty()
    m.merge(into_new, part)
    m.merge(into_new, json.loads(json.dumps(old)))
    for agg in (into_old, into_new):
        assert (agg["imp"], agg["impp"], agg["pi"], agg["pl"]) == (150, 50, {"p1": 50}, {"p2": 1})
        assert m.click_through_rate_by_type(agg) == {"organic": 0.01, "paid": 0.0}
    # an old aggregate alone: its posts' engagements, nothing else
    assert [(r["post_id"], r["engagements"], r["impressions"]) for r in m.post_table(old, 10)] == [("p1", 2, 0), ("p2", 1, 0)]
    assert m.click_through_rate_by_type(old) == {"organic": 0.01, "paid": None}


def test_state_of_the_released_format_restores_and_a_late_impression_corrects_its_posts():
    fixture = Path(sc.__file__).with_name("state-v1.json")
    h = sc.Harness()
    h.changelog = json.loads(fixture.read_text())["changelog"]
    h = sc.Harness(h.restore())
    h.arrived = sc.T0 + 200_000
    view = h.stages["account"].view("instagram|brand-a")["engagement"]["windows"]["1h"]
    assert [(p["post_id"], p["engagements"]) for p in view["posts"]] == [("p1", 2), ("p2", 1)]
    assert view["click_through_rate_by_type"] == {"organic": 0.01, "paid": None}
    # a paid impression 15 s into the restored, already published first minute
    h.event("impressions", {"event_id": "i9", "ts": sc.T0 + 15_000, "platform": "instagram", "account_id": "brand-a",
                            "post_id": "p2", "count": 100, "paid": True})
    got = {(r.metric, getattr(r, "type", None)): r for r in h.results if r.window == "1m"}
    # the 1m window is corrected (revision 1); per-post tables are the 1h and 1d windows' only
    assert ("posts", None) not in got
    assert got[("click_through_rate_by_type", "paid")].value == 0.0
    assert got[("click_through_rate_by_type", "paid")].revision == 1
    view = h.stages["account"].view("instagram|brand-a")["engagement"]["windows"]["1h"]
    assert [(p["post_id"], p["engagements"], p["impressions"]) for p in view["posts"]] == [("p1", 2, 0), ("p2", 1, 100)]
    assert got[("click_through_rate_by_type", "organic")].value == 0.01  # 1 click / 100 organic


def test_leads_and_credits_without_a_post_leave_no_engagement_state(t0):
    fam = Engagement(SPEC)
    state = fam.new_state()
    fam.apply("direct|direct", state, [credit("k", t0, None, "10.000000"),
                                       Lead(event_id="d", ts=t0, **ACCT, actor_id="u")], t0)
    assert fam.is_empty(state)


def test_a_post_whose_credits_net_to_zero_is_not_in_the_table_whatever_came_first():
    # an order credited to p3, then re-credited to p1 by a late click: p3's credit is taken
    # back. In event-time order p3 may never have been credited; either way it has no row
    for order in ((+1, -1), (-1, +1)):
        agg = m.empty()
        for i, sign in enumerate(order):
            m.fold(agg, credit(f"k{i}", sc.T0, "p3", f"{sign * 40}.000000"))
        m.fold(agg, credit("k9", sc.T0, "p1", "40.000000"))
        assert [r["post_id"] for r in m.post_table(agg, 1000)] == ["p1"]
        assert m.top_posts_by_revenue(agg, 10) == {"EUR": [{"post_id": "p1", "revenue": "40.000000"}]}


def test_a_window_with_only_credits_that_net_to_zero_publishes_nothing(t0):
    fam = Engagement(SPEC)
    state = fam.new_state()
    fam.apply(KEY, state, [credit("k", t0 + 5, "p3", "40.000000"), credit("k~", t0 + 6, "p3", "-40.000000")], t0)
    cw, results = closed(fam, state, t0)
    assert m.is_void(cw.agg) and results == []
