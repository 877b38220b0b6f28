"""The sellers family (streams/sellers/) without Kafka: joins by post whatever comes first,
conversations decided by event time, daily results corrected by revision, the /metrics cap,
and referred orders joined to their referrer's account on the shopper's key."""

import random
import time
from decimal import Decimal

from schemas.events import Click, Connection, ConversationSale, Credit, Lead, Like, Message, Order, Post, Referral
from streams.sellers import Referrals, Sellers
from streams.sellers.family import DAY_MS
from streams.windows import WindowSpec
from streams.windows import iso as windows_iso

SPEC = WindowSpec(bucket_ms=60_000, trailing_ms=(3_600_000,), closed_ms=(3_600_000,), grace_ms=300_000,
                  allowed_ms=86_400_000)
KEY = "x|acme"
BASE = {"platform": "x", "account_id": "acme"}


def _t0() -> int:
    now = int(time.time() * 1000)
    return now - now % DAY_MS - 2 * DAY_MS + 3_600_000  # 01:00 two days ago


def _events(t0: int) -> list:
    return [
        Post(event_id="p1", ts=t0, **BASE, post_id="p1", author_id="ana"),
        Post(event_id="p2", ts=t0 + 10, **BASE, post_id="p2", author_id="ben", kind="comment", target_post_id="z"),
        Like(event_id="l1", ts=t0 + 1000, **BASE, post_id="p1", actor_id="u1"),
        Like(event_id="l2", ts=t0 + 2000, **BASE, post_id="p1", actor_id="u1", kind="comment"),
        Like(event_id="l3", ts=t0 + 3000, **BASE, post_id="p2", actor_id="u2"),
        Like(event_id="l4", ts=t0 + 3000, **BASE, post_id="brand-post", actor_id="u3"),  # not a seller's
        Click(event_id="k1", ts=t0 + 4000, **BASE, actor_id="s1", post_id="p1"),
        Lead(event_id="d1", ts=t0 + 5000, **BASE, actor_id="s1", post_id="p1", referrer_id="ben"),
        Credit(event_id="cr1", ts=t0 + 6000, **BASE, post_id="p1", order_id="o1", currency="EUR",
               revenue={"last_touch": Decimal("40"), "linear": Decimal("40")}, orders=1, customers=1),
        Connection(event_id="c1", ts=t0, **BASE, author_id="ben", actor_id="v", status="requested"),
        Connection(event_id="c2", ts=t0 + 1, **BASE, author_id="ben", actor_id="v", status="accepted", decision_maker=True),
        Connection(event_id="c3", ts=t0 + 2, **BASE, author_id="ben", actor_id="w", status="requested"),
        Message(event_id="m1", ts=t0 + 100_000, **BASE, conversation_id="c", direction="inbound", author_id="s9"),
        Message(event_id="m2", ts=t0 + 101_000, **BASE, conversation_id="c", direction="outbound", author_id="bot",
                automated=True),
        Message(event_id="m3", ts=t0 + 160_000, **BASE, conversation_id="c", direction="outbound", author_id="ana",
                agent_id="ana"),
        Lead(event_id="d2", ts=t0 + 150_000, **BASE, actor_id="s9", kind="dm"),  # from ana's conversation with s9
        Lead(event_id="d3", ts=t0 + 150_000, **BASE, actor_id="nobody", kind="dm"),  # from no conversation
        Message(event_id="m4", ts=t0 + 200_000, **BASE, conversation_id="o", direction="outbound", author_id="ben",
                agent_id="ben"),
        Message(event_id="m5", ts=t0 + 300_000, **BASE, conversation_id="o", direction="inbound", author_id="prospect"),
    ]


def test_every_arrival_order_gives_the_same_sellers():
    t0 = _t0()
    fam = Sellers(SPEC)
    views = []
    for seed in range(8):
        events = _events(t0)
        random.Random(seed).shuffle(events)
        state = fam.new_state()
        for i in range(0, len(events), 3):
            fam.apply(KEY, state, events[i:i + 3], t0 + 400_000)
        views.append(fam.view(KEY, state, t0 + 400_000))
    assert all(v == views[0] for v in views)
    ana, ben = views[0]["sellers"]["ana"], views[0]["sellers"]["ben"]
    assert ana["engagements"] == 2 and ana["engagers"] == 1 and ana["clicks"] == 1 and ana["leads"] == 2
    assert (ana["leads_from_posts"], ana["leads_from_conversations"]) == (1, 1)
    assert ana["new_customers"] == 1 and ana["attributed_revenue"] == {"EUR": "40"}
    assert ana["replies"] == 1 and ana["mean_reply_seconds"] == 60.0 and ana["response_rate"] == 1.0
    assert ben["posts"] == {"original": 0, "share": 0, "comment": 1} and ben["engagements_on_insights"] == 1
    assert ben["connections"] == {"requested": 2, "accepted": 1, "removed": 0} and ben["acceptance_rate"] == 0.5
    assert ben["decision_makers"] == 1 and ben["network_size"] == 1
    assert ben["outreach"] == 1 and ben["outreach_answered"] == 1 and ben["prospect_response_rate"] == 1.0
    assert ben["referrals"]["leads"] == 1
    assert views[0]["leaderboard"][0] in ("ana", "ben") and views[0]["team"]["sellers"] == 2


