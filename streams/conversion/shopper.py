"""Attribution state per shopper (``actor`` stream): clicks joined to orders.

State per key (``actor_id``):

    {"clicks": [[ts, platform, account, campaign, click_id], ...],   # oldest first, within the lookback
     "orders": {order_id: {"exp": ts, "credits": [credit event, ...], "reversed": bool}}}

A placed order is credited to the shopper's clicks in ``[ts - lookback, ts]``
(``click_id`` pins the last touch); each touch's credit is forwarded to its
account as a ``Credit`` record. A cancelled or refunded order forwards the exact
negation of what its placement credited. Clicks and remembered orders expire
after the lookback, so state stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from schemas.events import Click, Event, Order, OrderStatus

from ..family import Forward, Gauge, Output, Sample, Tally
from .attribution import credits

__all__ = ["Shopper", "touches"]


def touches(clicks: list[list[Any]], order_ts: int, lookback_ms: int, click_id: str | None) -> list[list[Any]]:
    """The clicks an order credits, oldest first; a matching ``click_id`` is the last touch."""
    window = [c for c in clicks if order_ts - lookback_ms <= c[0] <= order_ts]
    if click_id:
        pinned = [c for c in window if c[4] == click_id]
        if pinned:
            last = pinned[-1]
            return [c for c in window if c is not last and c[0] <= last[0]] + [last]
    return window


class Shopper:
    name = "attribution"
    topics = frozenset({"clicks", "orders"})
    gauges: tuple[Gauge, ...] = ()

    def __init__(self, lookback_ms: int, half_life_ms: int = 7 * 86_400_000) -> None:
        self.lookback = lookback_ms
        self.half_life_s = half_life_ms / 1000

    def new_state(self) -> dict[str, Any]:
        return {"clicks": [], "orders": {}}

    def decode_state(self, raw: dict[str, Any]) -> dict[str, Any]:
        return raw

    def is_empty(self, state: dict[str, Any]) -> bool:
        return not state["clicks"] and not state["orders"]

    def apply(self, key: str, state: dict[str, Any], events: list[Event], watermark: int) -> list[Output]:
        out: list[Output] = []
        for event in events:
            if isinstance(event, Click):
                row = [event.ts, event.platform.value, event.account_id, event.campaign_id, event.click_id]
                clicks = state["clicks"]
                clicks.append(row)
                if len(clicks) > 1 and clicks[-2][0] > event.ts:
                    clicks.sort(key=lambda c: c[0])
            elif isinstance(event, Order):
                if event.status == OrderStatus.placed:
                    out.extend(self._placed(state, event))
                else:
                    out.extend(self._reversed(state, event))
        return out

    def _placed(self, state: dict[str, Any], order: Order) -> list[Output]:
        if order.order_id in state["orders"]:
            return []  # the same order placed twice under two event ids: credit it once
        hits = touches(state["clicks"], order.ts, self.lookback, order.click_id)
        if not hits:
            return [Tally("socialpulse_unattributed_orders", (order.currency,))]
        ages = [(order.ts - c[0]) / 1000 for c in hits]
        by_model = credits(ages, self.half_life_s)
        records = []
        for i, c in enumerate(hits):
            revenue = {model: str((order.amount * shares[i]).quantize(Decimal("1e-6"))) for model, shares in by_model.items()}
            records.append({
                "event_id": f"{order.event_id}#{i}", "ts": order.ts, "platform": c[1], "account_id": c[2],
                "campaign_id": c[3], "order_id": order.order_id, "currency": order.currency,
                "revenue": revenue, "orders": 1 if i == len(hits) - 1 else 0,
            })
        state["orders"][order.order_id] = {"exp": order.ts + self.lookback, "credits": records, "reversed": False}
        return [self._forward(r) for r in records]

    def _reversed(self, state: dict[str, Any], order: Order) -> list[Output]:
        placed = state["orders"].get(order.order_id)
        if placed is None or placed["reversed"]:
            return []  # never credited (unattributed or outside the lookback), or already taken back
        placed["reversed"] = True
        out: list[Output] = []
        for i, r in enumerate(placed["credits"]):
            back = r | {
                "event_id": f"{order.event_id}#{i}", "ts": order.ts,
                "revenue": {m: str(-Decimal(v)) for m, v in r["revenue"].items()}, "orders": -r["orders"],
            }
            out.append(self._forward(back))
        return out

    @staticmethod
    def _forward(record: dict[str, Any]) -> Forward:
        return Forward("account", f"{record['platform']}|{record['account_id']}", "credits", record, "orders")

    def close(self, key: str, state: dict[str, Any], watermark: int) -> tuple[list[Output], bool]:
        low = watermark - self.lookback
        clicks = state["clicks"]
        keep = [c for c in clicks if c[0] >= low]
        orders = state["orders"]
        gone = [oid for oid, o in orders.items() if o["exp"] < watermark]
        for oid in gone:
            del orders[oid]
        changed = len(keep) != len(clicks) or bool(gone)
        state["clicks"] = keep
        return [], changed

    def samples(self, key: str, state: dict[str, Any], watermark: int) -> Iterable[Sample]:
        return ()

    def view(self, key: str, state: dict[str, Any], watermark: int) -> dict[str, Any]:
        return {"clicks": len(state["clicks"]), "orders": len(state["orders"])}
