"""Same events, same numbers (issue 22): the shopper's credits, sales, conversions, checkout
outcomes and the shop's counters are a function of the events and their ``ts``, whatever order and batches
they arrive in within the allowed lateness (1 day here, far beyond the 5-minute grace)."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import SHOP_KEY, Checkout, CheckoutOutcome, Click, Credit, Event, Lead, Order, Sale, Session
from streams.conversion import Shopper
from streams.conversion import family as conv
from streams.family import Forward
from streams.funnel import metrics as fm

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
LATENESS = DAY
NOW = int(time.time() * 1000)
T = NOW - NOW % HOUR - 3 * DAY  # a whole hour, days ago (no event ahead of the clock)


def shopper() -> Shopper:
    return Shopper(7 * DAY, grace_ms=5 * MIN, checkout_timeout_ms=HOUR, lateness_ms=LATENESS)


def click(n: int, ts: int, platform: str = "facebook", account: str = "a", click_id: str | None = None) -> Click:
    return Click(event_id=f"k{n}", ts=ts, platform=platform, account_id=account, actor_id="u1", campaign_id="c",
                 click_id=click_id, post_id=f"p{n}")


def order(n: int, ts: int, amount: str, order_id: str, status: str = "placed", click_id: str | None = None) -> Order:
    return Order(event_id=f"o{n}", ts=ts, order_id=order_id, actor_id="u1", amount=Decimal(amount), currency="EUR",
                 status=status, click_id=click_id)


def visit(n: int, ts: int, source: str, seconds: float = 60.0) -> Session:
    return Session(event_id=f"s{n}", ts=ts, actor_id="u1", source=source, duration_s=seconds)


def lead(n: int, ts: int) -> Lead:
    return Lead(event_id=f"l{n}", ts=ts, platform="facebook", account_id="a", actor_id="u1")


def checkout(n: int, ts: int, cid: str, status: str = "started") -> Checkout:
    return Checkout(event_id=f"c{n}", ts=ts, checkout_id=cid, actor_id="u1", status=status)


#: one shopper's few hours: clicks on three accounts (one pinned), visits (one direct), leads, four orders
#: (one placed twice, one refunded, one after a cancelled one), checkouts (completed, abandoned, completed
#: too late, completion before start, one with no touch before it)
EVENTS: list[Event] = [
    checkout(0, T - 30 * MIN, "k-early"),  # no touch in the lookback before it: source none
    lead(1, T - 20 * MIN),
    click(1, T, "facebook", "a"),
    visit(2, T + 5 * MIN, "instagram"),
    click(3, T + 10 * MIN, "x", "b", click_id="pin"),
    checkout(4, T + 12 * MIN, "k1"), checkout(5, T + 20 * MIN, "k1", "completed"),
    click(6, T + 15 * MIN, "tiktok", "c"),
    order(7, T + 30 * MIN, "100.00", "A", click_id="pin"),
    visit(8, T + 40 * MIN, "direct", 120.0),
    lead(9, T + 50 * MIN),
    checkout(10, T + 45 * MIN, "k2"),  # never completed
    order(11, T + 60 * MIN, "40.00", "B"), order(12, T + 61 * MIN, "40.00", "B"),  # placed twice
    order(13, T + 70 * MIN, "40.00", "B", status="refunded"),
    checkout(14, T + 80 * MIN, "k3"), checkout(15, T + 80 * MIN + HOUR + MIN, "k3", "completed"),  # too late
    checkout(16, T + 95 * MIN, "k4", "completed"), checkout(17, T + 90 * MIN, "k4"),
    order(18, T + 100 * MIN, "25.00", "C"), order(19, T + 110 * MIN, "25.00", "C", status="cancelled"),
    order(20, T + 120 * MIN, "60.00", "D"),
    click(21, T + 130 * MIN, "facebook", "a"),
    order(22, T + 140 * MIN, "15.00", "E"),
]
END = T + 4 * DAY  # every decision is final by then (timeout, lateness)


def summary(outputs: list[Any]) -> dict[str, Any]:
    """What downstream sees: window aggregates of credits per account and hour, sales and checkouts
    of the shop per hour, conversions per cohort, the shop's counters (``funnel.metrics.count``:
    checkouts by source and outcome, unattributed orders); nothing that nets to zero."""
    credit_aggs: dict[tuple[str, int], dict[str, Any]] = defaultdict(conv.empty)
    shop: dict[int, dict[str, Any]] = defaultdict(fm.empty)
    converted: Counter[tuple[Any, ...]] = Counter()
    totals: fm.Totals = {}
    for f in outputs:
        assert isinstance(f, Forward)
        hour = f.event["ts"] - f.event["ts"] % HOUR
        if f.topic == "credits":
            conv.fold(credit_aggs[(f.key, hour)], Credit.model_validate(f.event))
        elif f.topic == "checkout_outcomes":
            assert f.key == SHOP_KEY
            outcome = CheckoutOutcome.model_validate(f.event)
            fm.fold(shop[hour], outcome)
            fm.count(totals, outcome)
        elif f.topic == "sales":
            sale = Sale.model_validate(f.event)
            fm.fold(shop[hour], sale)
            fm.count(totals, sale)
        elif f.topic == "converted":
            converted[(f.key, f.event["kind"], f.event["cohort_ts"])] += f.event["n"]

    def money(d: dict[str, str]) -> dict[str, Decimal]:
        return {k: Decimal(v) for k, v in sorted(d.items()) if Decimal(v) != 0}

    credits_out = {}
    for where, agg in credit_aggs.items():
        facts = {"orders": agg["orders"], "customers": agg["cust"], "sessions": agg["sess"], "site": agg["site"],
                 "rev": {m: money(by) for m, by in sorted(agg["rev"].items()) if money(by)},
                 "posts_camps": {c: money(v["rev"]) for c, v in agg["camp"].items() if money(v["rev"])}}
        if any(v for v in facts.values()):
            credits_out[where] = facts
    shop_out = {}
    for hour, agg in shop.items():
        facts = {"checkouts": fm.checkouts(agg), "revenue": money(agg.get("orev", {})),
                 "social": {m: money(by) for m, by in sorted(agg.get("srev", {}).items()) if money(by)}}
        if any(facts.values()):
            shop_out[hour] = facts
    return {"credits": credits_out, "shop": shop_out, "converted": {k: n for k, n in converted.items() if n},
            "totals": totals}


def run(batches: list[list[Event]], marks: list[int]) -> dict[str, Any]:
    """Drive one shopper as the stage does: before each batch the watermark may move (a tick closes),
    then the batch is applied; at the end ticks run until everything is final."""
    fam = shopper()
    state = fam.new_state()
    out: list[Any] = []
    for batch, wm in zip(batches, marks, strict=True):
        assert all(e.ts >= wm - LATENESS for e in batch), "within the allowed lateness"
        out += fam.close("u1", state, wm)[0]
        out += fam.apply("u1", state, batch, wm)
    for wm in range(marks[-1], END + 1, 15 * MIN):
        out += fam.close("u1", state, wm)[0]
    out += fam.close("u1", state, END + 10 * DAY)[0]
    assert fam.is_empty(state)  # bounded: everything went after lookback + lateness
    return summary(out)


REFERENCE = run([sorted(EVENTS, key=lambda e: e.ts)], [T - DAY])


@st.composite
def arrivals(draw: st.DrawFn, events: list[Event]) -> tuple[list[list[Event]], list[int]]:
    """A permutation of ``events`` in random batches, with a watermark before each batch that only
    moves forward and never leaves an event of this or a later batch behind the allowed lateness."""
    order = draw(st.permutations(events))
    cuts = sorted(set(draw(st.lists(st.integers(1, len(order) - 1), max_size=8))))
    batches = [order[i:j] for i, j in zip([0, *cuts], [*cuts, len(order)], strict=True)]
    marks, wm = [], T - DAY
    for k in range(len(batches)):
        cap = min(e.ts for b in batches[k:] for e in b) + LATENESS
        if cap > wm:
            wm += int((cap - wm) * draw(st.floats(0, 1)))
        marks.append(wm)
    return batches, marks


@settings(max_examples=80, deadline=None)
@given(arrivals(EVENTS))
def test_the_same_events_in_any_arrival_order_give_the_same_credits_sales_conversions_and_checkouts(arrival):
    assert run(*arrival) == REFERENCE


def test_the_reference_run_has_what_the_scenario_promises():
    credits_ = REFERENCE["credits"]
    assert sum(f["orders"] for f in credits_.values()) == 3  # A, D, E stand (B refunded, C cancelled)
    assert sum(f["customers"] for f in credits_.values()) == 1  # A only: the rest had one standing before
    # k-early: no touch before it; k1 (the pinned x click); k2 never completed, k3 completed after
    # the timeout, k4 completed (all three after the direct visit)
    assert REFERENCE["totals"]["ck"] == {"none|started": 1, "none|abandoned": 1, "x|started": 1, "x|completed": 1,
                                         "direct|started": 3, "direct|abandoned": 2, "direct|completed": 1}
    assert "un" not in REFERENCE["totals"]  # every order has a touch


# -- one test per fault of issue 22 ---------------------------------------------------------

def _shop(out: list[Any]) -> list[tuple[str, str, int, int]]:
    """Checkout outcomes as (source, outcome, start ts, +1/-1)."""
    return [(f.event["source"], f.event["outcome"], f.event["ts"], fm.checkout_sign(CheckoutOutcome.model_validate(f.event)))
            for f in out if isinstance(f, Forward) and f.topic == "checkout_outcomes"]


def _net(out: list[Any]) -> dict[tuple[str, str, int], int]:
    net: Counter[tuple[str, str, int]] = Counter()
    for src, outcome, ts, n in _shop(out):
        net[(src, outcome, ts)] += n
    return {k: n for k, n in net.items() if n}


def test_checkouts_belong_to_the_window_of_their_start_whatever_the_watermark_judges_them_at():
    """Fault 1: four checkouts of one 15-minute window, judged on five runs at five watermarks,
    always land in that window (stamped at their start), however late the source is read."""
    starts = [T + i * MIN for i in (1, 4, 8, 13)]
    nets = []
    for judge in (T + 15 * MIN, T + 20 * MIN, T + 2 * HOUR, T + 5 * HOUR, T + 20 * HOUR):
        fam = shopper()
        state = fam.new_state()
        out = fam.apply("u1", state, [checkout(i, ts, f"k{i}") for i, ts in enumerate(starts)], judge)
        out += fam.close("u1", state, judge)[0]
        out += fam.apply("u1", state, [click(9, T - 2 * HOUR, "pinterest", "p")], judge)  # a source 2 hours late
        out += fam.close("u1", state, T + DAY + 3 * HOUR)[0]
        nets.append(_net(out))
    assert all(n == nets[0] for n in nets)
    assert nets[0] == {**{("pinterest", "started", ts): 1 for ts in starts},
                       **{("pinterest", "abandoned", ts): 1 for ts in starts}}


def test_a_completion_after_the_timeout_leaves_the_checkout_abandoned_and_one_before_its_start_pairs():
    fam = shopper()
    state = fam.new_state()
    out = fam.apply("u1", state, [checkout(1, T + HOUR + 1, "late", "completed"), checkout(2, T + 30 * MIN, "early", "completed")], T)
    out += fam.apply("u1", state, [checkout(3, T, "late"), checkout(4, T + MIN, "early")], T + 3 * HOUR)
    out += fam.close("u1", state, T + 3 * HOUR)[0]
    assert _net(out) == {("none", "started", T): 1, ("none", "abandoned", T): 1,
                         ("none", "started", T + MIN): 1, ("none", "completed", T + MIN): 1}


def test_a_click_read_after_its_checkout_corrects_the_source_beyond_grace():
    """Fault 2: the checkout was counted under ``none``; a click before it, read 5 hours later
    (far beyond grace, within the allowed lateness), moves it to the click's platform."""
    fam = shopper()
    state = fam.new_state()
    out = fam.apply("u1", state, [checkout(1, T, "k")], T)
    out += fam.close("u1", state, T + 2 * HOUR)[0]
    assert _net(out) == {("none", "started", T): 1, ("none", "abandoned", T): 1}
    out += fam.apply("u1", state, [click(1, T - MIN, "linkedin", "l")], T + 5 * HOUR)
    assert _net(out) == {("linkedin", "started", T): 1, ("linkedin", "abandoned", T): 1}
    final = fam.close("u1", state, T + HOUR + DAY + 1)[0]
    assert final == [] and "checkouts" not in state  # nothing waits for finality
    assert summary(out)["totals"] == {"ck": {"linkedin|started": 1, "linkedin|abandoned": 1}}