def test_a_day_is_published_then_corrected_by_revision_and_so_are_the_days_after_it():
    t0 = _t0()
    fam = Sellers(SPEC)
    state = fam.new_state()
    fam.apply(KEY, state, _events(t0), t0 + 400_000)
    day_end = t0 - t0 % DAY_MS + DAY_MS
    assert fam.close(KEY, state, day_end)[0] == []  # within grace
    out, changed = fam.close(KEY, state, day_end + SPEC.grace_ms)
    by = {(r.metric, r.author_id, getattr(r, "currency", None)): r for r in out}
    assert changed and {r.revision for r in out} == {0} and {r.family for r in out} == {"sellers"}
    assert by[("seller_engagements", "ana", None)].value == 2
    assert by[("seller_attributed_revenue", "ana", "EUR")].value == 40
    assert by[("seller_connections_accepted", "ben", None)].requested == 2
    assert fam.close(KEY, state, day_end + SPEC.grace_ms + 1000)[0] == []  # nothing changed: nothing again
    # a late like on day one (within the allowed lateness) corrects day one, next revision
    fam.apply(KEY, state, [Post(event_id="p3", ts=day_end + 1000, **BASE, post_id="p3", author_id="ana")], day_end + 2000)
    late = day_end + 7_200_000
    fam.apply(KEY, state, [Like(event_id="late", ts=t0 + 9000, **BASE, post_id="p1", actor_id="u7")], late)
    out, _ = fam.close(KEY, state, late)
    got = {(r.metric, r.author_id): r for r in out}
    assert got[("seller_engagements", "ana")].value == 3 and got[("seller_engagements", "ana")].revision == 1
    assert got[("selling_index", "ana")].revision == 1 and {r.window_end for r in out} == {windows_iso(day_end)}
    # the next day, published later, counts the late like in its trailing index
    out, _ = fam.close(KEY, state, day_end + DAY_MS + SPEC.grace_ms)
    nxt = {(r.metric, r.author_id): r for r in out}
    assert nxt[("seller_posts", "ana")].value == 1 and nxt[("seller_posts", "ana")].revision == 0
    assert nxt[("seller_influence", "ana")].engagers == 2
    keys = [r.key for r in out]
    assert len(keys) == len(set(keys))


def test_metrics_keep_the_top_sellers_and_sum_the_rest_under_other():
    t0 = _t0()
    fam = Sellers(SPEC, max_sellers=2)
    state = fam.new_state()
    events = []
    for n, who in enumerate(("a1", "a2", "a3", "a4")):
        for i in range(n + 1):  # a4 posts most
            events.append(Post(event_id=f"{who}{i}", ts=t0 + i, **BASE, post_id=f"{who}-{i}", author_id=who))
    fam.apply(KEY, state, events, t0 + 1000)
    samples = list(fam.samples(KEY, state, t0 + 1000))
    index = {labels[2]: v for name, labels, v in samples if name == "socialpulse_selling_index"}
    assert set(index) == {"a4", "a3"}
    posts = {labels[2]: v for name, labels, v in samples if name == "socialpulse_seller_posts" and labels[4] == "original"}
    assert posts == {"a4": 4.0, "a3": 3.0, "other": 3.0}  # a1 + a2 summed: sum by (account) stays exact
    team = {name: v for name, labels, v in samples if name.startswith("socialpulse_team_")}
    assert team["socialpulse_team_sellers"] == 4


