"""The shop's counters on its funnel key (``all|all``): ``socialpulse_checkouts_total`` and
``socialpulse_unattributed_orders_total`` are signed sums of the shopper's ``CheckoutOutcome``
and ``Sale`` records, so they are live (nothing waits for the allowed lateness) and the same
whatever order those records arrive in, retractions and negated sales included."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import SHOP_KEY, Checkout, CheckoutOutcome, Click, Event, Order, Sale, Session
from streams.conversion import Shopper
from streams.exporter import Metrics
from streams.family import Forward
from streams.funnel import Funnel
from streams.funnel import metrics as m
from streams.funnel.family import CHECKOUTS_TOTAL, UNATTRIBUTED_TOTAL
from streams.windows import WindowSpec

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
SPEC = WindowSpec(bucket_ms=MIN, trailing_ms=(HOUR,), closed_ms=(15 * MIN, HOUR), grace_ms=5 * MIN, allowed_ms=DAY)
NOW = int(time.time() * 1000)
T = NOW - NOW % HOUR - 2 * DAY


def shopper() -> Shopper:
    return Shopper(7 * DAY, grace_ms=SPEC.grace_ms, checkout_timeout_ms=HOUR, lateness_ms=SPEC.lateness_ms)


def co(n: int, ts: int, cid: str, status: str = "started", actor: str = "u1") -> Checkout:
    return Checkout(event_id=f"c{n}", ts=ts, checkout_id=cid, actor_id=actor, status=status)


def order(n: int, ts: int, order_id: str, status: str = "placed", currency: str = "EUR", actor: str = "u1") -> Order:
    return Order(event_id=f"o{n}", ts=ts, order_id=order_id, actor_id=actor, amount=Decimal("20.00"),
                 currency=currency, status=status)


def click(n: int, ts: int, platform: str = "facebook", actor: str = "u1") -> Click:
    return Click(event_id=f"k{n}", ts=ts, platform=platform, account_id="a", actor_id=actor)


def records(outputs: list[Any]) -> list[Event]:
    """The shopper's records for the shop's key, as that key's stage validates them."""
    out: list[Event] = []
    for f in outputs:
        if isinstance(f, Forward) and f.key == SHOP_KEY:
            assert f.topic in ("checkout_outcomes", "sales")
            out.append((CheckoutOutcome if f.topic == "checkout_outcomes" else Sale).model_validate(f.event))
    return out


def counters(funnel: Funnel, state: Any, wm: int) -> dict[tuple[str, ...], float]:
    names = (CHECKOUTS_TOTAL.name, UNATTRIBUTED_TOTAL.name)
    return {(name, *labels): v for name, labels, v in funnel.samples(SHOP_KEY, state, wm) if name in names}  # type: ignore[misc]


#: two shoppers: checkouts (completed, abandoned, one whose source a late click corrects), orders
#: without a touch (one a late click attributes, one refunded, one in USD), one order with a touch
EVENTS: list[Event] = [
    co(1, T, "a"), co(2, T + 10 * MIN, "a", "completed"),
    co(3, T + 20 * MIN, "b"),  # abandoned at T + 80 min
    click(4, T + 25 * MIN, "tiktok"), co(5, T + 30 * MIN, "c"),  # abandoned, under tiktok
    order(6, T + 40 * MIN, "A"),  # attributed: the tiktok click
    order(7, T + 5 * MIN, "B"),  # no touch before it ...
    click(8, T - 2 * MIN, "x"),  # ... until this click, read late: B is attributed, a and b move from none to x
    order(9, T + 10 * MIN, "C", actor="u2"), order(10, T + 3 * HOUR, "C", "refunded", actor="u2"),  # counted: placed
    order(11, T + 12 * MIN, "D", currency="USD", actor="u2"),
    co(12, T + 50 * MIN, "d", actor="u2"), co(13, T + 50 * MIN + HOUR + 1, "d", "completed", actor="u2"),  # too late
    Session(event_id="s14", ts=T + 45 * MIN, actor_id="u2", source="direct"),
]
END = T + 2 * DAY