def _credits(out: list[Any]) -> dict[tuple[str, int], Decimal]:
    """Net last-touch revenue per (account, ts) of the credits."""
    net: dict[tuple[str, int], Decimal] = defaultdict(Decimal)
    for f in out:
        if isinstance(f, Forward) and f.topic == "credits":
            net[(f.key, f.event["ts"])] += Decimal(f.event["revenue"]["last_touch"])
    return {k: v for k, v in net.items() if v}


def test_order_read_before_click_beyond_grace_is_attributed():
    """Fault 3: the order is read first and judged unattributed by the old rules after grace; its
    click, read 6 hours later, credits it (every model, orders, the new customer), and takes back
    its count of unattributed orders."""
    fam = shopper()
    state = fam.new_state()
    out = fam.apply("u1", state, [order(1, T, "80.00", "A")], T)
    out += fam.close("u1", state, T + HOUR)[0]
    assert _credits(out) == {} and summary(out)["totals"] == {"un": {"EUR": 1}}  # no touch (yet): counted
    later = fam.apply("u1", state, [click(1, T - HOUR, "facebook", "a")], T + 6 * HOUR)
    [credit] = [f.event for f in later if isinstance(f, Forward) and f.topic == "credits"]
    assert (credit["ts"], credit["orders"], credit["customers"]) == (T, 1, 1)
    assert set(credit["revenue"].values()) == {"80.000000"}
    assert [f.event["n"] for f in later if isinstance(f, Forward) and f.topic == "converted"] == [1]
    [sale] = [f.event for f in later if isinstance(f, Forward) and f.topic == "sales" and f.event["social"]]
    assert sale["social"]["last_touch"] == "80.000000"
    assert summary(out + later)["totals"] == {}  # the click took the count back
    assert fam.close("u1", state, T + DAY + 1)[0] == []


