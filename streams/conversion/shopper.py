"""Attribution state per shopper (``actor`` stream): clicks joined to orders.

State per key (``actor_id``):

    {"clicks": [[ts, platform, account, campaign, click_id, event_id, post_id], ...],  # oldest first, in the lookback
     "orders": {order_id: {"ts", "amount", "currency", "click_id", "credits": [credit record, ...],
                           "version", "reversed", "settled", "exp"}}}

A placed order is credited to the shopper's clicks in ``[ts - lookback, ts]``
(``click_id`` pins the last touch); each touch's credit is forwarded to its
account as a ``Credit`` record. Until the watermark passes ``ts + grace`` an
order is unsettled: a click that arrives late but precedes it re-credits the
order (the old credits are negated, the new ones sent), so the arrival order of
clicks and orders does not matter. An order still without touches when it
settles counts as unattributed. A cancelled or refunded order forwards the exact
negation of what it is credited with. Clicks and remembered orders expire after
the lookback, so state stays bounded.

Site sessions and checkouts are the shopper's too: a session is a touch with a
source (a platform, or direct, search, email, other), kept for the lookback; a
checkout started and not completed within ``CHECKOUT_TIMEOUT`` is abandoned. Each
checkout is counted by the source of the shopper's last touch before it
(``socialpulse_checkouts_total{source,outcome}``), judged once the watermark passes its
start plus grace, so the order the topics are read in does not matter; abandonment by
source is ``abandoned / started`` (is it higher for social visitors?). A completion that
arrives before its start waits for it until the timeout.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any, NotRequired, TypedDict

from schemas.events import (
    SHOP_KEY,
    Checkout,
    Click,
    Event,
    Lead,
    Order,
    OrderStatus,
    Session,
    account_key,
    derived_id,
    of_shopper,
)

from ..family import Forward, Gauge, Output, Route, Sample, Tally
from ..windows import WindowSpec
from .attribution import credits

__all__ = ["Shopper", "touches"]

#: the input topic of each event a shopper sees (what a derived record is counted under)
_SOURCE: dict[type[Event], str] = {Click: "clicks", Order: "orders", Session: "sessions", Checkout: "checkouts",
                                   Lead: "leads"}
#: a direct visit as a touch: [ts, platform, account, campaign, click_id, event_id, post_id]
_DIRECT = ("direct", "direct", None, None, None, None)


def touches(clicks: list[list[Any]], order_ts: int, lookback_ms: int, click_id: str | None) -> list[list[Any]]:
    """The clicks an order credits, oldest first; a matching ``click_id`` is the last touch."""
    window = [c for c in clicks if order_ts - lookback_ms <= c[0] <= order_ts]
    if click_id:
        pinned = [c for c in window if c[4] == click_id]
        if pinned:
            last = pinned[-1]
            return [c for c in window if c is not last and c[0] <= last[0]] + [last]
    return window


class State(TypedDict):
    """A shopper's slot (its changelog JSON has the same keys)."""

    clicks: list[list[Any]]  # touches in the lookback: [ts, platform|account, campaign, click_id, ...]
    orders: dict[str, dict[str, Any]]  # order id -> the order, its credits and whether it settled
    sessions: NotRequired[list[list[Any]]]  # site sessions in the lookback: [ts, source, duration_s]
    checkouts: NotRequired[dict[str, dict[str, Any]]]  # checkouts until their timeout: id -> {ts, src, started, done}
    leads: NotRequired[list[list[Any]]]  # the shopper's leads in the lookback: [ts, platform, account, event_id]


