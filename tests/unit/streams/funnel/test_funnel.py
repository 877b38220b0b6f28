"""The funnel family (streams/funnel/) without Kafka: a closed window's results, the gauges
and the API view agree, and a window with neither leads nor sessions publishes nothing."""

import time
from decimal import Decimal

from schemas.events import SHOP_KEY, CheckoutOutcome, Click, Converted, Lead, Sale, Session, Spend
from schemas.results import result_key
from streams import windows
from streams.funnel import Funnel
from streams.windows import WindowSpec

MIN = 60_000
SPEC = WindowSpec(bucket_ms=MIN, trailing_ms=(60 * MIN,), closed_ms=(60 * MIN,), grace_ms=5 * MIN)
KEY = "linkedin|seller"


def test_a_closed_window_publishes_leads_rates_and_cost_per_lead():
    now = int(time.time() * 1000)
    t0 = now - now % (60 * MIN) - 2 * 60 * MIN  # an hour two hours ago
    fam = Funnel(SPEC)
    state = fam.new_state()
    base = {"platform": "linkedin", "account_id": "seller"}
    events = [Spend(event_id="s", ts=t0, **base, campaign_id="c1", amount=Decimal("30"), currency="EUR")]
    events += [Click(event_id=f"k{i}", ts=t0 + i, **base, actor_id=f"u{i}") for i in range(40)]
    events += [Session(event_id=f"s{i}", ts=t0 + i, actor_id=f"u{i}", source="linkedin", account_id="seller") for i in range(20)]
    events += [Lead(event_id=f"l{i}", ts=t0 + 100 + i, **base, actor_id=f"u{i}", campaign_id="c1", kind="dm" if i else "form")
               for i in range(4)]
    fam.apply(KEY, state, events, t0)
    (cw,) = windows.close_due(state["win"], t0 + 66 * MIN, SPEC)
    by = {(r.metric, getattr(r, "currency", None), getattr(r, "campaign_id", None)): r for r in fam.results(KEY, cw, state, 0)}
    assert by[("leads", None, None)].value == 4 and by[("leads", None, None)].by_kind == {"dm": 3, "form": 1}
    assert by[("lead_rate", None, None)].value == 0.1  # 4 leads / 40 clicks
    assert by[("lead_rate_by_sessions", None, None)].value == 0.2  # 4 / 20 sessions from social
    assert by[("social_sessions", None, None)].value == 20
    assert by[("cost_per_lead", "EUR", None)].value == 7.5
    assert by[("campaign_leads", None, "c1")].value == 4 and by[("campaign_cost_per_lead", "EUR", "c1")].value == 7.5
    assert all(r.family == "funnel" and r.window == "1h" for r in by.values())
    assert len({r.key for r in by.values()}) == len(by)  # one key per result


def test_spend_alone_publishes_no_funnel_series_and_clicks_alone_show_zero_leads():
    now = int(time.time() * 1000)
    fam = Funnel(SPEC)
    state = fam.new_state()
    fam.apply(KEY, state, [Spend(event_id="s", ts=now - 1000, platform="linkedin", account_id="seller", campaign_id="c",
                                 amount=Decimal("5"), currency="EUR")], now)
    assert list(fam.samples(KEY, state, now)) == []
    fam.apply(KEY, state, [Click(event_id="k", ts=now - 1000, platform="linkedin", account_id="seller", actor_id="u")], now)
    samples = {name: v for name, _, v in fam.samples(KEY, state, now)}
    assert samples["socialpulse_leads"] == 0 and samples["socialpulse_lead_rate"] == 0  # (the no-leads alert needs the 0)
    assert samples["socialpulse_click_conversion_rate"] == 0
    view = fam.view(KEY, state, now)["windows"]["1h"]
    assert view["leads"] == 0 and view["lead_rate"] == 0.0 and view["cost_per_lead"] == {}


DAY = 86_400_000


def converted(i: int, ts: int, cohort_ts: int, kind: str = "click", n: int = 1) -> Converted:
    return Converted(event_id=f"c{i}", ts=ts, platform="linkedin", account_id="seller", kind=kind, cohort_ts=cohort_ts, n=n)