def test_an_order_without_any_touch_is_counted_unattributed_when_its_sale_is_sent():
    fam = shopper()
    state = fam.new_state()
    out = fam.apply("u1", state, [order(1, T, "80.00", "A")], T)
    assert summary(out)["totals"] == {"un": {"EUR": 1}}  # live: not waiting for finality
    assert fam.close("u1", state, T + DAY)[0] == []
    assert fam.close("u1", state, T + DAY + 1)[0] == []  # final: nothing more to send
    # a refund leaves it counted (the counter counts placements), and takes the revenue back
    refund = fam.apply("u1", state, [order(2, T + HOUR, "80.00", "A", status="refunded")], T + DAY + 1)
    assert [(f.event["amount"], f.event["unattributed"]) for f in refund] == [("-80.00", 0)]
    assert summary(out + refund)["totals"] == {"un": {"EUR": 1}}


def test_a_cancellation_read_before_its_order_is_applied_when_the_order_arrives():
    """Fault 4: the same net effect, in the same windows, whichever is read first."""
    events = [click(1, T - HOUR), order(1, T, "50.00", "A"), order(2, T + 2 * HOUR, "50.00", "A", status="cancelled")]
    nets = []
    for arrival in (events, [events[0], events[2], events[1]], [events[2], events[1], events[0]]):
        fam = shopper()
        state = fam.new_state()
        out = [o for e in arrival for o in fam.apply("u1", state, [e], T + 3 * HOUR)]
        nets.append((_credits(out), summary(out)["shop"]))
    assert nets[0] == nets[1] == nets[2]
    assert nets[0][0] == {("facebook|a", T): Decimal("50"), ("facebook|a", T + 2 * HOUR): Decimal("-50")}


