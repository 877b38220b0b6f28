"""Attribution state per shopper (``actor`` stream): touches joined to orders and checkouts.

State per key (``actor_id``), every list oldest first by ``(ts, event_id)``:

    {"clicks":   [[ts, platform, account, campaign, click_id, event_id, post_id], ...],
     "sessions": [[ts, source, duration_s, event_id], ...],
     "leads":    [[ts, platform, account, event_id], ...],
     "orders":   {order_id: {"placed", "ts", "pid", "amount", "currency", "click_id", "cancel",
                             "credits", "void", "sale", "svoid", "new", "conv", "leads", "fin", ...}},
     "checkouts": {checkout_id: {"s": [ts, event_id], "c": [ts, event_id], "sent", "src", "n"}}}

**Order never matters.** Everything the shopper forwards is a function of the events in its
state, ordered by ``ts``, and kept up to date by difference: after each batch every order's
wanted credits are computed again from the touches, and if they differ from what was sent,
what was sent is negated (each record at its own ``ts``) and the new records sent. So a click,
a direct visit, an earlier order or a lead read after the order it precedes corrects the
order for the whole allowed lateness (the account's closed windows are corrected by
revision), and a cancellation read before its placement waits for it.

- An order is credited to the shopper's touches (clicks, and direct visits) in
  ``[ts - lookback, ts]``; ``click_id`` pins the last touch. Placed twice under two event ids:
  the earliest placement (by ``ts``, then event id) is the order.
- It is a **new customer** when no other order of the shopper placed in the lookback before it
  was standing at its ``ts`` (not cancelled or refunded by then): decided by ``ts``, so a
  cancellation read later never moves a customer out of a window already past its lateness.
- A **cancellation or refund** takes back exactly what the placement credits, stamped at its
  own ``ts`` (never before the placement); it applies when its ``ts`` lies within the lookback
  of the placement, whichever is read first. The earliest one counts.
- A **click converts** when it is the last non-direct touch of a standing order (not cancelled
  or refunded); a **lead** when its shopper was no customer at the lead's ``ts`` (no order of
  the lookback before it standing then) and a standing order follows it within the lookback.
  The conversions are forwarded by difference (``Converted``, +1 / -1).
- An order is **final** once the watermark passes ``ts + ALLOWED_LATENESS``: no touch, lead or
  earlier order it depends on can arrive any more. Its credits are frozen then.
- An order with **no touch** at all is unattributed: its ``Sale`` carries ``unattributed`` 1
  when sent (and -1 in the negation that takes it back, e.g. when a late click credits it), so
  the shop's key counts ``socialpulse_unattributed_orders_total`` live and by difference
  (``funnel``). A cancellation or refund leaves it counted: the counter counts placements.

**Checkouts.** A checkout belongs to the time of its start (its earliest ``started`` event; a
checkout whose start never came, to its completion). Its source is the shopper's last touch
(click or visit; a visit wins a tie) within the lookback before that time, ``none`` without.
It is completed when a completion's ``ts`` lies within ``CHECKOUT_TIMEOUT`` of the start,
abandoned once the watermark passes start + timeout without one (a completion after the
timeout leaves it abandoned). Its ``started``, ``completed`` and ``abandoned`` records go to
the shop's windows (``all|all``) stamped at the start and are corrected by difference (a
retraction's event id ends with ``RETRACTED``) when a late touch, start or completion changes
them. The shop's key sums the same records into ``socialpulse_checkouts_total{source,outcome}``
(``funnel``): live, a correction takes a count back.

**State bound.** Touches and leads are kept until the watermark passes ``ts + lookback +
ALLOWED_LATENESS``, orders until it passes ``max(placement, cancellation) + lookback +
ALLOWED_LATENESS``, checkouts until start + timeout + allowed lateness.
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

from ..family import Forward, Gauge, Output, Route, Sample
from ..windows import WindowSpec
from .attribution import credits

__all__ = ["Shopper", "touches", "RETRACTED"]

#: the input topic of each event a shopper sees (what a derived record is counted under)
_SOURCE: dict[type[Event], str] = {Click: "clicks", Order: "orders", Session: "sessions", Checkout: "checkouts",
                                   Lead: "leads"}
#: the end of the event id of a checkout outcome that takes one back (``funnel.metrics`` reads it;
#: the record has no sign field of its own)
RETRACTED = "~undo"
_NEGATED = ("orders", "customers", "sessions", "site_seconds")


def touches(clicks: list[list[Any]], order_ts: int, lookback_ms: int, click_id: str | None) -> list[list[Any]]:
    """The clicks an order credits, oldest first; a matching ``click_id`` is the last touch."""
    window = [c for c in clicks if order_ts - lookback_ms <= c[0] <= order_ts]
    if click_id:
        pinned = [c for c in window if c[4] == click_id]
        if pinned:
            last = pinned[-1]
            return [c for c in window if c is not last and c[0] <= last[0]] + [last]
    return window


def _eid(row: list[Any], i: int) -> str:
    return str(row[i]) if len(row) > i and row[i] is not None else ""


def _insert(rows: list[list[Any]], row: list[Any], eid_at: int) -> None:
    """Keep ``rows`` ordered by (ts, event id) whatever order they arrive in."""
    rows.append(row)
    if len(rows) > 1 and (rows[-2][0], _eid(rows[-2], eid_at)) > (row[0], _eid(row, eid_at)):
        rows.sort(key=lambda r: (r[0], _eid(r, eid_at)))


def _earliest(have: list[Any] | None, ts: int, event_id: str) -> list[Any]:
    return [ts, event_id] if have is None or (ts, event_id) < (have[0], have[1]) else have


def _strip(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "event_id"} for r in records]


class State(TypedDict):
    """A shopper's slot (its changelog JSON has the same keys)."""

    clicks: list[list[Any]]  # touches in the lookback: [ts, platform, account, campaign, click_id, event_id, post_id]
    orders: dict[str, dict[str, Any]]  # order id -> the order, what it was credited with, whether it is final
    sessions: NotRequired[list[list[Any]]]  # site sessions: [ts, source, duration_s, event_id]
    checkouts: NotRequired[dict[str, dict[str, Any]]]  # checkouts until final: id -> start, completion, what was sent
    leads: NotRequired[list[list[Any]]]  # the shopper's leads: [ts, platform, account, event_id]