def drive(order_of_inputs: list[Event]) -> list[Event]:
    """The shopper's records for the shop's key, the inputs read one by one (watermark at the
    newest ``ts`` read so far), then ticks until everything is final."""
    fam = shopper()
    states: dict[str, Any] = {}
    out: list[Any] = []
    wm = T - HOUR
    for e in order_of_inputs:
        actor = e.actor_id  # type: ignore[attr-defined]
        state = states.setdefault(actor, fam.new_state())
        wm = max(wm, e.ts)
        for a, s in states.items():
            out += fam.close(a, s, wm)[0]
        out += fam.apply(actor, state, [e], wm)
    for tick in range(wm, END, 10 * MIN):
        for a, s in states.items():
            out += fam.close(a, s, tick)[0]
    return records(out)


RECORDS = drive(EVENTS)  # (as listed: the click is read after the order and the checkouts it precedes)


def totals(batches: list[list[Event]]) -> tuple[m.Totals, dict[tuple[str, ...], float], dict[str, Any]]:
    funnel = Funnel(SPEC)
    state = funnel.new_state()
    for batch in batches:
        funnel.apply(SHOP_KEY, state, batch, END)
    view = funnel.view(SHOP_KEY, state, END)
    return state.get("tot", {}), counters(funnel, state, END), {k: view[k] for k in ("checkouts_total",
                                                                                  "unattributed_orders_total")}


REFERENCE = totals([RECORDS])


def test_the_reference_counts_every_checkout_and_each_order_without_a_touch():
    tot, samples, view = REFERENCE
    assert any(m.checkout_sign(r) < 0 for r in RECORDS if isinstance(r, CheckoutOutcome))  # retractions in it
    assert any(r.unattributed < 0 for r in RECORDS if isinstance(r, Sale))  # and a sale taken back
    assert tot == {"ck": {"x|started": 2, "x|completed": 1, "x|abandoned": 1, "tiktok|started": 1,
                          "tiktok|abandoned": 1, "direct|started": 1, "direct|abandoned": 1},
                   "un": {"EUR": 1, "USD": 1}}  # C (refunded: it was placed) and D; B attributed late
    assert samples[("socialpulse_checkouts_total", "x", "abandoned")] == 1.0
    assert samples[("socialpulse_unattributed_orders_total", "EUR")] == 1.0
    assert ("socialpulse_checkouts_total", "none", "started") not in samples  # a moved to x: nothing left
    assert view == {"checkouts_total": {"direct": {"abandoned": 1, "started": 1},
                                        "tiktok": {"abandoned": 1, "started": 1},
                                        "x": {"abandoned": 1, "completed": 1, "started": 2}},
                    "unattributed_orders_total": {"EUR": 1, "USD": 1}}


@st.composite
def shuffled(draw: st.DrawFn, items: list[Event]) -> list[list[Event]]:
    order = draw(st.permutations(items))
    cuts = sorted(set(draw(st.lists(st.integers(1, len(order) - 1), max_size=6))))
    return [order[i:j] for i, j in zip([0, *cuts], [*cuts, len(order)], strict=True)]


@settings(max_examples=80, deadline=None)
@given(shuffled(RECORDS))
def test_the_shop_counters_are_the_same_whatever_order_the_shoppers_records_arrive_in(batches):
    assert totals(batches) == REFERENCE


@settings(max_examples=30, deadline=None)
@given(st.permutations(EVENTS))
def test_the_shop_counters_are_the_same_whatever_order_the_shopper_reads_its_events_in(events):
    assert totals([drive(events)]) == REFERENCE