def test_a_direct_visit_read_after_its_order_re_credits_the_direct_share():
    """Fault 5: a direct visit between the click and the order, read after the order (beyond grace),
    takes the last touch to ``direct|direct`` as if it had come first."""
    fam = shopper()
    state = fam.new_state()
    out = fam.apply("u1", state, [click(1, T - HOUR), order(1, T, "30.00", "A")], T)
    out += fam.close("u1", state, T + 2 * HOUR)[0]
    out += fam.apply("u1", state, [visit(1, T - MIN, "direct")], T + 2 * HOUR)
    assert _credits(out) == {("direct|direct", T): Decimal("30")}
    ref = shopper()
    ref_state = ref.new_state()
    assert _credits(ref.apply("u1", ref_state, [click(1, T - HOUR), visit(1, T - MIN, "direct"),
                                                order(1, T, "30.00", "A")], T)) == _credits(out)


def test_new_customer_is_the_first_order_by_ts_not_by_arrival():
    """Fault 6: of two orders in the lookback the earlier one (by ts) is the new customer, however
    they arrive; a cancellation after the later order does not make it a first order."""
    events = [click(1, T - HOUR), order(1, T + HOUR, "10.00", "late"), order(2, T, "10.00", "first"),
              order(3, T + 2 * HOUR, "10.00", "first", status="cancelled")]
    seen = []
    for arrival in (events, events[::-1], [events[3], events[1], events[0], events[2]]):
        fam = shopper()
        state = fam.new_state()
        out = [o for e in arrival for o in fam.apply("u1", state, [e], T + 3 * HOUR)]
        customers: Counter[int] = Counter()
        for f in out:
            if isinstance(f, Forward) and f.topic == "credits":
                customers[f.event["ts"]] += f.event["customers"]
        seen.append({ts: n for ts, n in customers.items() if n})
    assert seen == [{T: 1, T + 2 * HOUR: -1}] * 3


