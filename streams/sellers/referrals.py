"""Referred orders, joined to their referrer's account on the shopper's key (``actor`` stage).

An order carries ``referrer_id`` but no account; a lead carries both. A referred order counts
for its referrer on the account where that referrer referred the shopper: the account of the
shopper's latest lead with the same ``referrer_id`` at or before the order, within the
attribution lookback (the earliest one after it, if none came before: a CRM may file the lead
after the sale). Without such a lead it counts nowhere (no account can show it) until one comes.

**Conversations.** An order whose shopper left a DM lead (kind ``dm``, no post) in the lookback
before it is a sale of that conversation: a ``ConversationSale`` goes to the lead's account,
whose sellers family credits the seller of the conversation that brought the lead (the latest
such lead; by difference too). It is a channel of its own beside the posts' last-touch credit.

State per shopper (only shoppers with orders or referred leads):

    {"leads":  [[ts, platform, account, referrer, event_id], ...],   # referred leads, by ts
     "dms":    [[ts, platform, account, event_id], ...],             # DM leads, by ts
     "orders": {order_id: [ts, event_id, referrer, amount, currency, cancel_ts, sent, sent_dm]}}

``sent`` is what the order forwarded (``Referral`` records, at the order's ``ts`` and, when it
was cancelled or refunded, their negation at that ``ts``). After each batch every referred
order's wanted records are computed again from the state; when they differ, the sent ones are
negated and the new ones sent: the order of arrival never matters. An order is a **new
customer** when no other order of the shopper placed in the lookback before it was standing
at its ``ts`` (the conversion family's rule), a **repeat** order otherwise.

Kept until the watermark passes ``ts + lookback + ALLOWED_LATENESS`` (orders: their latest
event's ``ts``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, NotRequired, TypedDict

from schemas.events import Event, Lead, Order, account_key, derived_id, of_shopper

from ..family import Forward, Gauge, Output, Route, Sample
from ..windows import WindowSpec

__all__ = ["Referrals"]


class State(TypedDict):
    leads: NotRequired[list[list[Any]]]
    dms: NotRequired[list[list[Any]]]
    orders: NotRequired[dict[str, list[Any]]]


class Referrals:
    name = "referrals"
    topics = frozenset({"orders", "leads"})
    # both counted elsewhere: an order on its shopper (``conversion.Shopper``), a lead on its account
    routes = (Route("orders", of_shopper), Route("leads", of_shopper, primary=False))
    gauges: tuple[Gauge, ...] = ()
    counters: tuple[Gauge, ...] = ()
    merge = None

    def __init__(self, lookback_ms: int, lateness_ms: int) -> None:
        self.lookback_ms = lookback_ms
        self.lateness_ms = lateness_ms

    @classmethod
    def from_settings(cls, settings: Any, spec: WindowSpec) -> Referrals:
        return cls(settings.attribution_lookback, spec.lateness_ms)

    def constants(self) -> Iterable[tuple[Gauge, float]]:
        return ()

    def new_state(self) -> State:
        return {}

    def decode_state(self, raw: dict[str, Any]) -> State:
        state: State = {}
        if raw.get("leads"):
            state["leads"] = raw["leads"]
        if raw.get("dms"):
            state["dms"] = raw["dms"]
        if raw.get("orders"):
            state["orders"] = {oid: o + [[]] * (8 - len(o)) for oid, o in raw["orders"].items()}
        return state

    def is_empty(self, state: State) -> bool:
        return not state.get("leads") and not state.get("orders") and not state.get("dms")

    def windowed(self, state: State) -> None:
        return None

    def results(self, key: str, cw: Any, state: State, revision: int) -> list[Output]:
        return []

    def samples(self, key: str, state: State, watermark: int) -> Iterable[Sample]:
        return ()

    def view(self, key: str, state: State, watermark: int) -> dict[str, Any]:
        return {"referred_leads": len(state.get("leads", ())), "dm_leads": len(state.get("dms", ())),
                "orders": len(state.get("orders", {}))}

    # -- events ------------------------------------------------------------
    def apply(self, key: str, state: State, events: list[Event], watermark: int) -> list[Output]:
        for event in events:
            if isinstance(event, Lead):
                if event.kind == "dm" and event.post_id is None:
                    dms = state.setdefault("dms", [])
                    dm = [event.ts, event.platform, event.account_id, event.event_id]
                    if dm not in dms:
                        dms.append(dm)
                        dms.sort(key=lambda r: (r[0], r[3]))
                if event.referrer_id is None:
                    continue
                leads = state.setdefault("leads", [])
                row = [event.ts, event.platform, event.account_id, event.referrer_id, event.event_id]
                if row not in leads:
                    leads.append(row)
                    leads.sort(key=lambda r: (r[0], r[4]))
            elif isinstance(event, Order):
                orders = state.setdefault("orders", {})
                o = orders.get(event.order_id)
                if o is None:
                    o = orders[event.order_id] = [None, None, None, "0", event.currency, None, [], []]
                if event.status == "placed":
                    if o[0] is None or (event.ts, event.event_id) < (o[0], o[1]):
                        o[0], o[1], o[3], o[4] = event.ts, event.event_id, str(event.amount), event.currency
                        o[2] = event.referrer_id
                else:
                    if event.referrer_id is not None and o[2] is None and o[0] is None:
                        o[2] = event.referrer_id
                    o[5] = event.ts if o[5] is None else min(o[5], event.ts)
        return self._sync(key, state)

    def _standing_at(self, o: list[Any], ts: int) -> bool:
        cancel = o[5]
        return o[0] is not None and (cancel is None or max(cancel, o[0]) > ts)

    def _is_new(self, state: State, oid: str, o: list[Any]) -> bool:
        mine = (o[0], o[1])
        for other_id, p in state.get("orders", {}).items():
            if other_id == oid or p[0] is None:
                continue
            if o[0] - self.lookback_ms <= p[0] and (p[0], p[1]) < mine and self._standing_at(p, o[0]):
                return False
        return True

    def _account(self, state: State, o: list[Any]) -> tuple[str, str] | None:
        ts, ref = o[0], o[2]
        mine = [lead for lead in state.get("leads", ()) if lead[3] == ref]
        before = [lead for lead in mine if ts - self.lookback_ms <= lead[0] <= ts]
        if before:
            return before[-1][1], before[-1][2]
        after = [lead for lead in mine if ts < lead[0] <= ts + self.lookback_ms]
        return (after[0][1], after[0][2]) if after else None

    def _wanted(self, state: State, oid: str, o: list[Any]) -> list[dict[str, Any]]:
        if o[0] is None or o[2] is None:
            return []
        where = self._account(state, o)
        if where is None:
            return []
        new = self._is_new(state, oid, o)
        record = {"ts": o[0], "referrer_id": o[2], "platform": where[0], "account_id": where[1], "order_id": oid,
                  "currency": o[4], "amount": o[3], "orders": 1, "customers": 1 if new else 0,
                  "repeat": 0 if new else 1}
        out = [record]
        cancel = o[5]
        if cancel is not None and o[0] - self.lookback_ms <= cancel <= o[0] + self.lookback_ms:
            out.append(_negated(record, max(cancel, o[0])))
        return out

    def _dm_wanted(self, state: State, oid: str, o: list[Any]) -> list[dict[str, Any]]:
        """The order as a sale of the conversation of the shopper's latest DM lead in the lookback."""
        if o[0] is None:
            return []
        dms = [d for d in state.get("dms", ()) if o[0] - self.lookback_ms <= d[0] <= o[0]]
        if not dms:
            return []
        dm = dms[-1]
        record = {"ts": o[0], "platform": dm[1], "account_id": dm[2], "lead_id": dm[3], "order_id": oid,
                  "currency": o[4], "amount": o[3], "orders": 1, "customers": 1 if self._is_new(state, oid, o) else 0}
        out = [record]
        cancel = o[5]
        if cancel is not None and o[0] - self.lookback_ms <= cancel <= o[0] + self.lookback_ms:
            out.append(_negated(record, max(cancel, o[0])))
        return out

    def _sync(self, key: str, state: State) -> list[Output]:
        out: list[Output] = []
        orders = state.get("orders", {})
        for oid in sorted(orders, key=lambda k: (orders[k][0] or 0, k)):
            o = orders[oid]
            for at, topic, tag, want in ((6, "referrals", "ref", self._wanted(state, oid, o)),
                                         (7, "conversation_sales", "dm", self._dm_wanted(state, oid, o))):
                if want == o[at]:
                    continue
                n = len(o[at]) + len(want)
                sent = [_negated(r, r["ts"]) for r in o[at]] + want
                for i, r in enumerate(sent):
                    eid = derived_id(oid, f"~{tag}{len(o[at])}.{n}.{i}.{_digest(o[at], want)}")
                    out.append(Forward("account", account_key(r["platform"], r["account_id"]), topic,
                                       r | {"event_id": eid}, "orders"))
                o[at] = want
        return out

    # -- time --------------------------------------------------------------
    def close(self, key: str, state: State, watermark: int) -> tuple[list[Output], bool]:
        low = watermark - self.lateness_ms - self.lookback_ms
        changed = False
        for name in ("leads", "dms"):
            rows: list[list[Any]] | None = state.get(name)  # type: ignore[assignment]
            if rows and rows[0][0] < low:
                kept = [r for r in rows if r[0] >= low]
                if kept:
                    state[name] = kept  # type: ignore[literal-required]
                else:
                    del state[name]  # type: ignore[misc]
                changed = True
        orders = state.get("orders")
        if orders:
            for oid, o in list(orders.items()):
                last = max(x for x in (o[0], o[5]) if x is not None)
                if last < low:
                    del orders[oid]
                    changed = True
            if not orders:
                del state["orders"]
        return [], changed


def _negated(record: dict[str, Any], ts: int) -> dict[str, Any]:
    return record | {"ts": ts, "amount": str(-Decimal(record["amount"]))} | {
        name: -record[name] for name in ("orders", "customers", "repeat") if name in record}


def _digest(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> str:
    """A short digest of a change (the derived records' ids are unique per change)."""
    text = repr((before, after)).encode()
    return hashlib.blake2b(text, digest_size=6).hexdigest()