def test_the_counters_are_live():
    """A started checkout counts at once, an abandoned one at start + CHECKOUT_TIMEOUT; an order
    without a touch counts when its sale is sent and a late click that attributes it takes it back
    (and moves the checkout it precedes from ``none`` to the click's platform)."""
    fam, funnel = shopper(), Funnel(SPEC)
    st_, ft = fam.new_state(), funnel.new_state()

    def step(outputs: list[Any], wm: int) -> dict[tuple[str, ...], float]:
        if records(outputs):
            funnel.apply(SHOP_KEY, ft, records(outputs), wm)
        return counters(funnel, ft, wm)

    assert step(fam.apply("u1", st_, [co(1, T, "k")], T), T) == {("socialpulse_checkouts_total", "none", "started"): 1}
    assert step(fam.close("u1", st_, T + HOUR - 1)[0], T + HOUR - 1) == {
        ("socialpulse_checkouts_total", "none", "started"): 1}
    abandoned = {("socialpulse_checkouts_total", "none", "started"): 1,
                 ("socialpulse_checkouts_total", "none", "abandoned"): 1}
    assert step(fam.close("u1", st_, T + HOUR)[0], T + HOUR) == abandoned  # start + timeout
    now = step(fam.apply("u1", st_, [order(2, T + 5 * MIN, "A")], T + HOUR), T + HOUR)
    assert now == {**abandoned, ("socialpulse_unattributed_orders_total", "EUR"): 1}  # its sale is sent
    later = T + 6 * HOUR  # far beyond grace, within the allowed lateness
    assert step(fam.apply("u1", st_, [click(3, T - MIN, "linkedin")], later), later) == {
        ("socialpulse_checkouts_total", "linkedin", "started"): 1,
        ("socialpulse_checkouts_total", "linkedin", "abandoned"): 1}  # taken back: attributed
    assert step(fam.close("u1", st_, T + 2 * DAY)[0], T + 2 * DAY) == {
        ("socialpulse_checkouts_total", "linkedin", "started"): 1,
        ("socialpulse_checkouts_total", "linkedin", "abandoned"): 1}  # nothing more at finality


def test_the_totals_survive_the_changelog_and_old_records_without_them_decode():
    funnel = Funnel(SPEC)
    state = funnel.new_state()
    funnel.apply(SHOP_KEY, state, RECORDS, END)
    import orjson
    raw = orjson.loads(orjson.dumps(state, option=orjson.OPT_NON_STR_KEYS))
    assert funnel.decode_state(raw)["tot"] == state["tot"]
    old = {k: v for k, v in raw.items() if k != "tot"}  # written before the shop's key counted
    assert "tot" not in funnel.decode_state(old)
    # a key holding only its counters is not empty (the stage keeps it); back at 0 it is
    bare = funnel.new_state()
    outcome = CheckoutOutcome(event_id="z", ts=T, checkout_id="z", source="none", outcome="started")
    funnel.apply(SHOP_KEY, bare, [outcome], T)
    bare["win"] = funnel.new_state()["win"]
    assert not funnel.is_empty(bare)
    funnel.apply(SHOP_KEY, bare, [outcome.model_copy(update={"event_id": "z" + m.RETRACTED})], T)
    bare["win"] = funnel.new_state()["win"]
    assert "tot" not in bare and funnel.is_empty(bare)


def test_the_exposition_declares_them_counters_that_a_correction_can_take_back():
    funnel = Funnel(SPEC)
    state = funnel.new_state()
    funnel.apply(SHOP_KEY, state, RECORDS, END)
    metrics = Metrics()
    metrics.add_families(funnel.gauges, lambda: funnel.samples(SHOP_KEY, state, END))
    text = metrics.exposition().decode()
    assert "# TYPE socialpulse_checkouts_total counter" in text
    assert 'socialpulse_checkouts_total{outcome="abandoned",source="x"} 1.0' in text
    assert 'socialpulse_unattributed_orders_total{currency="USD"} 1.0' in text
    for g in (CHECKOUTS_TOTAL, UNATTRIBUTED_TOTAL):
        assert "ALLOWED_LATENESS" in g.help and "counter reset" in g.help
