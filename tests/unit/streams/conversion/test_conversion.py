"""Attribution models and the conversion arithmetic, by hand."""

import time
from decimal import Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.events import Click, Credit, Lead, Order, Session, Spend
from streams.conversion import Conversion, Shopper
from streams.conversion.attribution import MODELS, credits, position_based, time_decay
from streams.conversion.family import derived
from streams.conversion.shopper import touches
from streams.family import Forward
from streams.windows import WindowSpec

DAY = 86_400_000
MIN = 60_000
HOUR = 3_600_000
SPEC = WindowSpec(bucket_ms=MIN, trailing_ms=(60 * MIN,), closed_ms=(60 * MIN,), grace_ms=5 * MIN)


@pytest.fixture
def t0():
    now = int(time.time() * 1000)
    return now - now % (60 * MIN) - 60 * MIN


def test_models_by_hand_for_one_two_and_four_touches():
    one = credits([10.0])
    assert all(v == [Decimal(1)] for v in one.values())
    two = credits([100.0, 10.0])
    assert two["last_touch"] == [0, 1] and two["first_touch"] == [1, 0]
    assert two["linear"] == [Decimal("0.5"), Decimal("0.5")] and two["position_based"] == [Decimal("0.5"), Decimal("0.5")]
    four = credits([300.0, 200.0, 100.0, 0.0])
    assert four["position_based"] == [Decimal("0.4"), Decimal("0.1"), Decimal("0.1"), Decimal("0.4")]
    assert four["linear"] == [Decimal("0.25")] * 4


def test_time_decay_halves_the_weight_every_half_life():
    # touches 7 days and 0 days before the order: weights 1/2 and 1 -> 1/3 and 2/3
    c = time_decay([7 * 86400.0, 0.0], half_life_s=7 * 86400)
    assert c[0] == Decimal("0.333333333333") and sum(c) == 1


def _decimal_time_decay(ages, half_life_s):
    """The reference: 34-digit Decimal powers, normalised and quantized like the model."""
    with localcontext() as ctx:
        ctx.prec = 34
        weights = [Decimal(2) ** (-Decimal(repr(a)) / Decimal(repr(half_life_s))) for a in ages]
        total = sum(weights, Decimal(0))
        shares = [(w / total).quantize(Decimal("1e-12")) for w in weights[:-1]]
        return [*shares, 1 - sum(shares, Decimal(0))]


@given(st.lists(st.floats(min_value=0, max_value=30 * 86400, allow_nan=False), min_size=1, max_size=12),
       st.sampled_from([60.0, 3600.0, 7 * 86400.0]))
def test_time_decay_in_floats_credits_the_same_as_34_digit_decimals(ages, half_life_s):
    ages = sorted(ages, reverse=True)
    assert time_decay(ages, half_life_s) == _decimal_time_decay(ages, half_life_s)


@given(st.lists(st.floats(min_value=0, max_value=7 * 86400, allow_nan=False), min_size=1, max_size=40))
def test_every_models_credits_sum_to_exactly_one(ages):
    for model, shares in credits(sorted(ages, reverse=True)).items():
        assert sum(shares) == 1, model
        assert all(s >= 0 for s in shares), model


def test_position_based_spreads_twenty_percent_over_the_middle():
    shares = position_based([5.0, 4.0, 3.0, 2.0, 1.0])
    assert shares[0] == Decimal("0.4") and abs(sum(shares[1:-1]) - Decimal("0.2")) < Decimal("1e-11")
    assert sum(shares) == 1
    assert set(MODELS) == {"last_touch", "first_touch", "linear", "time_decay", "position_based", "last_non_direct"}


def click(i, ts, actor="u1", platform="facebook", account="acme", campaign="c1", click_id=None):
    return Click(event_id=f"k{i}", ts=ts, platform=platform, account_id=account, actor_id=actor,
                 campaign_id=campaign, click_id=click_id or f"ck{i}")


def order(i, ts, amount, currency="USD", status="placed", click_id=None, order_id=None, actor="u1"):
    return Order(event_id=f"o{i}", ts=ts, order_id=order_id or f"ord{i}", actor_id=actor, amount=Decimal(amount),
                 currency=currency, status=status, click_id=click_id)