class Shopper:
    name = "attribution"
    topics = frozenset({"clicks", "orders", "sessions", "checkouts", "leads"})
    # a click is counted once, on its account (``Engagement``); here it is a touch of its shopper;
    # a lead is counted on its account (``Funnel``); here it waits for the shopper's first order
    routes = (Route("clicks", of_shopper, primary=False), Route("orders", of_shopper),
              Route("sessions", of_shopper), Route("checkouts", of_shopper), Route("leads", of_shopper, primary=False))
    gauges: tuple[Gauge, ...] = ()
    counters: tuple[Gauge, ...] = (
        Gauge("socialpulse_unattributed_orders", "Placed orders with no click in the lookback, by currency.",
              ("currency",), "counter"),
        Gauge("socialpulse_checkouts", "Checkouts started, completed and abandoned (CHECKOUT_TIMEOUT), by the "
              "source of the shopper's last touch.", ("source", "outcome"), "counter"),
    )
    merge = None

    @classmethod
    def from_settings(cls, settings: Any, spec: WindowSpec) -> Shopper:
        return cls(settings.attribution_lookback, settings.attribution_half_life, settings.grace,
                   settings.checkout_timeout)

    def constants(self) -> Iterable[tuple[Gauge, float]]:
        return ()

    def __init__(self, lookback_ms: int, half_life_ms: int = 7 * 86_400_000, grace_ms: int = 300_000,
                 checkout_timeout_ms: int = 3_600_000) -> None:
        self.checkout_timeout_ms = checkout_timeout_ms
        self.lookback_ms = lookback_ms
        self.grace_ms = grace_ms
        self.half_life_s = half_life_ms / 1000

    def new_state(self) -> State:
        return {"clicks": [], "orders": {}}

    def decode_state(self, raw: dict[str, Any]) -> State:
        state: State = {"clicks": raw["clicks"], "orders": raw["orders"]}
        if raw.get("sessions"):
            state["sessions"] = raw["sessions"]
        if raw.get("checkouts"):
            state["checkouts"] = raw["checkouts"]
        if raw.get("leads"):
            state["leads"] = raw["leads"]
        return state

    def is_empty(self, state: State) -> bool:
        return (not state["clicks"] and not state["orders"] and not state.get("sessions")
                and not state.get("checkouts") and not state.get("leads"))

    def apply(self, key: str, state: State, events: list[Event], watermark: int) -> list[Output]:
        out: list[Output] = []
        for event in events:
            before = self._conversions(state) if state["orders"] else set()
            self._apply(state, event, out)
            if state["orders"] or before:
                out.extend(self._converted(event, before, self._conversions(state)))
        return out

    def _apply(self, state: State, event: Event, out: list[Output]) -> None:
        if isinstance(event, Click):
            row = [event.ts, event.platform, event.account_id, event.campaign_id, event.click_id, event.event_id,
                   event.post_id]
            clicks = state["clicks"]
            clicks.append(row)
            if len(clicks) > 1 and clicks[-2][0] > event.ts:
                clicks.sort(key=lambda c: c[0])
            # a click that arrives after an order it precedes (within grace): credit again
            for o in state["orders"].values():
                if not o["settled"] and not o["reversed"] and o["ts"] - self.lookback_ms <= event.ts <= o["ts"]:
                    out.extend(self._credit(state, o))
        elif isinstance(event, Session):
            sessions = state.setdefault("sessions", [])
            sessions.append([event.ts, event.source, event.duration_s])
            if len(sessions) > 1 and sessions[-2][0] > event.ts:
                sessions.sort(key=lambda s: s[0])
            # a visit that arrives after an order it precedes (within grace): its time on site
            # counts, and a direct visit is a touch
            for o in state["orders"].values():
                if (not o["settled"] and not o["reversed"] and (o["credits"] or event.source == "direct")
                        and o["ts"] - self.lookback_ms <= event.ts <= o["ts"]):
                    out.extend(self._credit(state, o))
        elif isinstance(event, Lead):
            leads = state.setdefault("leads", [])
            leads.append([event.ts, event.platform, event.account_id, event.event_id])
            if len(leads) > 1 and leads[-2][0] > event.ts:
                leads.sort(key=lambda lead: lead[0])
        elif isinstance(event, Checkout):
            out.extend(self._checkout(state, event))
        elif isinstance(event, Order):
            if event.status == OrderStatus.placed:
                out.extend(self._placed(state, event))
            elif event.order_id in state["orders"]:
                o = state["orders"][event.order_id]
                out.extend(self._reverse(o, event.event_id, event.ts))
                out.extend(self._resale(o, event.order_id, event.ts))
            else:  # cancelled before its placement arrived: remember, so the placement credits nothing
                state["orders"][event.order_id] = {
                    "event_id": event.event_id, "ts": event.ts, "amount": "0", "currency": event.currency,
                    "click_id": None, "exp": event.ts + self.lookback_ms, "credits": [], "version": 0,
                    "reversed": True, "settled": False,
                }

    def _conversions(self, state: State) -> set[tuple[Any, ...]]:
        """What the shopper's orders convert now: the last non-direct click of each live
        attributed order, and every lead in the lookback before the shopper's first order
        (the lead became a customer). ``(kind, cohort_ts, platform, account, id)``."""
        live = [o for o in state["orders"].values() if not o["reversed"]]
        out: set[tuple[Any, ...]] = {("click", *o["conv"]) for o in live if o.get("conv")}
        leads = state.get("leads")
        if leads and live:
            first = min(live, key=lambda o: (o["ts"], o["event_id"]))
            low, high = first["ts"] - self.lookback_ms, first["ts"]
            out.update(("lead", *lead) for lead in leads if low <= lead[0] <= high)
        return out

    @staticmethod
    def _converted(event: Event, before: set[tuple[Any, ...]], after: set[tuple[Any, ...]]) -> list[Output]:
        """Forward what ``event`` changed in the conversions: +1 for each new, -1 for each gone."""
        out: list[Output] = []
        for sign, items in ((1, after - before), (-1, before - after)):
            for kind, cohort_ts, platform, account, ident in sorted(items, key=str):
                record = {"event_id": derived_id(event.event_id, f"~{kind}{'+' if sign > 0 else '-'}{ident}"),
                          "ts": event.ts, "platform": platform, "account_id": account, "kind": kind,
                          "cohort_ts": cohort_ts, "n": sign}
                out.append(Forward("account", account_key(platform, account), "converted", record,
                                   _SOURCE[type(event)]))
        return out

    def _placed(self, state: State, order: Order) -> list[Output]:
        if order.order_id in state["orders"]:
            return []  # the same order placed twice under two event ids: credit it once
        o = {
            "event_id": order.event_id, "ts": order.ts, "amount": str(order.amount), "currency": order.currency,
            "click_id": order.click_id, "exp": order.ts + self.lookback_ms, "credits": [], "version": 0,
            "reversed": False, "settled": False,
        }
        state["orders"][order.order_id] = o
        return self._credit(state, o, order.order_id)

    def _credit(self, state: State, o: dict[str, Any], order_id: str | None = None) -> list[Output]:
        """(Re)compute an order's credits; forward the difference as whole records."""
        order_id = order_id or next(k for k, v in state["orders"].items() if v is o)
        rows = state["clicks"]
        direct = [[s[0], *_DIRECT] for s in state.get("sessions", ()) if s[1] == "direct"]
        if direct:
            rows = sorted(rows + direct, key=lambda c: c[0])  # (stable: a click before a visit of its time)
        hits = touches(rows, o["ts"], self.lookback_ms, o["click_id"])
        if not hits:  # unattributed, unless a touch turns up within grace (tallied when settled)
            return self._resale(o, order_id, o["ts"])
        out = self._reverse(o, f"{o['event_id']}@r{o['version']}", o["ts"]) if o["credits"] else []
        o["reversed"] = False
        o["version"] += 1
        amount = Decimal(o["amount"])
        is_direct = [c[1] == "direct" for c in hits]
        by_model = credits([(o["ts"] - c[0]) / 1000 for c in hits], self.half_life_s, is_direct)
        clicked = [c for c in hits if c[1] != "direct"]
        # the click this order converts: its last non-direct touch
        o["conv"] = [clicked[-1][0], clicked[-1][1], clicked[-1][2], str(clicked[-1][5] if len(clicked[-1]) > 5
                                                                         else clicked[-1][4])] if clicked else None
        o["new"] = self._is_first(state, o)  # a new customer: the shopper's first order in the lookback
        visits = [s for s in state.get("sessions", ()) if o["ts"] - self.lookback_ms <= s[0] <= o["ts"]]
        records = []
        for i, c in enumerate(hits):
            revenue = {m: str((amount * shares[i]).quantize(Decimal("1e-6"))) for m, shares in by_model.items()}
            records.append({
                "event_id": derived_id(o["event_id"], f"@v{o['version']}#{i}"), "ts": o["ts"], "platform": c[1],
                "account_id": c[2], "campaign_id": c[3], "post_id": c[6] if len(c) > 6 else None, "order_id": order_id, "currency": o["currency"],
                "revenue": revenue, "orders": 1 if i == len(hits) - 1 else 0,
                "customers": 1 if o["new"] and i == len(hits) - 1 else 0,
                **({"sessions": len(visits), "site_seconds": sum(s[2] for s in visits)} if i == len(hits) - 1 else {}),
            })
        o["credits"] = records
        earlier = self._first_order(state, o)
        if earlier is not None:  # it was the shopper's first order until this one arrived: not new any more
            out.extend(self._credit(state, earlier))
        return out + [self._forward(r) for r in records] + self._resale(o, order_id, o["ts"])

    @staticmethod
    def _resale(o: dict[str, Any], order_id: str, ts: int) -> list[Output]:
        """Bring the shop's record of this order (revenue of all orders, and the part each
        model credits to social touches) up to date: take back the old one, send the new."""
        want: dict[str, Any] | None = None
        if not o["reversed"]:
            social: dict[str, Decimal] = {}
            for r in o["credits"]:
                if r["platform"] != "direct":
                    for model, v in r["revenue"].items():
                        social[model] = social.get(model, Decimal(0)) + Decimal(v)
            want = {"amount": o["amount"], "social": {m: str(v) for m, v in sorted(social.items())}}
        have = o.get("sale")
        if have == want:
            return []
        out: list[Output] = []
        n = o.get("sales", 0)
        for sign, sale in ((-1, have), (1, want)):
            if sale is None:
                continue
            n += 1
            record = {"event_id": derived_id(o["event_id"], f"$s{n}"), "ts": o["ts"] if sign > 0 else ts,
                      "order_id": order_id, "currency": o["currency"],
                      "amount": sale["amount"] if sign > 0 else str(-Decimal(sale["amount"])),
                      "social": sale["social"] if sign > 0 else {m: str(-Decimal(v)) for m, v in sale["social"].items()}}
            out.append(Forward("account", SHOP_KEY, "sales", record, "orders"))
        o["sale"], o["sales"] = want, n
        return out

    @staticmethod
    def source_at(state: State, ts: int) -> str:
        """The source of the shopper's last touch at ``ts``: a click's platform or a session's source."""
        best: tuple[int, str] | None = None
        for c in state["clicks"]:
            if c[0] <= ts and (best is None or c[0] >= best[0]):
                best = (c[0], c[1])
        for s in state.get("sessions", ()):
            if s[0] <= ts and (best is None or s[0] >= best[0]):
                best = (s[0], s[1])
        return best[1] if best is not None else "none"

    def _checkout(self, state: State, event: Checkout) -> list[Output]:
        """A checkout starts or completes. It is counted once the watermark passes its start
        plus grace (every touch before it has arrived by then, whatever order the topics were
        read in) and remembered until ``CHECKOUT_TIMEOUT`` after its start, so a repeated start
        or completion counts once; a completion before its start waits for it."""
        open_ = state.setdefault("checkouts", {})
        co = open_.get(event.checkout_id)
        if event.status == "started":
            if co is None:
                open_[event.checkout_id] = {"ts": event.ts, "src": None, "started": True, "done": False}
            elif not co["started"]:  # its completion came first
                co.update(ts=event.ts, started=True)
            return []
        if co is None:
            open_[event.checkout_id] = {"ts": event.ts, "src": None, "started": False, "done": True}
            return []
        if co["done"]:
            return []
        co["done"] = True
        return self._outcome(event.checkout_id, co["src"], "completed", event.ts) if co["src"] is not None else []

    @staticmethod
    def _outcome(checkout_id: str, source: str, outcome: str, ts: int) -> list[Output]:
        """A checkout's outcome: the process-wide counter, and a record for the shop's windows
        (``all|all``), stamped when it was decided (so a window needs no correction)."""
        record = {"event_id": derived_id(checkout_id, f"~{outcome}"), "ts": ts, "checkout_id": checkout_id,
                  "source": source, "outcome": outcome}
        return [Tally("socialpulse_checkouts", (source, outcome)),
                Forward("account", SHOP_KEY, "checkout_outcomes", record, "checkouts")]

    def _judge_checkouts(self, state: State, watermark: int) -> tuple[list[Output], bool]:
        out: list[Output] = []
        checkouts = state.get("checkouts")
        if not checkouts:
            return out, False
        changed = False
        for cid, co in list(checkouts.items()):
            timed_out = co["ts"] + self.checkout_timeout_ms <= watermark
            if co["src"] is None and (co["ts"] + self.grace_ms <= watermark or timed_out):
                if not co["started"] and not timed_out:
                    continue  # a completion waits for its start until the timeout
                src = co["src"] = self.source_at(state, co["ts"])
                changed = True
                out.extend(self._outcome(cid, src, "started", watermark))
                if co["done"]:
                    out.extend(self._outcome(cid, src, "completed", watermark))
            if timed_out:
                if not co["done"]:  # not completed in time
                    out.extend(self._outcome(cid, str(co["src"]), "abandoned", watermark))
                del checkouts[cid]
                changed = True
        if not checkouts:
            del state["checkouts"]
        return out, changed

    @staticmethod
    def _is_first(state: State, o: dict[str, Any]) -> bool:
        """No other placed order of the shopper in the lookback is older (ties by event id)."""
        return not any(
            other is not o and not other["reversed"] and (other["ts"], other["event_id"]) < (o["ts"], o["event_id"])
            for other in state["orders"].values()
        )

    def _first_order(self, state: State, o: dict[str, Any]) -> dict[str, Any] | None:
        """Another order credited as the shopper's first that ``o`` now precedes."""
        if not o.get("new"):
            return None
        return next((other for other in state["orders"].values()
                     if other is not o and other.get("new") and not other["reversed"] and other["credits"]), None)

    def _reverse(self, o: dict[str, Any] | None, event_id: str, ts: int) -> list[Output]:
        """Forward the exact negation of what the order is credited with now."""
        if o is None or o["reversed"] or not o["credits"]:
            if o is not None:
                o["reversed"] = True
            return []  # never credited (unattributed or outside the lookback), or already taken back
        o["reversed"] = True
        return [
            self._forward(r | {
                "event_id": f"{event_id}#{i}", "ts": ts,
                "revenue": {m: str(-Decimal(v)) for m, v in r["revenue"].items()}, "orders": -r["orders"],
                "customers": -r.get("customers", 0),
                "sessions": -r.get("sessions", 0), "site_seconds": -r.get("site_seconds", 0.0),
            })
            for i, r in enumerate(o["credits"])
        ]

    @staticmethod
    def _forward(record: dict[str, Any]) -> Forward:
        return Forward("account", account_key(record["platform"], record["account_id"]), "credits", record, "orders")

    def close(self, key: str, state: State, watermark: int) -> tuple[list[Output], bool]:
        out: list[Output] = []
        changed = False
        orders = state["orders"]
        for oid, o in list(orders.items()):
            if not o["settled"] and o["ts"] + self.grace_ms <= watermark:
                o["settled"], changed = True, True
                if not o["credits"] and not o["reversed"]:
                    out.append(Tally("socialpulse_unattributed_orders", (o["currency"],)))
            if o["exp"] < watermark and o["settled"]:
                del orders[oid]
                changed = True
        low = watermark - self.lookback_ms - self.grace_ms
        clicks = state["clicks"]
        keep = [c for c in clicks if c[0] >= low]
        if len(keep) != len(clicks):
            state["clicks"], changed = keep, True
        sessions = state.get("sessions")
        if sessions and sessions[0][0] < low:
            state["sessions"], changed = [s for s in sessions if s[0] >= low], True
            if not state["sessions"]:
                del state["sessions"]
        leads = state.get("leads")
        if leads and leads[0][0] < low:
            state["leads"], changed = [lead for lead in leads if lead[0] >= low], True
            if not state["leads"]:
                del state["leads"]
        judged, judged_changed = self._judge_checkouts(state, watermark)
        out.extend(judged)
        changed = changed or judged_changed
        return out, changed

    def windowed(self, state: State) -> None:
        return None  # no windows: orders settle on the watermark (``close``)

    def results(self, key: str, cw: Any, state: State, revision: int) -> list[Output]:
        return []

    def samples(self, key: str, state: State, watermark: int) -> Iterable[Sample]:
        return ()

    def view(self, key: str, state: State, watermark: int) -> dict[str, Any]:
        return {"clicks": len(state["clicks"]), "orders": len(state["orders"]), "sessions": len(state.get("sessions", ())),
                "open_checkouts": len(state.get("checkouts", {}))}
