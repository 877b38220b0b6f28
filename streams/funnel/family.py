"""Funnel family: the leads an account's content and outreach bring, what they cost, and the
site sessions its links bring (the account stage's part of the selling funnel; new customers
and CPA are the conversion family's, checkouts the shopper's).

State per key (``platform|account``): the windowed aggregates of ``funnel.metrics`` and the
account's daily cohorts of clicks and leads.

**Cohorts.** A click converts when it is the last non-direct touch of an order placed within
the attribution lookback after it; a lead converts when its shopper places a first order
within the lookback after it (the shopper's state decides: ``conversion.shopper``, which
forwards ``Converted`` records). The click conversion rate of a UTC day is its converted
clicks ÷ its clicks, so it never exceeds 1; the lead-to-customer rate is its converted
leads ÷ its leads. A day's cohort is published (window ``1d``, revision 0) when the
watermark passes its end plus grace, and again with the next revision each time a
conversion (or a late click or lead) changes it, until the attribution lookback plus the
allowed lateness after its end, when no order can convert it any more. The live gauges are
the same ratios over the trailing windows' clicks and leads, converted so far.

**The shop's key** ``all|all`` holds the checkouts by the source of the shopper's last touch
before them, in the window of their start (``CheckoutOutcome`` records from the shopper:
started, then completed or, once start plus ``CHECKOUT_TIMEOUT`` passes, abandoned; a record
whose event id ends with ``RETRACTED`` takes one back when a late touch, start or completion
changes a checkout). Cart abandonment rate = abandoned ÷ started of the window's checkouts:
published when the window closes, corrected by revision as outcomes are decided and late
checkouts come. A source whose checkouts all moved elsewhere is left out (the stage
withdraws its earlier result). The key also holds the revenue of all orders (``Sale``
records: placed minus cancelled or refunded, by event time) and the part each model credits
to social touches: social's share of revenue = social credit ÷ revenue of all orders, per
model and currency (direct visits are the rest; orders without any touch count in the whole
only).

**The shop's counters** are cumulative sums of the same records, kept beside the windows
(state ``tot``, ``metrics.count``), live: ``socialpulse_checkouts_total{source,outcome}`` (a
checkout counts ``started`` as soon as the shopper sends it, ``abandoned`` at start plus
``CHECKOUT_TIMEOUT``) and ``socialpulse_unattributed_orders_total{currency}`` (a sale of an
order without any touch carries ``unattributed`` 1, its negation -1). A correction by late data
within the allowed lateness (a retraction, a late click attributing an order) takes a count
back: Prometheus reads the drop as a counter reset. An entry back at 0 is dropped, so the
totals are the same whatever order the records arrive in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NotRequired, TypedDict

from schemas.events import (
    PLATFORMS,
    SHOP_KEY,
    CheckoutOutcome,
    Click,
    Converted,
    Event,
    Lead,
    Sale,
    Session,
    account_key,
    of_account,
    split_account_key,
)
from schemas.results import Result, result_key

from .. import cohorts, windows
from ..family import Gauge, Output, Route, Sample
from ..windows import Agg, Windowed, WindowSpec, iso
from . import metrics as m

__all__ = ["Funnel", "social_account"]

_W = ("platform", "account", "window")
_WC = ("platform", "account", "window", "currency")


def social_account(event: Event) -> str | None:
    """The account whose link brought a session from social (None: not social, or no account)."""
    assert isinstance(event, Session)
    if event.source in PLATFORMS and event.account_id is not None:
        return account_key(event.platform or event.source, event.account_id)
    return None


@dataclass(frozen=True, slots=True)
class Metric:
    """One windowed metric: result and API name, help, value from a window's aggregate.
    ``additive``: a count or sum (``streams.family.Gauge``); ``activity``: counts events."""

    name: str
    help: str
    value: Callable[[Agg], float | int | None]
    additive: bool = True
    activity: bool = False

    @property
    def gauge(self) -> Gauge:
        return Gauge(f"socialpulse_{self.name}", self.help, _W, additive=self.additive, activity=self.activity)


METRICS: tuple[Metric, ...] = (
    Metric("leads", "Leads (sign-ups, forms, DM leads) in the trailing window.", lambda agg: agg["leads"], activity=True),
    Metric("lead_rate", "Leads / clicks in the trailing window (ratio).", m.lead_rate, additive=False),
    Metric("lead_rate_by_sessions", "Leads / sessions from social in the trailing window (ratio).",
           m.lead_rate_by_sessions, additive=False),
    Metric("social_sessions", "Site sessions this account's links brought, trailing window.", lambda agg: agg["soc"],
           activity=True),
    Metric("click_conversion_rate", "Of the trailing window's clicks, the share that is already the last non-direct "
           "touch of an order (never above 1).", lambda agg: m.converted_share(agg.get("cclk", 0), agg["clk"]),
           additive=False),
    Metric("lead_to_customer_rate", "Of the trailing window's leads, the share whose shopper has placed a first "
           "order since (within the attribution lookback).", lambda agg: m.converted_share(agg.get("lcust", 0), agg["leads"]),
           additive=False),
)
CPL = Gauge("socialpulse_cost_per_lead", "Spend / leads in the trailing window, in the spend's currency.", _WC,
            additive=False)
ORDER_REVENUE = Gauge("socialpulse_order_revenue", "Revenue of all orders (placed minus cancelled and refunded) in the "
                      "trailing window, per currency.", ("window", "currency"))
SOCIAL_SHARE = Gauge("socialpulse_social_revenue_share", "Revenue credited to social touches / revenue of all orders, "
                     "trailing window, per attribution model and currency (ratio).", ("window", "model", "currency"),
                     additive=False)
CHECKOUTS_TOTAL = Gauge(
    "socialpulse_checkouts_total", "Checkouts started, completed and abandoned (CHECKOUT_TIMEOUT), by the source of "
    "the shopper's last touch before the start, counted live on the shop's key. A correction by late data within "
    "ALLOWED_LATENESS (a touch that changes a checkout's source, a late start or completion) can take a count back, "
    "which Prometheus reads as a counter reset (rate() and increase() handle it).", ("source", "outcome"), "counter")
UNATTRIBUTED_TOTAL = Gauge(
    "socialpulse_unattributed_orders_total", "Placed orders with no touch in the attribution lookback, by currency, "
    "counted live when the order's sale is sent (a cancellation or refund leaves it counted). A correction by late "
    "data within ALLOWED_LATENESS (a click that attributes the order) can take a count back, which Prometheus reads "
    "as a counter reset (rate() and increase() handle it).", ("currency",), "counter")
ABANDONMENT = Gauge("socialpulse_cart_abandonment_rate", "Checkouts abandoned (CHECKOUT_TIMEOUT) / started, of the "
                    "checkouts started in the trailing window, by the source of the shopper's last touch (ratio).",
                    ("window", "source"), additive=False)
#: the cohort results: (metric, numerator, denominator)
COHORT_RESULTS = (("click_conversion_rate", m.CCLK, m.CLK), ("lead_to_customer_rate", m.LCUST, m.LEADS))


class State(TypedDict):
    """A key's funnel slot (its changelog JSON has the same keys)."""

    win: Windowed
    coh: NotRequired[dict[int, cohorts.Cohort]]  # UTC day -> the day's clicks and leads and their conversions
    tot: NotRequired[m.Totals]  # (the shop's key) cumulative checkouts and unattributed orders