def test_click_id_pins_the_last_touch_and_lookback_bounds_touches(t0):
    clicks = [[t0 - 8 * DAY, "x", "a", None, "old"], [t0 - 3 * DAY, "x", "a", None, "k1"],
              [t0 - 2 * DAY, "x", "b", None, "k2"], [t0 - DAY, "x", "c", None, "k3"]]
    assert [c[4] for c in touches(clicks, t0, 7 * DAY, None)] == ["k1", "k2", "k3"]
    assert [c[4] for c in touches(clicks, t0, 7 * DAY, "k2")] == ["k1", "k2"]
    assert [c[4] for c in touches(clicks, t0, 7 * DAY, "nope")] == ["k1", "k2", "k3"]


def test_an_order_credits_its_touches_and_a_cancellation_takes_back_exactly_that(t0):
    fam = Shopper(lookback_ms=7 * DAY)
    state = fam.new_state()
    fam.apply("u1", state, [click(1, t0, account="a"), click(2, t0 + 1000, platform="x", account="b")], t0)
    out = credited(fam.apply("u1", state, [order(1, t0 + 2000, "90.00")], t0))
    assert [type(o) for o in out] == [Forward, Forward]
    a, b = out[0].event, out[1].event
    assert (out[0].key, out[1].key) == ("facebook|a", "x|b")
    assert a["revenue"]["linear"] == "45.000000" and b["revenue"]["last_touch"] == "90.000000"
    assert (a["orders"], b["orders"]) == (0, 1)
    back = credited(fam.apply("u1", state, [order(2, t0 + 5000, "90.00", status="refunded", order_id="ord1")], t0))
    assert [f.event["revenue"]["linear"] for f in back] == ["-45.000000", "-45.000000"]
    assert [f.event["orders"] for f in back] == [0, -1]
    assert fam.apply("u1", state, [order(3, t0 + 6000, "90.00", status="cancelled", order_id="ord1")], t0) == []


def credited(out: list) -> list:
    """The credits among a shopper's outputs (it also sends sales and conversions)."""
    return [f for f in out if isinstance(f, Forward) and f.topic == "credits"]


def test_a_refund_that_overtakes_its_order_leaves_nothing_credited(t0):
    """The refund is kept until its placement comes; then the placement credits at its own time
    and the refund takes it back at its own, as if they had come in order: nothing in total."""
    fam = Shopper(lookback_ms=7 * DAY)
    state = fam.new_state()
    fam.apply("u1", state, [click(1, t0)], t0)
    assert fam.apply("u1", state, [order(2, t0 + 9, "9", status="refunded", order_id="ordX")], t0) == []
    out = credited(fam.apply("u1", state, [order(1, t0 + 5, "9", order_id="ordX")], t0))
    assert [(f.event["ts"], f.event["revenue"]["linear"], f.event["orders"]) for f in out] == [
        (t0 + 5, "9.000000", 1), (t0 + 9, "-9.000000", -1)]
    assert fam.close("u1", state, t0 + DAY)[0] == []  # nothing more once final


def _unattributed(out: list) -> list[tuple[int, str, int]]:
    """(ts, currency, unattributed) of the sales among a shopper's outputs."""
    return [(f.event["ts"], f.event["currency"], f.event["unattributed"]) for f in out
            if isinstance(f, Forward) and f.topic == "sales"]


def test_an_order_without_touches_is_unattributed_at_once_and_a_late_click_takes_it_back(t0):
    """Its sale carries ``unattributed`` 1 when sent (the shop's key counts it live); a click read
    later within the allowed lateness credits the order: the sale is negated (-1) and sent again (0)."""
    fam = Shopper(lookback_ms=7 * DAY, grace_ms=5 * MIN)
    state = fam.new_state()
    fam.apply("u1", state, [click(1, t0 - 8 * DAY)], t0)  # outside the lookback
    placed = fam.apply("u1", state, [order(1, t0, "10", currency="EUR")], t0)
    assert credited(placed) == [] and _unattributed(placed) == [(t0, "EUR", 1)]
    assert fam.close("u1", state, t0 + 4 * MIN)[0] == []  # nothing waits for finality
    late = fam.apply("u1", state, [click(2, t0 - MIN)], t0 + 4 * MIN)
    assert len(credited(late)) == 1 and _unattributed(late) == [(t0, "EUR", -1), (t0, "EUR", 0)]
    assert fam.close("u1", state, t0 + 10 * MIN)[0] == []


