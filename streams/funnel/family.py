"""Funnel family: the leads an account's content and outreach bring, what they cost, and the
site sessions its links bring (the account stage's part of the selling funnel; new customers
and CPA are the conversion family's, checkouts the shopper's).

State per key (``platform|account``): the windowed aggregates of ``funnel.metrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypedDict

from schemas.events import PLATFORMS, Event, Session, account_key, of_account, split_account_key
from schemas.results import Result, result_key

from .. import windows
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
    """One windowed metric: result and API name, help, value from a window's aggregate."""

    name: str
    help: str
    value: Callable[[Agg], float | int | None]


METRICS: tuple[Metric, ...] = (
    Metric("leads", "Leads (sign-ups, forms, DM leads) in the trailing window.", lambda agg: agg["leads"]),
    Metric("lead_rate", "Leads / clicks in the trailing window (ratio).", m.lead_rate),
    Metric("lead_rate_by_sessions", "Leads / sessions from social in the trailing window (ratio).",
           m.lead_rate_by_sessions),
    Metric("social_sessions", "Site sessions this account's links brought, trailing window.", lambda agg: agg["soc"]),
)
CPL = Gauge("socialpulse_cost_per_lead", "Spend / leads in the trailing window, in the spend's currency.", _WC)


class State(TypedDict):
    """A key's funnel slot (its changelog JSON has the same keys)."""

    win: Windowed


class Funnel:
    name = "funnel"
    topics = frozenset({"leads", "clicks", "sessions", "spend"})
    routes = (
        Route("leads", of_account), Route("clicks", of_account), Route("spend", of_account),
        Route("sessions", social_account, primary=False),  # counted on its shopper (``Shopper``)
    )
    counters: tuple[Gauge, ...] = ()
    gauges: tuple[Gauge, ...] = (*(Gauge(f"socialpulse_{x.name}", x.help, _W) for x in METRICS), CPL)
    merge = staticmethod(m.merge)

    def __init__(self, spec: WindowSpec) -> None:
        self.spec = spec

    @classmethod
    def from_settings(cls, settings: Any, spec: WindowSpec) -> Funnel:
        return cls(spec)

    def constants(self) -> Iterable[tuple[Gauge, float]]:
        return ()

    # -- state -------------------------------------------------------------
    def new_state(self) -> State:
        return {"win": windows.new_windowed()}

    def decode_state(self, raw: dict[str, Any]) -> State:
        return {"win": windows.decode_windowed(raw["win"])}

    def is_empty(self, state: State) -> bool:
        return windows.is_empty(state["win"])

    def windowed(self, state: State) -> Windowed:
        return state["win"]

    # -- events ------------------------------------------------------------
    def apply(self, key: str, state: State, events: list[Event], watermark: int) -> list[Output]:
        parts: dict[int, Agg] = {}
        for event in events:
            b = windows.bucket_start(event.ts, self.spec.bucket_ms)
            agg = parts.get(b)
            if agg is None:
                agg = parts[b] = m.empty()
            m.fold(agg, event)
        for b, agg in parts.items():
            windows.add(state["win"], b, agg, self.spec, m.merge, watermark)
        return []

    def close(self, key: str, state: State, watermark: int) -> tuple[list[Output], bool]:
        return [], windows.prune(state["win"], watermark, self.spec)

    def results(self, key: str, cw: windows.ClosedWindow, state: State, revision: int) -> list[Output]:
        platform, account = split_account_key(key)
        agg, start = cw.agg, iso(cw.start)
        if not (agg["leads"] or agg["soc"]):
            return []  # clicks and spend alone are the engagement and conversion families' results
        common = {"family": "funnel", "platform": platform, "account_id": account, "window": cw.label,
                  "window_start": start, "window_end": iso(cw.end), "revision": revision}
        out: list[Output] = []

        def add(metric: str, value: Any, *key_extra: str, **fields: Any) -> None:
            if value is not None:
                out.append(Result(metric=metric, value=float(value), **common, **fields,  # type: ignore[arg-type]
                                  key=result_key(metric, platform, account, cw.label, start, *key_extra)))

        for x in METRICS:
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
        for size in self.spec.trailing_ms:
            agg = self._trailing(state, watermark, size)
            if not (agg["leads"] or agg["soc"]):
                continue  # no funnel series for an account without leads or sessions
            w = (platform, account, self.spec.label(size))
            for x in METRICS:
                value = x.value(agg)
                if value is not None:
                    yield f"socialpulse_{x.name}", w, float(value)
            for cur, v in m.cost_per_lead(agg["spend"], agg["leads"]).items():
                yield CPL.name, (*w, cur), float(v)

    def view(self, key: str, state: State, watermark: int) -> dict[str, Any]:
        out: dict[str, Any] = {"windows": {}}
        for size in self.spec.trailing_ms:
            agg = self._trailing(state, watermark, size)
            view: dict[str, Any] = {x.name: x.value(agg) for x in METRICS}
            view["leads_by_kind"] = dict(sorted(agg["kinds"].items()))
            view["cost_per_lead"] = {cur: str(v) for cur, v in m.cost_per_lead(agg["spend"], agg["leads"]).items()}
            view["campaigns"] = {
                name: {"leads": c["leads"], "cost_per_lead": {cur: str(v) for cur, v in m.cost_per_lead(c["spend"], c["leads"]).items()}}
                for name, c in sorted(agg["camp"].items()) if c["leads"]
            }
            out["windows"][self.spec.label(size)] = view
        return out