class Funnel:
    name = "funnel"
    # converted, sales: from the shopper stream (``conversion.shopper``)
    topics = frozenset({"leads", "clicks", "sessions", "spend", "converted", "sales", "checkout_outcomes"})
    routes = (
        Route("leads", of_account), Route("clicks", of_account), Route("spend", of_account),
        Route("sessions", social_account, primary=False),  # counted on its shopper (``Shopper``)
    )
    counters: tuple[Gauge, ...] = ()
    gauges: tuple[Gauge, ...] = (*(x.gauge for x in METRICS), CPL,
                                 ORDER_REVENUE, SOCIAL_SHARE, ABANDONMENT, CHECKOUTS_TOTAL, UNATTRIBUTED_TOTAL)
    merge = staticmethod(m.merge)

    def __init__(self, spec: WindowSpec, lookback_ms: int = 7 * 86_400_000) -> None:
        self.spec = spec
        #: how long after its end a cohort can still change: an order within the lookback, arriving late
        self.cohort_open_ms = lookback_ms + spec.lateness_ms

    @classmethod
    def from_settings(cls, settings: Any, spec: WindowSpec) -> Funnel:
        return cls(spec, settings.attribution_lookback)

    def constants(self) -> Iterable[tuple[Gauge, float]]:
        return ()

    # -- state -------------------------------------------------------------
    def new_state(self) -> State:
        return {"win": windows.new_windowed()}

    def decode_state(self, raw: dict[str, Any]) -> State:
        state: State = {"win": windows.decode_windowed(raw["win"])}
        if raw.get("coh"):
            state["coh"] = cohorts.decode(raw["coh"])
        tot = m.decode_totals(raw.get("tot"))  # (absent before the shop's key counted)
        if tot:
            state["tot"] = tot
        return state

    def is_empty(self, state: State) -> bool:
        return windows.is_empty(state["win"]) and not state.get("coh") and not state.get("tot")

    def windowed(self, state: State) -> Windowed:
        return state["win"]

    # -- events ------------------------------------------------------------
    def apply(self, key: str, state: State, events: list[Event], watermark: int) -> list[Output]:
        parts: dict[int, Agg] = {}
        for event in events:
            if isinstance(event, Converted):
                self._convert(state, event, watermark)
                continue
            if isinstance(event, Click | Lead):
                self._bump(state, event.ts, m.CLK if isinstance(event, Click) else m.LEADS)
            elif isinstance(event, CheckoutOutcome | Sale):  # (the shop's key only gets them)
                tot = state.setdefault("tot", {})
                m.count(tot, event)
                if not tot:
                    del state["tot"]
            b = windows.bucket_start(event.ts, self.spec.bucket_ms)
            agg = parts.get(b)
            if agg is None:
                agg = parts[b] = m.empty()
            m.fold(agg, event)
        for b, agg in parts.items():
            windows.add(state["win"], b, agg, self.spec, m.merge, watermark)
        return []

    @staticmethod
    def _bump(state: State, ts: int, index: int, n: int = 1) -> None:
        cohorts.bump(state.setdefault("coh", {}), ts, index, n, m.COUNTS)

    def _convert(self, state: State, event: Converted, watermark: int) -> None:
        """A click or lead of this account converted (or stopped being converted)."""
        click = event.kind == "click"
        part = m.empty()
        part["cclk" if click else "lcust"] = event.n
        windows.add_bucket(state["win"], event.cohort_ts, part, self.spec, m.merge, watermark)
        if windows.bucket_start(event.cohort_ts, cohorts.DAY_MS) + cohorts.DAY_MS + self.cohort_open_ms > watermark:
            self._bump(state, event.cohort_ts, m.CCLK if click else m.LCUST, event.n)
        # (else its day can no longer change: a conversion taken that late must not publish it anew)

    def close(self, key: str, state: State, watermark: int) -> tuple[list[Output], bool]:
        changed = windows.prune(state["win"], watermark, self.spec)
        out, moved = cohorts.close(state, watermark, self.spec.grace_ms, self.cohort_open_ms,
                                   lambda day, c: self._cohort_results(key, day, c))
        return out, changed or moved

    @staticmethod
    def _cohort_results(key: str, day: int, c: cohorts.Cohort) -> list[Output]:
        return [cohorts.result("funnel", metric, key, day, c, m.converted_share(c[num], c[den]) or 0.0,
                               converted=min(c[num], c[den]), total=c[den])
                for metric, num, den in COHORT_RESULTS if c[den] > 0]

    def results(self, key: str, cw: windows.ClosedWindow, state: State, revision: int) -> list[Output]:
        platform, account = split_account_key(key)
        agg, start = cw.agg, iso(cw.start)
        common = {"family": "funnel", "platform": platform, "account_id": account, "window": cw.label,
                  "window_start": start, "window_end": iso(cw.end), "revision": revision}
        out: list[Output] = []

        def add(metric: str, value: Any, *key_extra: str, **fields: Any) -> None:
            if value is not None:
                out.append(Result(metric=metric, value=float(value), **common, **fields,  # type: ignore[arg-type]
                                  key=result_key(metric, platform, account, cw.label, start, *key_extra)))

        if key == SHOP_KEY:
            for cur, v in sorted(agg.get("orev", {}).items()):
                add("order_revenue", Decimal(v), cur, currency=cur, amount=v)
            for (model, cur), share in m.social_share(agg).items():
                add("social_revenue_share", share, model, cur, model=model, currency=cur)
            for src, outcomes in m.checkouts(agg).items():
                add("checkouts", outcomes.get("started", 0), src, source=src, **outcomes)
            for src, rate in m.abandonment(agg).items():
                add("cart_abandonment_rate", rate, src, source=src)
            return out
        if not (agg["leads"] or agg["soc"]):
            return []  # clicks and spend alone are the engagement and conversion families' results
        for x in METRICS:
            if x.name in ("click_conversion_rate", "lead_to_customer_rate"):
                continue  # published per daily cohort, corrected as conversions come (``close``)
            extra = {"by_kind": dict(sorted(agg["kinds"].items()))} if x.name == "leads" else {}
            add(x.name, x.value(agg), **extra)
        for cur, v in m.cost_per_lead(agg["spend"], agg["leads"]).items():
            add("cost_per_lead", v, cur, currency=cur)
        for name, c in sorted(agg["camp"].items()):
            if c["leads"]:
                add("campaign_leads", c["leads"], name, campaign_id=name)
            for cur, v in m.cost_per_lead(c["spend"], c["leads"]).items():
                add("campaign_cost_per_lead", v, name, cur, campaign_id=name, currency=cur)
        return out

    # -- reads -------------------------------------------------------------
    def _trailing(self, state: State, watermark: int, size: int) -> Agg:
        return windows.trailing(state["win"], watermark, size, m.merge) or m.empty()

    def samples(self, key: str, state: State, watermark: int) -> Iterable[Sample]:
        platform, account = split_account_key(key)
        if key == SHOP_KEY:  # cumulative, live: a correction can take a count back
            tot = state.get("tot", {})
            for name, n in sorted(tot.get("ck", {}).items()):
                src, _, outcome = name.rpartition("|")
                yield CHECKOUTS_TOTAL.name, (src, outcome), float(n)
            for cur, n in sorted(tot.get("un", {}).items()):
                yield UNATTRIBUTED_TOTAL.name, (cur,), float(n)
        for size in self.spec.trailing_ms:
            agg = self._trailing(state, watermark, size)
            if key == SHOP_KEY:
                label = self.spec.label(size)
                for cur, v in agg.get("orev", {}).items():
                    yield ORDER_REVENUE.name, (label, cur), float(v)
                for (model, cur), share in m.social_share(agg).items():
                    yield SOCIAL_SHARE.name, (label, model, cur), float(share)
                for src, rate in m.abandonment(agg).items():
                    yield ABANDONMENT.name, (label, src), rate
                continue
            if not (agg["leads"] or agg["soc"] or agg["clk"]):
                continue  # no funnel series for an account without clicks, leads or sessions
            w = (platform, account, self.spec.label(size))
            for x in METRICS:
                value = x.value(agg)
                if value is not None:
                    yield f"socialpulse_{x.name}", w, float(value)
            for cur, v in m.cost_per_lead(agg["spend"], agg["leads"]).items():
                yield CPL.name, (*w, cur), float(v)

    def view(self, key: str, state: State, watermark: int) -> dict[str, Any]:
        out: dict[str, Any] = {"windows": {}, "cohorts": {
            iso(day): {"clicks": c[m.CLK], "converted_clicks": min(c[m.CCLK], c[m.CLK]),
                       "click_conversion_rate": m.converted_share(c[m.CCLK], c[m.CLK]),
                       "leads": c[m.LEADS], "converted_leads": min(c[m.LCUST], c[m.LEADS]),
                       "lead_to_customer_rate": m.converted_share(c[m.LCUST], c[m.LEADS]),
                       "revision": cohorts.revision(c) if cohorts.revision(c) >= 0 else None}
            for day, c in sorted(state.get("coh", {}).items())}}
        if key == SHOP_KEY:  # the counters' values (cumulative; live)
            tot = state.get("tot", {})
            out["checkouts_total"] = m.checkout_totals(tot)
            out["unattributed_orders_total"] = dict(sorted(tot.get("un", {}).items()))
        for size in self.spec.trailing_ms:
            agg = self._trailing(state, watermark, size)
            view: dict[str, Any] = {x.name: x.value(agg) for x in METRICS}
            if key == SHOP_KEY:
                view["order_revenue"] = dict(sorted(agg.get("orev", {}).items()))
                view["social_revenue_share"] = {f"{model}/{cur}": str(v) for (model, cur), v in m.social_share(agg).items()}
                view["checkouts"] = m.checkouts(agg)
                view["cart_abandonment_rate"] = m.abandonment(agg)
            view["leads_by_kind"] = dict(sorted(agg["kinds"].items()))
            view["cost_per_lead"] = {cur: str(v) for cur, v in m.cost_per_lead(agg["spend"], agg["leads"]).items()}
            view["campaigns"] = {
                name: {"leads": c["leads"], "cost_per_lead": {cur: str(v) for cur, v in m.cost_per_lead(c["spend"], c["leads"]).items()}}
                for name, c in sorted(agg["camp"].items()) if c["leads"]
            }
            out["windows"][self.spec.label(size)] = view
        return out