class Shopper:
    name = "attribution"
    topics = frozenset({"clicks", "orders", "sessions", "checkouts", "leads"})
    # a click is counted once, on its account (``Engagement``); here it is a touch of its shopper;
    # a lead is counted on its account (``Funnel``); here it waits for the shopper's first order
    routes = (Route("clicks", of_shopper, primary=False), Route("orders", of_shopper),
              Route("sessions", of_shopper), Route("checkouts", of_shopper), Route("leads", of_shopper, primary=False))
    gauges: tuple[Gauge, ...] = ()
    # the checkouts and unattributed orders are counted on the shop's key (``funnel``), from the
    # ``CheckoutOutcome`` and ``Sale`` records forwarded there
    counters: tuple[Gauge, ...] = ()
    merge = None

    @classmethod
    def from_settings(cls, settings: Any, spec: WindowSpec) -> Shopper:
        return cls(settings.attribution_lookback, settings.attribution_half_life, settings.grace,
                   settings.checkout_timeout, spec.lateness_ms)

    def constants(self) -> Iterable[tuple[Gauge, float]]:
        return ()

    def __init__(self, lookback_ms: int, half_life_ms: int = 7 * 86_400_000, grace_ms: int = 300_000,
                 checkout_timeout_ms: int = 3_600_000, lateness_ms: int | None = None) -> None:
        self.checkout_timeout_ms = checkout_timeout_ms
        self.lookback_ms = lookback_ms
        self.grace_ms = grace_ms
        #: how far behind the watermark an event is still accepted (``WindowSpec.lateness_ms``)
        self.lateness_ms = max(grace_ms if lateness_ms is None else lateness_ms, grace_ms)
        self.half_life_s = half_life_ms / 1000

    # -- state -------------------------------------------------------------
    def new_state(self) -> State:
        return {"clicks": [], "orders": {}}

    def decode_state(self, raw: dict[str, Any]) -> State:
        """From the changelog's JSON, including what the releases before order-free shoppers wrote
        (orders with ``reversed``/``settled``, checkouts with ``started``/``done``) and the ``tal``
        marks of the release that counted final orders and checkouts itself (dropped)."""
        state: State = {"clicks": raw["clicks"], "orders": raw["orders"]}
        for name in ("sessions", "checkouts", "leads"):
            if raw.get(name):
                state[name] = raw[name]  # type: ignore[literal-required]
        old = [o for o in state["orders"].values() if "placed" not in o]
        if old:
            self._migrate_orders(state, old)
        for o in state["orders"].values():
            o.pop("tal", None)
        for cid, co in state.get("checkouts", {}).items():
            if "sent" not in co:
                state["checkouts"][cid] = self._migrate_checkout(co)
            else:
                co.pop("tal", None)
        return state

    def _migrate_orders(self, state: State, old: list[dict[str, Any]]) -> None:
        live = [o for o in old if not o["reversed"]]
        for o in old:
            placeholder = o["reversed"] and "sales" not in o and not o["credits"] and o["amount"] == "0"
            sale = o.get("sale")
            o.update(placed=not placeholder, pid=o["event_id"], sale={"ts": o["ts"], **sale} if sale else None,
                     sales=o.get("sales", 0), conv=o.get("conv"), new=o.get("new", False), leads=[],
                     # settled (or taken back): final by the old rules; its inputs may be pruned already
                     fin=o["settled"] or o["reversed"])
            if o["reversed"]:  # taken back (or cancelled first): where is unknown, at its own time is closest
                o.update(cancel=[o["ts"], ""], void=o["ts"] if o["credits"] else None)
            for name in ("reversed", "settled", "exp"):
                o.pop(name, None)
        if live:  # the old rule: every lead in the lookback before the first live order converted
            first = min(live, key=lambda o: (o["ts"], o["event_id"]))
            low, high = first["ts"] - self.lookback_ms, first["ts"]
            first["leads"] = [lead for lead in state.get("leads", ()) if low <= lead[0] <= high]

    @staticmethod
    def _migrate_checkout(co: dict[str, Any]) -> dict[str, Any]:
        at = [co["ts"], ""]
        new: dict[str, Any] = {"s": at if co["started"] else None, "c": at if co["done"] else None, "sent": None,
                               "n": 1}
        if co.get("src") is not None:  # judged (and sent) by the old rules: its source stays
            sent = ["started", "completed"] if co["done"] else ["started"]
            new.update(src=co["src"], src_at=co["ts"], sent={"ts": co["ts"], "src": co["src"], "o": sent})
        return new

    def is_empty(self, state: State) -> bool:
        return (not state["clicks"] and not state["orders"] and not state.get("sessions")
                and not state.get("checkouts") and not state.get("leads"))

    # -- events ------------------------------------------------------------
    def apply(self, key: str, state: State, events: list[Event], watermark: int) -> list[Output]:
        before = self._conversions(state)
        for event in events:
            self._ingest(state, event)
        out = self._sync_orders(state)
        out.extend(self._sync_checkouts(state, watermark))
        after = self._conversions(state)
        if after != before:
            out.extend(self._converted(events[-1], before, after))
        return out

    def _ingest(self, state: State, event: Event) -> None:
        """Put an event into the state; nothing is decided here (``_sync_*`` decide from the state)."""
        if isinstance(event, Click):
            _insert(state["clicks"], [event.ts, event.platform, event.account_id, event.campaign_id, event.click_id,
                                      event.event_id, event.post_id], 5)
        elif isinstance(event, Session):
            _insert(state.setdefault("sessions", []), [event.ts, event.source, event.duration_s, event.event_id], 3)
        elif isinstance(event, Lead):
            _insert(state.setdefault("leads", []), [event.ts, event.platform, event.account_id, event.event_id], 3)
        elif isinstance(event, Checkout):
            co = state.setdefault("checkouts", {}).setdefault(
                event.checkout_id, {"s": None, "c": None, "sent": None, "n": 0})
            which = "s" if event.status == "started" else "c"
            co[which] = _earliest(co[which], event.ts, event.event_id)
        elif isinstance(event, Order):
            o = state["orders"].get(event.order_id)
            if o is None:
                o = state["orders"][event.order_id] = {
                    "event_id": event.event_id, "placed": False, "ts": event.ts, "amount": "0",
                    "currency": event.currency, "click_id": None, "credits": [], "version": 0, "sale": None,
                    "sales": 0}
            if event.status == OrderStatus.placed:
                if not o["placed"] or (event.ts, event.event_id) < (o["ts"], o["pid"]):
                    o.update(placed=True, ts=event.ts, pid=event.event_id, amount=str(event.amount),
                             currency=event.currency, click_id=event.click_id)
            else:
                o["cancel"] = _earliest(o.get("cancel"), event.ts, event.event_id)

    # -- orders --------------------------------------------------------------
    def _cancelled_at(self, o: dict[str, Any]) -> int | None:
        """When a placed order's cancellation takes it back (None: standing). A cancellation
        applies within the lookback of its placement, never before it."""
        c = o.get("cancel")
        if c is None or not o["placed"] or not o["ts"] - self.lookback_ms <= c[0] <= o["ts"] + self.lookback_ms:
            return None
        return max(int(c[0]), int(o["ts"]))

    def _is_new(self, state: State, o: dict[str, Any]) -> bool:
        """No other order placed in the lookback before it was standing at its ``ts``."""
        mine = (o["ts"], o["pid"])
        for p in state["orders"].values():
            if p is o or not p["placed"] or not o["ts"] - self.lookback_ms <= p["ts"]:
                continue
            if (p["ts"], p.get("pid", p["event_id"])) < mine:
                gone = self._cancelled_at(p)
                if gone is None or gone > o["ts"]:
                    return False
        return True

    def _customer_at(self, state: State, ts: int) -> bool:
        """Whether the shopper had an order placed in the lookback before ``ts`` standing at ``ts``."""
        for p in state["orders"].values():
            if p["placed"] and ts - self.lookback_ms <= p["ts"] < ts:
                gone = self._cancelled_at(p)
                if gone is None or gone > ts:
                    return True
        return False

    def _wanted(self, state: State, oid: str, o: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """What a placed order credits now (records without event ids) and its shop sale; sets
        its ``new``, ``conv`` and ``leads``."""
        rows = state["clicks"]
        direct = [[s[0], "direct", "direct", None, None, _eid(s, 3), None]
                  for s in state.get("sessions", ()) if s[1] == "direct"]
        if direct:
            rows = sorted(rows + direct, key=lambda c: c[0])  # (stable: a click before a visit of its time)
        low, ts = o["ts"] - self.lookback_ms, o["ts"]
        hits = touches(rows, ts, self.lookback_ms, o["click_id"])
        o["new"] = new = self._is_new(state, o)
        # the leads it makes customers: before it in the lookback, when the shopper was none
        o["leads"] = [lead for lead in state.get("leads", ()) if low <= lead[0] <= ts
                      and not self._customer_at(state, lead[0])]
        clicked = [c for c in hits if c[1] != "direct"]
        last = clicked[-1] if clicked else None
        # the click this order converts: its last non-direct touch
        o["conv"] = [last[0], last[1], last[2], str(last[5] if len(last) > 5 else last[4])] if last else None
        records: list[dict[str, Any]] = []
        social: dict[str, Decimal] = {}
        if hits:
            amount = Decimal(o["amount"])
            by_model = credits([(ts - c[0]) / 1000 for c in hits], self.half_life_s, [c[1] == "direct" for c in hits])
            visits = [s for s in state.get("sessions", ()) if low <= s[0] <= ts]
            for i, c in enumerate(hits):
                revenue = {m: str((amount * shares[i]).quantize(Decimal("1e-6"))) for m, shares in by_model.items()}
                final = i == len(hits) - 1
                records.append({
                    "ts": ts, "platform": c[1], "account_id": c[2], "campaign_id": c[3],
                    "post_id": c[6] if len(c) > 6 else None, "order_id": oid, "currency": o["currency"],
                    "revenue": revenue, "orders": 1 if final else 0, "customers": 1 if new and final else 0,
                    **({"sessions": len(visits), "site_seconds": sum(s[2] for s in visits)} if final else {}),
                })
                if c[1] != "direct":
                    for model, v in revenue.items():
                        social[model] = social.get(model, Decimal(0)) + Decimal(v)
        sale = {"ts": ts, "amount": o["amount"], "social": {m: str(v) for m, v in sorted(social.items())},
                "un": 0 if records else 1}  # un: no touch at all (``socialpulse_unattributed_orders_total``)
        return records, sale

    def _sync_orders(self, state: State) -> list[Output]:
        """Bring every order's forwarded credits and sale up to date with the state."""
        out: list[Output] = []
        orders = state["orders"]
        for oid in sorted(orders, key=lambda k: (orders[k]["ts"], k)):
            o = orders[oid]
            if not o["placed"]:
                continue
            if not o.get("fin"):
                records, sale = self._wanted(state, oid, o)
                if _strip(o["credits"]) != records:
                    if o.get("void") is not None:  # undo the cancellation's take-back of the old credits
                        out.extend(self._credits(o, o["credits"], 1, o["void"]))
                    out.extend(self._credits(o, o["credits"], -1, None))
                    o["void"] = None
                    o["version"] += 1
                    o["credits"] = [r | {"event_id": derived_id(o["event_id"], f"@v{o['version']}#{i}")}
                                    for i, r in enumerate(records)]
                    out.extend(self._forward(r) for r in o["credits"])
                if o.get("sale") != sale:  # credited differently: the old sale back, the new one sent
                    if o.get("svoid") is not None:
                        out.extend(self._sale(o, oid, o["sale"], 1, o["svoid"]))
                    if o.get("sale") is not None:
                        out.extend(self._sale(o, oid, o["sale"], -1, o["sale"]["ts"], placement=True))
                    o["svoid"] = None
                    o["sale"] = sale
                    out.extend(self._sale(o, oid, sale, 1, sale["ts"], placement=True))
            gone = self._cancelled_at(o)
            if o.get("void") != gone:  # cancelled, or its cancellation moved: take back at its time
                if o.get("void") is not None:
                    out.extend(self._credits(o, o["credits"], 1, o["void"]))
                if gone is not None:
                    out.extend(self._credits(o, o["credits"], -1, gone))
                o["void"] = gone
            if o.get("svoid") != gone and o.get("sale") is not None:
                if o.get("svoid") is not None:
                    out.extend(self._sale(o, oid, o["sale"], 1, o["svoid"]))
                if gone is not None:
                    out.extend(self._sale(o, oid, o["sale"], -1, gone))
                o["svoid"] = gone
        return out

    def _credits(self, o: dict[str, Any], records: list[dict[str, Any]], sign: int, ts: int | None) -> list[Output]:
        """Send ``records`` again (``sign`` 1) or their negation (-1), at ``ts`` (None: each at its own)."""
        if not records:
            return []
        o["version"] += 1
        tag = "r" if sign < 0 else "u"
        out: list[Output] = []
        for i, r in enumerate(records):
            record = r | {"event_id": derived_id(o["event_id"], f"@{tag}{o['version']}#{i}"),
                          "ts": r["ts"] if ts is None else ts}
            if sign < 0:
                record["revenue"] = {m: str(-Decimal(v)) for m, v in r["revenue"].items()}
                for name in _NEGATED:
                    record[name] = -r.get(name, 0)
            out.append(self._forward(record))
        return out

    @staticmethod
    def _sale(o: dict[str, Any], order_id: str, sale: dict[str, Any], sign: int, ts: int,
              placement: bool = False) -> list[Output]:
        """The shop's record of this order (its amount, and the part each model credits to social
        touches) at ``ts``, or its negation. ``placement``: the sale itself is sent or taken back
        (its credit changed), so it carries ``unattributed`` (+1 / -1 for an order without any
        touch); a cancellation's take-back (and its undoing) carries 0: the order was placed."""
        o["sales"] = o.get("sales", 0) + 1
        neg = sign < 0
        record = {"event_id": derived_id(o["event_id"], f"$s{o['sales']}"), "ts": ts, "order_id": order_id,
                  "currency": o["currency"], "amount": str(-Decimal(sale["amount"])) if neg else sale["amount"],
                  "social": {m: str(-Decimal(v)) for m, v in sale["social"].items()} if neg else sale["social"],
                  "unattributed": sign * sale.get("un", 0) if placement else 0}
        return [Forward("account", SHOP_KEY, "sales", record, "orders")]

    @staticmethod
    def _forward(record: dict[str, Any]) -> Forward:
        return Forward("account", account_key(record["platform"], record["account_id"]), "credits", record, "orders")

    # -- conversions -----------------------------------------------------------
    def _conversions(self, state: State) -> set[tuple[Any, ...]]:
        """What the shopper's standing orders convert: the last non-direct click of each, and the
        leads before each that was a new customer. ``(kind, cohort_ts, platform, account, id)``."""
        out: set[tuple[Any, ...]] = set()
        for o in state["orders"].values():
            if not o["placed"] or self._cancelled_at(o) is not None:
                continue
            if o.get("conv"):
                out.add(("click", *o["conv"]))
            out.update(("lead", *lead) for lead in o.get("leads", ()))
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

    # -- checkouts -------------------------------------------------------------
    def source_at(self, state: State, ts: int) -> str:
        """The source of the shopper's last touch in the lookback up to ``ts``: a click's platform or
        a session's source (a session wins a tie, then the greater event id); ``none`` without."""
        best: tuple[int, int, str] | None = None
        source = "none"
        low = ts - self.lookback_ms
        for kind, rows, eid_at in ((0, state["clicks"], 5), (1, state.get("sessions", ()), 3)):
            for row in rows:
                if low <= row[0] <= ts:
                    key = (row[0], kind, _eid(row, eid_at))
                    if best is None or key > best:
                        best, source = key, row[1]
        return source

    def _checkout_wanted(self, state: State, co: dict[str, Any], watermark: int) -> dict[str, Any]:
        start, done = co["s"], co["c"]
        at = start[0] if start is not None else done[0]
        outcomes = ["started"]
        if done is not None and (start is None or done[0] <= start[0] + self.checkout_timeout_ms):
            outcomes.append("completed")
        elif start is not None and start[0] + self.checkout_timeout_ms <= watermark:
            outcomes.append("abandoned")  # not completed in time (a later completion leaves it so)
        frozen = co.get("src") is not None and co.get("src_at", at) == at
        src = co["src"] if frozen else self.source_at(state, at)
        return {"ts": at, "src": src, "o": outcomes}

    def _sync_checkouts(self, state: State, watermark: int) -> list[Output]:
        out: list[Output] = []
        for cid, co in sorted(state.get("checkouts", {}).items()):
            want = self._checkout_wanted(state, co, watermark)
            sent = co["sent"]
            if sent == want:
                continue
            if sent is not None and (sent["ts"], sent["src"]) == (want["ts"], want["src"]):
                gone, new = [x for x in sent["o"] if x not in want["o"]], [x for x in want["o"] if x not in sent["o"]]
            else:
                gone, new = sent["o"] if sent is not None else [], want["o"]
            for outcome in gone:
                assert sent is not None
                out.append(self._outcome(cid, co, sent["src"], outcome, sent["ts"], retract=True))
            for outcome in new:
                out.append(self._outcome(cid, co, want["src"], outcome, want["ts"]))
            co["sent"] = want
        return out

    @staticmethod
    def _outcome(checkout_id: str, co: dict[str, Any], source: str, outcome: str, ts: int,
                 retract: bool = False) -> Forward:
        """A record for the shop's windows (``all|all``), stamped at the checkout's start."""
        co["n"] += 1
        suffix = f"~{outcome}#{co['n']}" + (RETRACTED if retract else "")
        record = {"event_id": derived_id(checkout_id, suffix), "ts": ts, "checkout_id": checkout_id,
                  "source": source, "outcome": outcome}
        return Forward("account", SHOP_KEY, "checkout_outcomes", record, "checkouts")

    # -- time ------------------------------------------------------------------
    def close(self, key: str, state: State, watermark: int) -> tuple[list[Output], bool]:
        out: list[Output] = []
        changed = False
        final = watermark - self.lateness_ms  # events before this are late: nothing older can arrive
        orders = state["orders"]
        for oid, o in list(orders.items()):
            if o["placed"] and not o.get("fin") and o["ts"] < final:
                o["fin"], changed = True, True  # its touches, leads and earlier orders are all in
            last = max(o["ts"], o["cancel"][0]) if o.get("cancel") else o["ts"]
            if last + self.lookback_ms < final:
                del orders[oid]
                changed = True
        checkouts = state.get("checkouts")
        if checkouts:
            sent = self._sync_checkouts(state, watermark)
            out.extend(sent)
            changed = changed or bool(sent)
            for cid, co in list(checkouts.items()):
                at = co["s"][0] if co["s"] is not None else co["c"][0]
                if (co.get("src") is None or co.get("src_at") != at) and at < final:
                    # every touch before it is in: its source is final (the touches may go now)
                    co["src"], co["src_at"] = co["sent"]["src"], at
                    changed = True
                if at + self.checkout_timeout_ms < final:  # nothing can change it any more
                    del checkouts[cid]
                    changed = True
            if not checkouts:
                del state["checkouts"]
        low = final - self.lookback_ms
        clicks = state["clicks"]
        if clicks and clicks[0][0] < low:
            state["clicks"], changed = [c for c in clicks if c[0] >= low], True
        sessions = state.get("sessions")
        if sessions and sessions[0][0] < low:
            state["sessions"], changed = [r for r in sessions if r[0] >= low], True
            if not state["sessions"]:
                del state["sessions"]
        leads = state.get("leads")
        if leads and leads[0][0] < low:
            state["leads"], changed = [r for r in leads if r[0] >= low], True
            if not state["leads"]:
                del state["leads"]
        return out, changed

    def windowed(self, state: State) -> None:
        return None  # no windows: orders and checkouts are decided on the watermark (``close``)

    def results(self, key: str, cw: Any, state: State, revision: int) -> list[Output]:
        return []

    def samples(self, key: str, state: State, watermark: int) -> Iterable[Sample]:
        return ()

    def view(self, key: str, state: State, watermark: int) -> dict[str, Any]:
        return {"clicks": len(state["clicks"]), "orders": len(state["orders"]), "sessions": len(state.get("sessions", ())),
                "open_checkouts": len(state.get("checkouts", {}))}