def test_a_cancelled_unattributed_order_stays_counted_as_placed(t0):
    """The cancellation takes the sale's amount back but not its ``unattributed``: the counter
    counts placements; undoing the take-back (the cancellation moved) carries 0 as well."""
    fam = Shopper(lookback_ms=7 * DAY, grace_ms=5 * MIN)
    state = fam.new_state()
    out = fam.apply("u1", state, [order(1, t0, "10", currency="EUR")], t0)
    out += fam.apply("u1", state, [order(2, t0 + HOUR, "10", currency="EUR", status="cancelled", order_id="ord1")], t0)
    out += fam.apply("u1", state, [order(3, t0 + MIN, "10", currency="EUR", status="refunded", order_id="ord1")], t0)
    sales = [(f.event["ts"], f.event["amount"], f.event["unattributed"]) for f in out if f.topic == "sales"]
    assert sales == [(t0, "10", 1), (t0 + HOUR, "-10", 0), (t0 + HOUR, "10", 0), (t0 + MIN, "-10", 0)]


def test_a_click_arriving_after_its_order_re_credits_it(t0):
    fam = Shopper(lookback_ms=7 * DAY, grace_ms=5 * MIN)
    state = fam.new_state()
    fam.apply("u1", state, [click(1, t0, account="a")], t0)
    first_all = fam.apply("u1", state, [order(1, t0 + 3000, "90.00")], t0)
    first = credited(first_all)
    assert [f.event["revenue"]["linear"] for f in first] == ["90.000000"]
    late_all = fam.apply("u1", state, [click(2, t0 + 1000, platform="x", account="b")], t0)  # older than the order
    late = credited(late_all)
    # the click the order converts moves from a to b; the shop's sale (all social) stays as it was
    conv = [(f.key, f.event["cohort_ts"], f.event["n"]) for f in first_all + late_all if f.topic == "converted"]
    assert conv == [("facebook|a", t0, 1), ("x|b", t0 + 1000, 1), ("facebook|a", t0, -1)]
    sales = [f.event for f in first_all + late_all if f.topic == "sales"]
    assert [(s["amount"], s["social"]["linear"]) for s in sales] == [("90.00", "90.000000")]
    assert {f.key for f in first_all + late_all if f.topic == "sales"} == {"all|all"}
    # the old credit is negated, then both touches are credited: the account totals end exact
    totals: dict[str, Decimal] = {}
    for f in first + late:
        totals[f.key] = totals.get(f.key, Decimal(0)) + Decimal(f.event["revenue"]["linear"])
    assert totals == {"facebook|a": Decimal("45"), "x|b": Decimal("45")}
    orders = {}
    for f in first + late:
        orders[f.key] = orders.get(f.key, 0) + f.event["orders"]
    assert orders == {"facebook|a": 0, "x|b": 1}
    assert len({f.event["event_id"] for f in first + late}) == len(first + late)  # distinct ids: dedup-safe


def test_clicks_and_orders_expire_after_the_lookback(t0):
    fam = Shopper(lookback_ms=DAY, grace_ms=5 * MIN)
    state = fam.new_state()
    fam.apply("u1", state, [click(1, t0), order(1, t0 + 10, "5")], t0)
    assert fam.close("u1", state, t0 + DAY + 5 * MIN + 11) == ([], True)
    assert fam.is_empty(state)