def test_state_expires_after_the_window_and_the_lateness():
    t0 = _t0()
    fam = Sellers(SPEC)
    state = fam.new_state()
    fam.apply(KEY, state, _events(t0), t0 + 400_000)
    fam.close(KEY, state, t0 + 40 * DAY_MS)
    assert set(state) == {"posts", "days", "net"} and not state["days"]  # the posts stay POST_DAYS (90)
    fam.close(KEY, state, t0 + 95 * DAY_MS)
    state.pop("net", None)  # (the network size is all time)
    assert fam.is_empty(state)


def test_a_referred_order_goes_to_the_account_of_its_referrer_and_a_refund_takes_it_back():
    t0 = _t0()
    ref = Referrals(lookback_ms=7 * DAY_MS, lateness_ms=DAY_MS)
    events = [
        Lead(event_id="l", ts=t0, platform="linkedin", account_id="acme", actor_id="s1", referrer_id="ana"),
        Order(event_id="o0", ts=t0 - 1000, order_id="earlier", actor_id="s1", amount=Decimal("5"), currency="USD"),
        Order(event_id="o1", ts=t0 + 1000, order_id="A", actor_id="s1", amount=Decimal("80"), currency="USD",
              referrer_id="ana"),
        Order(event_id="o2", ts=t0 + 5000, order_id="A", actor_id="s1", amount=Decimal("80"), currency="USD",
              status="refunded"),
    ]
    totals = []
    for seed in range(6):
        state = ref.new_state()
        evs = events[:]
        random.Random(seed).shuffle(evs)
        sums: dict = {}
        for e in evs:
            for f in ref.apply("s1", state, [e], t0):
                r = Referral.model_validate(f.event)
                assert f.key == "linkedin|acme" and f.topic == "referrals"
                for name in ("orders", "customers", "repeat"):
                    sums[name] = sums.get(name, 0) + getattr(r, name)
                sums.setdefault(r.ts, Decimal(0))
                sums[r.ts] += r.amount
        totals.append(sums)
    assert all(t == totals[0] for t in totals)
    # placed (a repeat: the earlier order stands) at its ts, refunded at the refund's ts
    assert totals[0] == {"orders": 0, "customers": 0, "repeat": 0, t0 + 1000: Decimal(80), t0 + 5000: Decimal(-80)}


def test_an_order_after_a_dm_lead_is_a_sale_of_the_conversation_and_follows_its_seller():
    t0 = _t0()
    ref = Referrals(lookback_ms=7 * DAY_MS, lateness_ms=DAY_MS)
    lead = Lead(event_id="dm1", ts=t0 + 60_000, **BASE, actor_id="cust", kind="dm")
    shopper_events = [lead, Order(event_id="o", ts=t0 + 120_000, order_id="A", actor_id="cust", amount=Decimal("70"),
                                  currency="USD")]
    sales: list = []
    state_r = ref.new_state()
    for e in shopper_events:
        sales.extend(ref.apply("cust", state_r, [e], t0))
    (sale,) = [f for f in sales if f.topic == "conversation_sales"]
    assert sale.key == KEY and sale.event["lead_id"] == "dm1" and sale.event["customers"] == 1

    fam = Sellers(SPEC)
    state = fam.new_state()
    msgs = [Message(event_id="m1", ts=t0, **BASE, conversation_id="c", direction="inbound", author_id="cust"),
            Message(event_id="m2", ts=t0 + 30_000, **BASE, conversation_id="c", direction="outbound", author_id="ana",
                    agent_id="ana")]
    # the sale first, then the lead, then the conversation: credited to ana once it is known
    fam.apply(KEY, state, [ConversationSale.model_validate(sale.event)], t0 + 200_000)
    fam.apply(KEY, state, [lead], t0 + 200_000)
    assert "ana" not in fam.view(KEY, state, t0 + 200_000)["sellers"]
    fam.apply(KEY, state, msgs, t0 + 200_000)
    ana = fam.view(KEY, state, t0 + 200_000)["sellers"]["ana"]
    assert (ana["new_customers_from_conversations"], ana["revenue_from_conversations"]) == (1, {"USD": "70"})
    assert ana["leads_from_conversations"] == 1
    # a reply of ben's read late, written before ana's: ben is the conversation's seller, the sale moves
    fam.apply(KEY, state, [Message(event_id="m0", ts=t0 + 10_000, **BASE, conversation_id="c", direction="outbound",
                                   author_id="ben", agent_id="ben")], t0 + 200_000)
    view = fam.view(KEY, state, t0 + 200_000)["sellers"]
    assert view["ben"]["revenue_from_conversations"] == {"USD": "70"} and view["ben"]["leads_from_conversations"] == 1
    assert "ana" not in view  # (ben answered the wait too: nothing of hers is left)
