"""Conversion family: clicks, credited orders and revenue, spend, CPA and ROI per account.

Its events on the ``account`` stream: ``clicks`` and ``spend`` (input topics) and
``credits`` (each touch's share of an order, from the shopper state in
``conversion.shopper``). Money stays ``Decimal`` (kept as strings in state) until
it is exported.

Window aggregate:

    {"clk": n, "orders": n,                       # clicks; last-touch credited orders
     "rev": {model: {currency: "amount"}},        # credited revenue per model
     "cur_orders": {currency: n},                 # last-touch orders per currency (for AOV)
     "spend": {currency: "amount"},
     "camp": {campaign: {"clk", "orders", "rev" (last touch, per currency), "spend"}}}
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any, NotRequired, TypedDict

from schemas.events import SHOP_KEY, Click, Credit, Event, Spend, of_account, split_account_key
from schemas.results import Result, result_key

from .. import windows
from ..family import Gauge, Output, Route, Sample
from ..windows import Agg, Windowed, WindowSpec, iso

__all__ = ["Conversion", "empty", "merge", "derived"]

_W = ("platform", "account", "window")
_WC = ("platform", "account", "window", "currency")
_CAMP = ("platform", "account", "campaign", "window", "currency")
NO_CAMPAIGN = "(none)"


def _add(d: dict[str, str], k: str, v: str | Decimal, prune: bool = False) -> None:
    total = Decimal(d.get(k, "0")) + Decimal(v)
    if prune and total == 0:
        d.pop(k, None)
    else:
        d[k] = str(total)


def _camp() -> dict[str, Any]:
    return {"clk": 0, "orders": 0, "cust": 0, "rev": {}, "spend": {}}


def empty() -> Agg:
    return {"clk": 0, "orders": 0, "cust": 0, "sess": 0, "site": 0.0, "rev": {}, "cur_orders": {}, "spend": {}, "camp": {}}


def _nothing(value: Any) -> bool:
    """True when an aggregate nets to zero everywhere (counts, amounts, every currency and campaign)."""
    if isinstance(value, dict):
        return all(_nothing(v) for v in value.values())
    if isinstance(value, list):
        return not value
    if isinstance(value, str):
        return Decimal(value) == 0
    return bool(value == 0)


def merge(into: Agg, other: Agg) -> None:
    """Add ``other`` into ``into``. Entries that net to zero go (a credit and its negation leave
    no currency, model or campaign behind: the same aggregate whatever order they came in)."""
    into["clk"] += other["clk"]
    into["orders"] += other["orders"]
    into["cust"] = into.get("cust", 0) + other.get("cust", 0)  # (absent in state written before new customers)
    into["sess"] = into.get("sess", 0) + other.get("sess", 0)
    into["site"] = round(into.get("site", 0.0) + other.get("site", 0.0), 6)  # (the same sum in any order)
    for model, by_cur in other["rev"].items():
        target = into["rev"].setdefault(model, {})
        for cur, v in by_cur.items():
            _add(target, cur, v, prune=True)
        if not target:
            del into["rev"][model]
    for cur, n in other["cur_orders"].items():
        n += into["cur_orders"].get(cur, 0)
        if n:
            into["cur_orders"][cur] = n
        else:
            into["cur_orders"].pop(cur, None)
    for cur, v in other["spend"].items():
        _add(into["spend"], cur, v, prune=True)
    for name, c in other["camp"].items():
        mine = into["camp"].setdefault(name, _camp())
        mine["clk"] += c["clk"]
        mine["orders"] += c["orders"]
        mine["cust"] = mine.get("cust", 0) + c.get("cust", 0)
        for cur, v in c["rev"].items():
            _add(mine["rev"], cur, v, prune=True)
        for cur, v in c["spend"].items():
            _add(mine["spend"], cur, v, prune=True)
        if not (mine["clk"] or mine["orders"] or mine["cust"] or mine["rev"] or mine["spend"]):
            del into["camp"][name]


def fold(agg: Agg, event: Event) -> None:
    if isinstance(event, Click):
        agg["clk"] += 1
        agg["camp"].setdefault(event.campaign_id or NO_CAMPAIGN, _camp())["clk"] += 1
    elif isinstance(event, Spend):
        _add(agg["spend"], event.currency, event.amount)
        _add(agg["camp"].setdefault(event.campaign_id, _camp())["spend"], event.currency, event.amount)
    elif isinstance(event, Credit):  # (folded on its own, then merged: what nets to zero goes)
        one = empty()
        _credit(one, event)
        merge(agg, one)


def _credit(agg: Agg, event: Credit) -> None:
    for model, amount in event.revenue.items():
        _add(agg["rev"].setdefault(model, {}), event.currency, amount)
    camp = agg["camp"].setdefault(event.campaign_id or NO_CAMPAIGN, _camp())
    if "last_touch" in event.revenue:
        _add(camp["rev"], event.currency, event.revenue["last_touch"])
    if event.orders:
        agg["orders"] += event.orders
        camp["orders"] += event.orders
        agg["cur_orders"][event.currency] = agg["cur_orders"].get(event.currency, 0) + event.orders
    if event.sessions or event.site_seconds:
        agg["sess"] = agg.get("sess", 0) + event.sessions
        agg["site"] = agg.get("site", 0.0) + event.site_seconds
    if event.customers:
        agg["cust"] = agg.get("cust", 0) + event.customers
        camp["cust"] = camp.get("cust", 0) + event.customers


def before_purchase(agg: Agg) -> dict[str, float]:
    """Sessions and time on site before a purchase, per attributed order (nothing without orders)."""
    orders = agg["orders"]
    if orders <= 0:
        return {}
    return {"sessions_before_purchase": agg.get("sess", 0) / orders,
            "time_on_site_before_purchase_seconds": agg.get("site", 0.0) / orders}


def derived(clicks: int, orders: int, revenue: dict[str, str], spend: dict[str, str], customers: int = 0) -> dict[str, Any]:
    """Conversion rate, CPA and ROI from one window's totals (None where undefined).

    CPA = spend / new customers (a shopper's first order, attributed by last touch), per
    spend currency: a repeat order is not a second acquisition. ROI = (revenue - spend) /
    spend, only where all credited revenue is in the spend's currency; otherwise the
    currencies are ``mismatched`` and no ROI is given.
    """
    rev = {c: Decimal(v) for c, v in revenue.items() if Decimal(v) != 0}
    out: dict[str, Any] = {
        "conversion_rate": orders / clicks if clicks else None,
        "cpa": {}, "roi": {}, "mismatched": [],
    }
    for cur, s in spend.items():
        amount = Decimal(s)
        if amount <= 0:
            continue
        if customers > 0:
            out["cpa"][cur] = amount / customers
        if set(rev) <= {cur}:
            out["roi"][cur] = (rev.get(cur, Decimal(0)) - amount) / amount
        else:
            out["mismatched"].append(cur)
    return out


class State(TypedDict):
    """A key's conversion slot (its changelog JSON has the same keys)."""

    win: Windowed  # aggregates of clicks, spend and credits per model (see ``empty``)
    mismatch: int  # final closed windows whose spend and revenue currencies differ
    #: published windows that can still be corrected: "size|start" -> mismatched currencies now
    mm: NotRequired[dict[str, int]]


class Conversion:
    name = "conversion"
    topics = frozenset({"clicks", "spend", "credits"})  # credits: from the shopper stream (``Shopper``)
    routes = (Route("clicks", of_account), Route("spend", of_account))
    counters: tuple[Gauge, ...] = ()
    gauges: tuple[Gauge, ...] = (
        Gauge("socialpulse_attributed_orders", "Last-touch credited orders in the trailing window.", _W, activity=True),
        Gauge("socialpulse_attributed_revenue", "Credited revenue in the trailing window, per model and currency.",
              ("platform", "account", "window", "model", "currency")),
        Gauge("socialpulse_conversion_rate", "Attributed orders / clicks in the trailing window (ratio).", _W,
              additive=False),
        Gauge("socialpulse_average_order_value", "Last-touch revenue / attributed orders, per currency.", _WC,
              additive=False),
        Gauge("socialpulse_spend", "Spend in the trailing window, per currency.", _WC),
        Gauge("socialpulse_sessions_before_purchase", "Site sessions in the lookback before an attributed order, "
              "per order (last touch), trailing window.", _W, additive=False),
        Gauge("socialpulse_time_on_site_before_purchase_seconds", "Time on site in the lookback before an attributed "
              "order, per order (last touch), trailing window.", _W, additive=False),
        Gauge("socialpulse_new_customers", "Shoppers whose first order was attributed here (last touch), trailing window.", _W),
        Gauge("socialpulse_cost_per_acquisition", "Spend / new customers, in the spend's currency.", _WC,
              additive=False),
        Gauge("socialpulse_return_on_investment", "(Revenue - spend) / spend, when currencies match (ratio).", _WC,
              additive=False),
        # per campaign: capped to the MAX_CAMPAIGNS most clicked, so not a sum over all of them
        Gauge("socialpulse_campaign_clicks", "Campaign clicks in the trailing window (campaigns capped).",
              ("platform", "account", "campaign", "window"), additive=False),
        Gauge("socialpulse_campaign_attributed_orders", "Campaign last-touch credited orders in the trailing window "
              "(campaigns capped).", ("platform", "account", "campaign", "window"), additive=False),
        Gauge("socialpulse_campaign_cost_per_acquisition", "Campaign spend / campaign new customers (campaigns capped).", _CAMP,
              additive=False),
        Gauge("socialpulse_campaign_return_on_investment", "Campaign ROI, last touch (campaigns capped).", _CAMP,
              additive=False),
        Gauge("socialpulse_currency_mismatch_total", "Closed windows whose spend and revenue currencies differ (no ROI), "
              "counted once final (window end + ALLOWED_LATENESS).",
              ("platform", "account"), "counter"),
    )

    merge = staticmethod(merge)

    def __init__(self, spec: WindowSpec, max_campaigns: int = 50) -> None:
        self.spec = spec
        self.max_campaigns = max_campaigns

    @classmethod
    def from_settings(cls, settings: Any, spec: WindowSpec) -> Conversion:
        return cls(spec, settings.max_campaigns)

    def constants(self) -> Iterable[tuple[Gauge, float]]:
        return ()

    def new_state(self) -> State:
        return {"win": windows.new_windowed(), "mismatch": 0}

    def decode_state(self, raw: dict[str, Any]) -> State:
        state: State = {"win": windows.decode_windowed(raw["win"]), "mismatch": raw.get("mismatch", 0)}
        if raw.get("mm"):
            state["mm"] = dict(raw["mm"])
        return state

    def is_empty(self, state: State) -> bool:
        return windows.is_empty(state["win"]) and not state["mismatch"] and not state.get("mm")

    def windowed(self, state: State) -> Windowed:
        return state["win"]  # type: ignore[no-any-return]

    def apply(self, key: str, state: State, events: list[Event], watermark: int) -> list[Output]:
        parts: dict[int, Agg] = {}
        for event in events:
            b = windows.bucket_start(event.ts, self.spec.bucket_ms)
            fold(parts.setdefault(b, empty()), event)
        for b, agg in parts.items():
            windows.add(state["win"], b, agg, self.spec, merge, watermark)
        return []

    def close(self, key: str, state: State, watermark: int) -> tuple[list[Output], bool]:
        changed = windows.prune(state["win"], watermark, self.spec)
        mm = state.get("mm")
        if mm:
            for name in [k for k in mm if sum(map(int, k.split("|"))) + self.spec.lateness_ms < watermark]:
                state["mismatch"] += mm.pop(name)  # no correction can reach it any more: final
                changed = True
            if not mm:
                del state["mm"]
        return [], changed

    def results(self, key: str, cw: windows.ClosedWindow, state: State, revision: int) -> list[Output]:
        """The results of one closed window (``revision`` 0 first, +1 per correction). A window's
        currency mismatch is counted once it is final (its end plus the allowed lateness), from its
        last revision: a late credit in another currency changes it until then."""
        platform, account = split_account_key(key)
        results, mismatched = self._results(platform, account, cw, revision)
        mm = state.setdefault("mm", {})
        mm[f"{cw.size}|{cw.start}"] = mismatched  # (the same value however often asked: idempotent)
        if not any(mm.values()):
            del state["mm"]
        return list(results)

    def _results(self, platform: str, account: str, cw: windows.ClosedWindow, revision: int = 0) -> tuple[list[Result], int]:
        agg, start = cw.agg, iso(cw.start)
        if _nothing(agg):  # credits taken back entirely (re-credited elsewhere): as if it never had any
            return [], 0
        common = {"family": "conversion", "platform": platform, "account_id": account, "window": cw.label,
                  "window_start": start, "window_end": iso(cw.end), "revision": revision}
        out: list[Result] = []

        def add(metric: str, value: Any, *key_extra: str, **fields: Any) -> None:
            if value is not None:
                key = result_key(metric, platform, account, cw.label, start, *key_extra)
                out.append(Result(metric=metric, value=float(value), key=key, **common, **fields))  # type: ignore[arg-type]

        last = agg["rev"].get("last_touch", {})
        d = derived(agg["clk"], agg["orders"], last, agg["spend"], agg.get("cust", 0))
        # clicks are published by the engagement family (one metric name, one key)
        add("attributed_orders", agg["orders"])
        add("new_customers", agg.get("cust", 0))
        for metric, value in before_purchase(agg).items():
            add(metric, value)
        add("conversion_rate", d["conversion_rate"])
        for model, by_cur in sorted(agg["rev"].items()):
            for cur, v in sorted(by_cur.items()):
                add("attributed_revenue", Decimal(v), model, cur, model=model, currency=cur, amount=v)
        for cur, n in sorted(agg["cur_orders"].items()):
            if n > 0:
                add("average_order_value", Decimal(last.get(cur, "0")) / n, cur, currency=cur)
        for cur, v in sorted(agg["spend"].items()):
            add("spend", Decimal(v), cur, currency=cur, amount=v)
        for cur, v in d["cpa"].items():
            add("cost_per_acquisition", v, cur, currency=cur)
        for cur, v in d["roi"].items():
            add("return_on_investment", v, cur, currency=cur)
        for name, c in sorted(agg["camp"].items()):
            cd = derived(c["clk"], c["orders"], c["rev"], c["spend"], c.get("cust", 0))
            add("campaign_attributed_orders", c["orders"], name, campaign_id=name)
            add("campaign_conversion_rate", cd["conversion_rate"], name, campaign_id=name)
            for cur, v in cd["cpa"].items():
                add("campaign_cost_per_acquisition", v, name, cur, campaign_id=name, currency=cur)
            for cur, v in cd["roi"].items():
                add("campaign_return_on_investment", v, name, cur, campaign_id=name, currency=cur)
        return out, len(d["mismatched"])

    def _trailing(self, state: State, watermark: int, size: int) -> Agg:
        return windows.trailing(state["win"], watermark, size, merge) or empty()

    def samples(self, key: str, state: State, watermark: int) -> Iterable[Sample]:
        platform, account = split_account_key(key)
        if key == SHOP_KEY:
            return  # the shop's totals are the funnel family's
        yield "socialpulse_currency_mismatch_total", (platform, account), float(state["mismatch"])
        for size in self.spec.trailing_ms:
            label = self.spec.label(size)
            agg = self._trailing(state, watermark, size)
            if not (agg["clk"] or agg["orders"] or agg["rev"] or agg["spend"]):
                continue
            w = (platform, account, label)
            last = agg["rev"].get("last_touch", {})
            d = derived(agg["clk"], agg["orders"], last, agg["spend"], agg.get("cust", 0))
            yield "socialpulse_attributed_orders", w, float(agg["orders"])
            yield "socialpulse_new_customers", w, float(agg.get("cust", 0))
            for metric, value in before_purchase(agg).items():
                yield f"socialpulse_{metric}", w, value
            if d["conversion_rate"] is not None:
                yield "socialpulse_conversion_rate", w, d["conversion_rate"]
            for model, by_cur in agg["rev"].items():
                for cur, v in by_cur.items():
                    yield "socialpulse_attributed_revenue", (platform, account, label, model, cur), float(v)
            for cur, n in agg["cur_orders"].items():
                if n > 0:
                    yield "socialpulse_average_order_value", (*w, cur), float(Decimal(last.get(cur, "0")) / n)
            for cur, v in agg["spend"].items():
                yield "socialpulse_spend", (*w, cur), float(v)
            for cur, v in d["cpa"].items():
                yield "socialpulse_cost_per_acquisition", (*w, cur), float(v)
            for cur, v in d["roi"].items():
                yield "socialpulse_return_on_investment", (*w, cur), float(v)
            ranked = sorted(agg["camp"].items(), key=lambda kv: -kv[1]["clk"])
            for i, (name, c) in enumerate(ranked):
                if i >= self.max_campaigns:
                    break
                cd = derived(c["clk"], c["orders"], c["rev"], c["spend"], c.get("cust", 0))
                yield "socialpulse_campaign_clicks", (platform, account, name, label), float(c["clk"])
                yield "socialpulse_campaign_attributed_orders", (platform, account, name, label), float(c["orders"])
                for cur, v in cd["cpa"].items():
                    yield "socialpulse_campaign_cost_per_acquisition", (platform, account, name, label, cur), float(v)
                for cur, v in cd["roi"].items():
                    yield "socialpulse_campaign_return_on_investment", (platform, account, name, label, cur), float(v)

    def view(self, key: str, state: State, watermark: int) -> dict[str, Any]:
        out: dict[str, Any] = {"currency_mismatched_windows": state["mismatch"], "windows": {}}
        for size in self.spec.trailing_ms:
            agg = self._trailing(state, watermark, size)
            last = agg["rev"].get("last_touch", {})
            d = derived(agg["clk"], agg["orders"], last, agg["spend"], agg.get("cust", 0))
            out["windows"][self.spec.label(size)] = {
                "clicks": agg["clk"],
                "attributed_orders": agg["orders"],
                "new_customers": agg.get("cust", 0),
                **before_purchase(agg),
                "conversion_rate": d["conversion_rate"],
                "attributed_revenue": agg["rev"],
                "average_order_value": {
                    cur: str(Decimal(last.get(cur, "0")) / n) for cur, n in agg["cur_orders"].items() if n > 0
                },
                "spend": agg["spend"],
                "cost_per_acquisition": {c: str(v) for c, v in d["cpa"].items()},
                "return_on_investment": {c: str(v) for c, v in d["roi"].items()},
                "currency_mismatch": d["mismatched"],
                "campaigns": {
                    name: {
                        "clicks": c["clk"], "attributed_orders": c["orders"], "revenue_last_touch": c["rev"],
                        "spend": c["spend"],
                        "cost_per_acquisition": {k: str(v) for k, v in derived(c["clk"], c["orders"], c["rev"], c["spend"], c.get("cust", 0))["cpa"].items()},
                        "return_on_investment": {k: str(v) for k, v in derived(c["clk"], c["orders"], c["rev"], c["spend"], c.get("cust", 0))["roi"].items()},
                    }
                    for name, c in sorted(agg["camp"].items())
                },
            }
        return out