def test_worked_example_cpa_twenty_dollars(t0):
    """The seed: a Facebook post cost $40 and brought 10 sign-ups; 20% of them bought: 2
    customers, CPA = $40 / 2 = $20. The sign-ups are leads, not clicks: the post's 100 clicks
    are the click conversion rate's denominator (2%, beside the 2-3% benchmark), and a
    customer's second order is not a second acquisition."""
    from schemas.events import Lead
    from streams.funnel import Funnel

    key, shopper, conversion, funnel = "facebook|acme", Shopper(7 * 86_400_000), Conversion(SPEC), Funnel(SPEC)
    spend = Spend(event_id="s", ts=t0, platform="facebook", account_id="acme", campaign_id="post", amount=Decimal(40), currency="USD")
    clicks = [click(i, t0 + i, actor=f"u{i}", campaign="post") for i in range(100)]
    leads = [Lead(event_id=f"l{i}", ts=t0 + 1000 + i, platform="facebook", account_id="acme", actor_id=f"u{i}",
                  campaign_id="post") for i in range(10)]
    orders = [order(0, t0 + 2000, "25", actor="u0", order_id="first-0"), order(1, t0 + 2001, "35", actor="u1", order_id="first-1"),
              order(2, t0 + 3000, "10", actor="u1", order_id="again-1")]  # u1 buys again
    credit_events = []
    for actor in ("u0", "u1"):
        state = shopper.new_state()
        mine = [c for c in clicks if c.actor_id == actor] + [o for o in orders if o.actor_id == actor]
        credit_events += [Credit.model_validate(f.event) for f in shopper.apply(actor, state, mine, t0) if isinstance(f, Forward) and f.topic == "credits"]
    assert [(c.order_id, c.orders, c.customers) for c in credit_events] == [
        ("first-0", 1, 1), ("first-1", 1, 1), ("again-1", 1, 0)]
    conv_state, funnel_state = conversion.new_state(), funnel.new_state()
    conversion.apply(key, conv_state, [spend, *clicks, *credit_events], t0)
    funnel.apply(key, funnel_state, [spend, *clicks, *leads], t0)
    view = conversion.view(key, conv_state, t0 + 10_000)["windows"]["1h"]
    assert view["new_customers"] == 2 and view["attributed_orders"] == 3
    assert view["cost_per_acquisition"] == {"USD": "20"}  # $40 / 2 new customers
    assert view["conversion_rate"] == 0.03  # 3 attributed orders / 100 clicks
    assert view["campaigns"]["post"]["cost_per_acquisition"] == {"USD": "20"}
    leads_view = funnel.view(key, funnel_state, t0 + 10_000)["windows"]["1h"]
    assert leads_view["leads"] == 10 and leads_view["lead_rate"] == 0.1  # 10 leads / 100 clicks
    assert leads_view["cost_per_lead"] == {"USD": "4"} and leads_view["campaigns"]["post"]["cost_per_lead"] == {"USD": "4"}


def test_roi_needs_matching_currencies():
    d = derived(10, 2, {"EUR": "50"}, {"USD": "40"}, customers=2)
    assert d["roi"] == {} and d["mismatched"] == ["USD"] and d["cpa"] == {"USD": Decimal(20)}
    assert derived(0, 0, {}, {})["conversion_rate"] is None


def test_checkouts_by_the_source_of_the_last_touch_and_abandoned_after_the_timeout(t0):
    """CHECKOUT_TIMEOUT (here 1 h): a checkout started and not completed by then is abandoned.
    Each checkout counts under the source of the shopper's last touch before its start, in the
    shop's window of its start: a touch read after the checkout that precedes it still counts,
    and a completion read before its start pairs with it. Outcomes go out as they are decided
    (the shop's key counts them live); the shopper forgets a checkout once nothing can change it
    (start + timeout + allowed lateness, here 5 min)."""
    from schemas.events import Checkout, Session

    fam = Shopper(7 * 86_400_000, grace_ms=5 * MIN, checkout_timeout_ms=60 * MIN)
    state = fam.new_state()

    def co(i, ts, cid, status):
        return Checkout(event_id=f"co{i}", ts=ts, checkout_id=cid, actor_id="u1", status=status)

    applied = fam.apply("u1", state, [
        co(0, t0, "k0", "started"),  # no touch yet
        co(2, t0 + 2 * MIN, "k1", "started"), co(3, t0 + 3 * MIN, "k1", "completed"),
        click(1, t0 + MIN, actor="u1", platform="instagram"),  # read after k1, but before it in time
        Session(event_id="s4", ts=t0 + 4 * MIN, actor_id="u1", source="direct", duration_s=30),
        co(5, t0 + 5 * MIN, "k2", "started"),  # after a direct visit: never completed
        co(6, t0 + 7 * MIN, "k3", "completed"), co(7, t0 + 6 * MIN, "k3", "started"),  # completion first
        co(8, t0 + 8 * MIN, "k1", "completed"),  # again: nothing
    ], t0 + 8 * MIN)

    def shop(outputs):
        return [(f.event["checkout_id"], f.event["source"], f.event["outcome"], f.event["ts"])
                for f in outputs if isinstance(f, Forward) and f.key == "all|all"]

    assert shop(applied) == [
        ("k0", "none", "started", t0), ("k1", "instagram", "started", t0 + 2 * MIN),
        ("k1", "instagram", "completed", t0 + 2 * MIN), ("k2", "direct", "started", t0 + 5 * MIN),
        ("k3", "direct", "started", t0 + 6 * MIN), ("k3", "direct", "completed", t0 + 6 * MIN)]
    out, _ = fam.close("u1", state, t0 + 60 * MIN)  # k0 times out at t0 + 60 min: abandoned, in its start's window
    assert shop(out) == [("k0", "none", "abandoned", t0)]
    out, _ = fam.close("u1", state, t0 + 65 * MIN)
    assert shop(out) == [("k2", "direct", "abandoned", t0 + 5 * MIN)]
    out, changed = fam.close("u1", state, t0 + 70 * MIN + 1)  # k0, k1, k2 are final: forgotten, nothing sent
    assert out == [] and changed and sorted(state["checkouts"]) == ["k3"]
    out, changed = fam.close("u1", state, t0 + 72 * MIN)
    assert out == [] and changed and "checkouts" not in state