def test_a_lead_converts_by_ts_whatever_the_order_of_lead_and_order():
    """Fault 6: a lead before the shopper's first order converts, whether the lead or the order is
    read first; a lead after it does not (the shopper already was a customer)."""
    events = [lead(1, T - HOUR), order(1, T, "10.00", "A"), lead(2, T + HOUR)]
    seen = []
    for arrival in (events, events[::-1]):
        fam = shopper()
        state = fam.new_state()
        out = [o for e in arrival for o in fam.apply("u1", state, [e], T + 2 * HOUR)]
        seen.append(summary(out)["converted"])
    assert seen == [{("facebook|a", "lead", T - HOUR): 1}] * 2


def test_state_written_by_the_previous_release_still_decodes_and_is_not_credited_twice():
    """The changelog of the release before: a settled order, a refund placeholder, a judged checkout."""
    fam = shopper()
    raw = {"clicks": [[T - HOUR, "facebook", "a", "c", "ck1"]], "orders": {
        "A": {"event_id": "o1", "ts": T, "amount": "50.00", "currency": "EUR", "click_id": None, "exp": T + 7 * DAY,
              "credits": [{"event_id": "o1@v1#0", "ts": T, "platform": "facebook", "account_id": "a",
                           "campaign_id": "c", "order_id": "A", "currency": "EUR",
                           "revenue": {"last_touch": "50.000000"}, "orders": 1}],
              "version": 1, "reversed": False, "settled": True},
        "X": {"event_id": "r9", "ts": T + 5, "amount": "0", "currency": "EUR", "click_id": None, "exp": T + 7 * DAY,
              "credits": [], "version": 0, "reversed": True, "settled": False}},
        "checkouts": {"k": {"ts": T, "src": "facebook", "started": True, "done": False}}}
    state = fam.decode_state(raw)
    assert fam.apply("u1", state, [click(2, T + 2 * MIN)], T + 10 * MIN) == []  # nothing sent again
    out = fam.apply("u1", state, [order(5, T + 3 * MIN, "9.00", "X")], T + 10 * MIN)  # the refunded order comes
    assert sum(Decimal(f.event["revenue"]["last_touch"]) for f in out if isinstance(f, Forward) and f.topic == "credits") == 0
    final = fam.close("u1", state, T + DAY + 2 * HOUR)[0]
    assert _net(final) == {("facebook", "abandoned", T): 1}


def test_the_marks_of_the_release_that_counted_final_orders_and_checkouts_are_dropped():
    """That release kept ``tal`` on orders and checkouts (what its own counters had counted); the
    shop's key counts now, so a record it wrote decodes without them and sends nothing again."""
    fam = shopper()
    state = fam.new_state()
    fam.apply("u1", state, [order(1, T, "80.00", "A"), checkout(2, T, "k")], T)
    raw = orjson.loads(orjson.dumps(state))
    raw["orders"]["A"]["tal"] = True
    raw["checkouts"]["k"]["tal"] = ["started"]
    again = fam.decode_state(raw)
    assert "tal" not in again["orders"]["A"] and "tal" not in again["checkouts"]["k"]
    assert again == state and fam.apply("u1", again, [], T) == []
