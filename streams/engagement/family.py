"""Engagement family: likes, impressions, audience and clicks per platform account.

State per key (``platform|account``): the windowed aggregates of
``engagement.metrics`` plus the latest follower snapshot ever seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypedDict

from schemas.events import Audience, Event, of_account, split_account_key
from schemas.results import Result, result_key

from .. import windows
from ..family import Gauge, Output, Route, Sample
from ..windows import Windowed, WindowSpec, iso
from . import metrics as m

__all__ = ["Engagement"]

_W = ("platform", "account", "window")


@dataclass(frozen=True, slots=True)
class Metric:
    """One windowed metric: its result and API name, its help, and its value from a window's
    aggregate and the follower count (None: no value, e.g. a ratio over zero). The gauge
    (``socialpulse_<name>``), the samples, the API view and the results all come from it."""

    name: str
    help: str
    value: Callable[[windows.Agg, int | None], float | int | None]


METRICS: tuple[Metric, ...] = (
    Metric("engagements", "Interactions (likes, comments, shares, saves, reactions) in the trailing window.",
           lambda agg, followers: agg["eng"]),
    Metric("impressions", "Impressions in the trailing window.", lambda agg, followers: agg["imp"]),
    Metric("clicks", "Clicks in the trailing window.", lambda agg, followers: agg["clk"]),
    Metric("engagement_rate", "Engagements / impressions in the trailing window (ratio).",
           lambda agg, followers: m.engagement_rate(agg)),
    Metric("engagement_rate_by_followers", "Engagements in the trailing window / latest follower count (ratio).",
           m.engagement_rate_by_followers),
    Metric("click_through_rate", "Clicks / impressions in the trailing window (ratio).",
           lambda agg, followers: m.click_through_rate(agg)),
    Metric("follower_growth", "Latest minus first follower snapshot in the trailing window.",
           lambda agg, followers: m.follower_growth(agg)),
)
#: what a result of a metric carries besides its value
EXTRAS: dict[str, Callable[[windows.Agg, int | None], dict[str, Any]]] = {
    "engagements": lambda agg, followers: {"by_kind": dict(sorted(agg["kinds"].items()))},
    "engagement_rate_by_followers": lambda agg, followers: {"followers": followers},
}
FOLLOWERS = Gauge("socialpulse_followers", "Latest follower count snapshot.", ("platform", "account"))


class State(TypedDict):
    """A key's engagement slot (its changelog JSON has the same keys)."""

    win: Windowed  # aggregates of ``engagement.metrics`` (eng, imp, clk, kinds, posts, f0, f1)
    followers: list[int] | None  # the latest follower snapshot ever seen: [ts, count]


class Engagement:
    name = "engagement"
    topics = frozenset({"likes", "impressions", "audience", "clicks"})
    routes = tuple(Route(topic, of_account) for topic in sorted(topics))
    counters: tuple[Gauge, ...] = ()
    gauges: tuple[Gauge, ...] = (*(Gauge(f"socialpulse_{x.name}", x.help, _W) for x in METRICS), FOLLOWERS)

    merge = staticmethod(m.merge)

    def __init__(self, spec: WindowSpec, top_n: int = 10) -> None:
        self.spec = spec
        self.top_n = top_n

    @classmethod
    def from_settings(cls, settings: Any, spec: WindowSpec) -> Engagement:
        return cls(spec, settings.top_posts)

    def constants(self) -> Iterable[tuple[Gauge, float]]:
        return ()

    # -- state -------------------------------------------------------------
    def new_state(self) -> State:
        return {"win": windows.new_windowed(), "followers": None}

    def decode_state(self, raw: dict[str, Any]) -> State:
        return {"win": windows.decode_windowed(raw["win"]), "followers": raw.get("followers")}

    def is_empty(self, state: State) -> bool:
        return windows.is_empty(state["win"])

    def windowed(self, state: State) -> Windowed:
        return state["win"]  # type: ignore[no-any-return]

    # -- events ------------------------------------------------------------
    def apply(self, key: str, state: State, events: list[Event], watermark: int) -> list[Output]:
        """Pre-aggregate the batch per bucket, then fold each bucket in once."""
        spec = self.spec
        parts: dict[int, windows.Agg] = {}
        for event in events:
            b = windows.bucket_start(event.ts, spec.bucket_ms)
            agg = parts.get(b)
            if agg is None:
                agg = parts[b] = m.empty()
            m.fold(agg, event)
            if isinstance(event, Audience):
                latest = state["followers"]
                if latest is None or event.ts >= latest[0]:
                    state["followers"] = [event.ts, event.followers]
        for b, agg in parts.items():
            windows.add(state["win"], b, agg, spec, m.merge, watermark)
        return []

    def close(self, key: str, state: State, watermark: int) -> tuple[list[Output], bool]:
        return [], windows.prune(state["win"], watermark, self.spec)

    def results(self, key: str, cw: windows.ClosedWindow, state: State, revision: int) -> list[Output]:
        """The results of one closed window (``revision`` 0 first, +1 per correction)."""
        platform, account = split_account_key(key)
        agg = cw.agg
        start, end = iso(cw.start), iso(cw.end)
        followers = agg["f1"][1] if agg["f1"] else (state["followers"][1] if state["followers"] else None)
        values: list[tuple[str, float | None, dict[str, Any]]] = [
            (x.name, x.value(agg, followers), EXTRAS[x.name](agg, followers) if x.name in EXTRAS else {})
            for x in METRICS
        ]
        if agg["f1"] is not None:
            values.append(("followers", agg["f1"][1], {}))
        if agg["posts"]:
            top = m.top_posts(agg, self.top_n)
            values.append(("top_posts", len(top), {"top_posts": top}))
        return [
            Result(
                family="engagement",
                metric=metric,
                platform=platform,
                account_id=account,
                window=cw.label,
                window_start=start,
                window_end=end,
                value=value,
                key=result_key(metric, platform, account, cw.label, start),
                revision=revision,
                **extra,
            )
            for metric, value, extra in values
            if value is not None  # a ratio with a zero denominator is not a value
        ]

    # -- reads -------------------------------------------------------------
    def _trailing(self, state: State, watermark: int, size: int) -> windows.Agg:
        return windows.trailing(state["win"], watermark, size, m.merge) or m.empty()

    def samples(self, key: str, state: State, watermark: int) -> Iterable[Sample]:
        platform, account = split_account_key(key)
        followers = state["followers"][1] if state["followers"] else None
        if followers is not None:
            yield "socialpulse_followers", (platform, account), float(followers)
        for size in self.spec.trailing_ms:
            label = self.spec.label(size)
            agg = self._trailing(state, watermark, size)
            lv = (platform, account, label)
            for x in METRICS:
                value = x.value(agg, followers)
                if value is not None:
                    yield f"socialpulse_{x.name}", lv, float(value)

    def view(self, key: str, state: State, watermark: int) -> dict[str, Any]:
        followers = state["followers"][1] if state["followers"] else None
        out: dict[str, Any] = {"followers": followers, "windows": {}}
        for size in self.spec.trailing_ms:
            agg = self._trailing(state, watermark, size)
            view: dict[str, Any] = {x.name: x.value(agg, followers) for x in METRICS}
            view["by_kind"] = dict(sorted(agg["kinds"].items()))
            view["top_posts"] = m.top_posts(agg, self.top_n)
            out["windows"][self.spec.label(size)] = view
        return out