def test_a_session_from_social_counts_for_the_account_that_brought_it(t0):
    from schemas.events import Session
    from streams.families import ROUTER
    from streams.funnel import Funnel

    social = Session(event_id="s1", ts=t0, actor_id="u1", source="tiktok", account_id="brand", duration_s=45)
    direct = Session(event_id="s2", ts=t0, actor_id="u1", source="direct")
    unknown = Session(event_id="s3", ts=t0, actor_id="u2", source="instagram")  # no account: the shopper's only
    assert ROUTER.routes("sessions", social) == [("actor", "u1", True), ("account", "tiktok|brand", False)]
    assert ROUTER.routes("sessions", direct) == [("actor", "u1", True)]
    assert ROUTER.routes("sessions", unknown) == [("actor", "u2", True)]
    fam = Funnel(SPEC)
    state = fam.new_state()
    fam.apply("tiktok|brand", state, [social], t0)
    view = fam.view("tiktok|brand", state, t0 + 1000)["windows"]["1h"]
    assert view["social_sessions"] == 1 and view["leads"] == 0 and view["lead_rate_by_sessions"] == 0.0


def test_time_on_site_before_purchase_is_the_seeds_six_minutes_45(t0):
    """The seed: four visits before buying, 30 s + 15 s + 3 min + 3 min = 6 min 45 s. The last
    visit is read after the order it precedes: the order is credited again with it."""
    from schemas.events import Session

    shopper, conversion = Shopper(7 * 86_400_000), Conversion(SPEC)
    state = shopper.new_state()

    def visit(i, ts, seconds):
        return Session(event_id=f"v{i}", ts=ts, actor_id="u1", source="facebook", account_id="acme", duration_s=seconds)

    first = shopper.apply("u1", state, [
        click(0, t0, actor="u1"), visit(1, t0 + 1000, 30), visit(2, t0 + 60_000, 15), visit(3, t0 + 120_000, 180),
        order(4, t0 + 600_000, "50.00", actor="u1", order_id="o1"),
    ], t0 + 600_000)
    late = shopper.apply("u1", state, [visit(5, t0 + 300_000, 180)], t0 + 600_000)  # read after the order
    credits_ = [Credit.model_validate(f.event) for f in [*first, *late] if isinstance(f, Forward) and f.topic == "credits"]
    assert [(c.orders, c.sessions, c.site_seconds) for c in credits_] == [(1, 3, 225.0), (-1, -3, -225.0), (1, 4, 405.0)]
    cstate = conversion.new_state()
    conversion.apply("facebook|acme", cstate, credits_, t0 + 600_000)
    view = conversion.view("facebook|acme", cstate, t0 + 600_000)["windows"]["1h"]
    assert view["attributed_orders"] == 1 and view["sessions_before_purchase"] == 4
    assert view["time_on_site_before_purchase_seconds"] == 405.0  # 6 min 45 s


def session(n: int, ts: int, source: str, actor: str = "u1", duration_s: float = 0.0) -> Session:
    return Session(event_id=f"s{n}", ts=ts, actor_id=actor, source=source, duration_s=duration_s)


def test_a_direct_visit_is_a_touch_and_last_non_direct_passes_over_it(t0):
    t = t0 - 3 * DAY  # (the newest event must not be ahead of the clock)
    """Click on x, then the shopper comes back directly and buys: the direct visit is the last
    touch (its share goes to ``direct|direct``), last non-direct credits the click, and social's
    share of the order is what each model gives the click."""
    fam = Shopper(lookback_ms=7 * DAY, grace_ms=5 * MIN)
    state = fam.new_state()
    fam.apply("u1", state, [click(1, t, platform="x", account="b"), session(1, t + HOUR, "direct")], t)
    out = fam.apply("u1", state, [order(1, t + 2 * HOUR, "100.00")], t)
    by_key = {f.key: f.event for f in credited(out)}
    assert set(by_key) == {"x|b", "direct|direct"}
    assert by_key["direct|direct"]["revenue"]["last_touch"] == "100.000000"
    assert by_key["direct|direct"]["orders"] == 1  # the last touch holds the order
    assert by_key["x|b"]["revenue"]["last_non_direct"] == "100.000000"
    assert by_key["direct|direct"]["revenue"]["last_non_direct"] == "0.000000"
    assert by_key["x|b"]["revenue"]["linear"] == "50.000000"
    [sale] = [f.event for f in out if f.topic == "sales"]
    assert sale["amount"] == "100.00"
    assert sale["social"] == {"first_touch": "100.000000", "last_non_direct": "100.000000", "last_touch": "0.000000",
                              "linear": "50.000000", "position_based": "50.000000",
                              "time_decay": by_key["x|b"]["revenue"]["time_decay"]}
    # the click converted (last non-direct), though the order's last touch was direct
    assert [(f.key, f.event["n"]) for f in out if f.topic == "converted"] == [("x|b", 1)]