def test_a_daily_cohort_is_published_at_its_end_and_corrected_as_conversions_come_until_the_lookback():
    """Day D: 4 clicks and 2 leads. One click converts that day; the cohort publishes 1/4 at
    D + 1d + grace; a conversion two days later (beyond the allowed lateness of a window)
    publishes revision 1 with 2/4; a cancellation takes one back (revision 2); after the
    lookback plus the allowed lateness the cohort is gone."""
    now = int(time.time() * 1000)
    day = now - now % DAY - 12 * DAY
    spec = WindowSpec(bucket_ms=MIN, trailing_ms=(60 * MIN,), closed_ms=(60 * MIN,), grace_ms=5 * MIN, allowed_ms=DAY)
    fam = Funnel(spec, lookback_ms=7 * DAY)
    state = fam.new_state()
    base = {"platform": "linkedin", "account_id": "seller"}
    fam.apply(KEY, state, [Click(event_id=f"k{i}", ts=day + i * 1000, **base, actor_id=f"u{i}") for i in range(4)]
              + [Lead(event_id=f"l{i}", ts=day + 5000 + i, **base, actor_id=f"u{i}") for i in range(2)], day)
    fam.apply(KEY, state, [converted(1, day + 3 * 3_600_000, day)], day)
    assert fam.close(KEY, state, day + DAY)[0] == []  # not yet: end plus grace
    out, changed = fam.close(KEY, state, day + DAY + 5 * MIN)
    by = {r.metric: r for r in out}
    assert changed and by["click_conversion_rate"].value == 0.25 and by["click_conversion_rate"].revision == 0
    assert (by["click_conversion_rate"].converted, by["click_conversion_rate"].total) == (1, 4)
    assert by["lead_to_customer_rate"].value == 0.0 and by["click_conversion_rate"].window == "1d"
    assert fam.close(KEY, state, day + DAY + 6 * MIN)[0] == []  # published once
    fam.apply(KEY, state, [converted(2, day + 3 * DAY, day + 1000), converted(3, day + 3 * DAY, day + 5000, "lead")],
              day + 3 * DAY)
    out, _ = fam.close(KEY, state, day + 3 * DAY)
    by = {r.metric: r for r in out}
    assert (by["click_conversion_rate"].value, by["click_conversion_rate"].revision) == (0.5, 1)
    assert (by["lead_to_customer_rate"].value, by["lead_to_customer_rate"].revision) == (0.5, 1)
    assert by["click_conversion_rate"].key == result_key("click_conversion_rate", "linkedin", "seller", "1d", windows.iso(day))
    fam.apply(KEY, state, [converted(4, day + 4 * DAY, day + 1000, n=-1)], day + 4 * DAY)
    out, _ = fam.close(KEY, state, day + 4 * DAY)
    assert [(r.metric, r.value, r.revision) for r in out] == [("click_conversion_rate", 0.25, 2),
                                                              ("lead_to_customer_rate", 0.5, 2)]
    view = fam.view(KEY, state, day + 4 * DAY)["cohorts"][windows.iso(day)]
    assert view["click_conversion_rate"] == 0.25 and view["converted_leads"] == 1 and view["revision"] == 2
    assert fam.close(KEY, state, day + DAY + 8 * DAY - 1)[1] is False
    assert fam.close(KEY, state, day + DAY + 8 * DAY) == ([], True)  # lookback 7d + lateness 1d after its end
    assert "coh" not in state


def test_the_live_click_conversion_rate_never_exceeds_one():
    now = int(time.time() * 1000)
    fam = Funnel(SPEC)
    state = fam.new_state()
    fam.apply(KEY, state, [Click(event_id="k", ts=now - 2000, platform="linkedin", account_id="seller", actor_id="u")], now)
    fam.apply(KEY, state, [converted(1, now - 1000, now - 2000), converted(2, now - 500, now - 1500)], now)  # one in flight
    samples = {name: v for name, _, v in fam.samples(KEY, state, now)}
    assert samples["socialpulse_click_conversion_rate"] == 1.0


def test_the_shop_key_publishes_revenue_of_all_orders_and_socials_share():
    now = int(time.time() * 1000)
    t0 = now - now % (60 * MIN) - 2 * 60 * MIN
    fam = Funnel(SPEC)
    state = fam.new_state()
    sales = [Sale(event_id="a", ts=t0, order_id="o1", currency="USD", amount=Decimal("100"),
                  social={"last_touch": Decimal("0"), "last_non_direct": Decimal("100")}),
             Sale(event_id="b", ts=t0 + 1, order_id="o2", currency="USD", amount=Decimal("60"), social={}),
             Sale(event_id="c", ts=t0 + 2, order_id="o3", currency="USD", amount=Decimal("40"),
                  social={"last_touch": Decimal("40"), "last_non_direct": Decimal("40")}),
             Sale(event_id="d", ts=t0 + 3, order_id="o2", currency="USD", amount=Decimal("-60"), social={})]  # refunded
    fam.apply(SHOP_KEY, state, sales, t0)
    (cw,) = windows.close_due(state["win"], t0 + 66 * MIN, SPEC)
    by = {(r.metric, getattr(r, "model", None)): r for r in fam.results(SHOP_KEY, cw, state, 0)}
    assert by[("order_revenue", None)].value == 140 and by[("order_revenue", None)].currency == "USD"
    assert by[("social_revenue_share", "last_touch")].value == 40 / 140
    assert by[("social_revenue_share", "last_non_direct")].value == 1.0
    assert by[("order_revenue", None)].platform == "all"


def test_the_shop_key_publishes_cart_abandonment_by_source_of_the_outcomes_decided_in_the_window():
    now = int(time.time() * 1000)
    t0 = now - now % (60 * MIN) - 2 * 60 * MIN
    fam = Funnel(SPEC)
    state = fam.new_state()
    outcomes = [("instagram", "started")] * 4 + [("instagram", "completed")] * 1 + [("instagram", "abandoned")] * 3
    outcomes += [("direct", "started")] * 2 + [("direct", "abandoned")]
    fam.apply(SHOP_KEY, state, [CheckoutOutcome(event_id=f"o{i}", ts=t0 + i, checkout_id=f"k{i}", source=src,
                                                outcome=outcome) for i, (src, outcome) in enumerate(outcomes)], t0)
    (cw,) = windows.close_due(state["win"], t0 + 66 * MIN, SPEC)
    by = {(r.metric, r.source): r for r in fam.results(SHOP_KEY, cw, state, 0)}
    assert by[("cart_abandonment_rate", "instagram")].value == 0.75
    assert by[("cart_abandonment_rate", "direct")].value == 0.5
    assert (by[("checkouts", "instagram")].value, by[("checkouts", "instagram")].abandoned) == (4, 3)
    view = fam.view(SHOP_KEY, state, t0 + 30 * MIN)["windows"]["1h"]
    assert view["cart_abandonment_rate"] == {"direct": 0.5, "instagram": 0.75}