def test_an_order_with_only_direct_visits_credits_direct_and_converts_no_click(t0):
    t = t0 - 3 * DAY  # (the newest event must not be ahead of the clock)
    fam = Shopper(lookback_ms=7 * DAY, grace_ms=5 * MIN)
    state = fam.new_state()
    out = fam.apply("u1", state, [session(1, t, "direct"), order(1, t + 1000, "20.00")], t)
    [credit] = credited(out)
    assert credit.key == "direct|direct"
    assert credit.event["revenue"]["last_non_direct"] == "20.000000"  # every touch direct: the last one
    assert [f.event["social"] for f in out if f.topic == "sales"] == [{}]
    assert not [f for f in out if f.topic == "converted"]
    assert fam.close("u1", state, t + DAY)[0] == []  # attributed (to direct), not unattributed


def test_an_unattributed_order_is_in_the_revenue_of_all_orders_and_a_refund_takes_it_back(t0):
    t = t0 - 3 * DAY  # (the newest event must not be ahead of the clock)
    fam = Shopper(lookback_ms=7 * DAY, grace_ms=5 * MIN)
    state = fam.new_state()
    placed = fam.apply("u1", state, [order(1, t, "30.00", currency="EUR")], t)
    back = fam.apply("u1", state, [order(2, t + DAY, "30.00", currency="EUR", status="refunded", order_id="ord1")], t)
    sales = [(f.event["ts"], f.event["amount"], f.event["currency"]) for f in placed + back if f.topic == "sales"]
    assert sales == [(t, "30.00", "EUR"), (t + DAY, "-30.00", "EUR")]


def test_a_lead_converts_when_its_shopper_places_a_first_order_within_the_lookback(t0):
    t = t0 - 3 * DAY  # (the newest event must not be ahead of the clock)
    """Two leads before the first order both became customers; a lead after it did not (the
    shopper already was one); a second order converts nothing new; cancelling the first order
    (after the second was placed) leaves the earlier leads converted by the second, and the lead
    between the two unconverted: the shopper was a customer when it came (decided by ts)."""
    fam = Shopper(lookback_ms=7 * DAY, grace_ms=5 * MIN)
    state = fam.new_state()
    leads = [Lead(event_id=f"l{i}", ts=ts, platform="facebook", account_id="a", actor_id="u1")
             for i, ts in enumerate((t - 8 * DAY, t - DAY, t - HOUR, t + HOUR))]
    fam.apply("u1", state, leads, t)
    out = fam.apply("u1", state, [order(1, t, "40.00", order_id="first")], t)
    conv = sorted((f.event["cohort_ts"], f.event["n"]) for f in out if f.topic == "converted")
    assert conv == [(t - DAY, 1), (t - HOUR, 1)]  # the 8-day-old lead is outside the lookback
    assert not [f for f in fam.apply("u1", state, [order(2, t + 2 * HOUR, "5.00", order_id="second")], t)
                if f.topic == "converted"]
    back = fam.apply("u1", state, [order(3, t + 3 * HOUR, "40.00", status="cancelled", order_id="first")], t)
    conv = sorted((f.event["cohort_ts"], f.event["n"]) for f in back if f.topic == "converted")
    assert conv == []
    back = fam.apply("u1", state, [order(4, t + 4 * HOUR, "5.00", status="cancelled", order_id="second")], t)
    conv = sorted((f.event["cohort_ts"], f.event["n"]) for f in back if f.topic == "converted")
    assert conv == [(t - DAY, -1), (t - HOUR, -1)]  # no standing order: no lead became a customer
    assert all(f.key == "facebook|a" for f in back if f.topic == "converted")
