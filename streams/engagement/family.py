"""Engagement family: likes, impressions, audience and clicks per platform account.

State per key (``platform|account``): the windowed aggregates of
``engagement.metrics`` plus the latest follower snapshot ever seen.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from schemas.events import Audience, Event, of_account
from schemas.results import Result, result_key

from .. import windows
from ..family import Gauge, Output, Route, Sample
from ..windows import WindowSpec, iso
from . import metrics as m

__all__ = ["Engagement"]

_W = ("platform", "account", "window")


class Engagement:
    name = "engagement"
    topics = frozenset({"likes", "impressions", "audience", "clicks"})
    routes = tuple(Route(topic, of_account) for topic in sorted(topics))
    counters: tuple[Gauge, ...] = ()
    gauges: tuple[Gauge, ...] = (
        Gauge("socialpulse_engagements", "Interactions (likes, comments, shares, saves, reactions) in the trailing window.", _W),
        Gauge("socialpulse_impressions", "Impressions in the trailing window.", _W),
        Gauge("socialpulse_clicks", "Clicks in the trailing window.", _W),
        Gauge("socialpulse_engagement_rate", "Engagements / impressions in the trailing window (ratio).", _W),
        Gauge(
            "socialpulse_engagement_rate_by_followers",
            "Engagements in the trailing window / latest follower count (ratio).",
            _W,
        ),
        Gauge("socialpulse_click_through_rate", "Clicks / impressions in the trailing window (ratio).", _W),
        Gauge("socialpulse_followers", "Latest follower count snapshot.", ("platform", "account")),
        Gauge(
            "socialpulse_follower_growth",
            "Latest minus first follower snapshot in the trailing window.",
            _W,
        ),
    )

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
    def new_state(self) -> dict[str, Any]:
        return {"win": windows.new_windowed(), "followers": None}

    def decode_state(self, raw: dict[str, Any]) -> dict[str, Any]:
        return {"win": windows.decode_windowed(raw["win"]), "followers": raw.get("followers")}

    def is_empty(self, state: dict[str, Any]) -> bool:
        return windows.is_empty(state["win"])

    def windowed(self, state: dict[str, Any]) -> dict[str, Any]:
        return state["win"]  # type: ignore[no-any-return]

    # -- events ------------------------------------------------------------
    def apply(self, key: str, state: dict[str, Any], events: list[Event], watermark: int) -> list[Output]:
        """Pre-aggregate the batch per bucket, then fold each bucket in once."""
        spec = self.spec
        parts: dict[int, windows.Agg] = {}
        for event in events:
            b = windows.bucket_start(event.ts, spec.bucket)
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

    def close(self, key: str, state: dict[str, Any], watermark: int) -> tuple[list[Output], bool]:
        return [], windows.prune(state["win"], watermark, self.spec)

    def results(self, key: str, cw: windows.ClosedWindow, state: dict[str, Any], revision: int) -> list[Output]:
        """The results of one closed window (``revision`` 0 first, +1 per correction)."""
        platform, account = key.split("|", 1)
        agg = cw.agg
        start, end = iso(cw.start), iso(cw.end)
        followers = agg["f1"][1] if agg["f1"] else (state["followers"][1] if state["followers"] else None)
        values: list[tuple[str, float | None, dict[str, Any]]] = [
            ("engagements", agg["eng"], {"by_kind": dict(sorted(agg["kinds"].items()))}),
            ("impressions", agg["imp"], {}),
            ("clicks", agg["clk"], {}),
            ("engagement_rate", m.engagement_rate(agg), {}),
            ("engagement_rate_by_followers", m.engagement_rate_by_followers(agg, followers), {"followers": followers}),
            ("click_through_rate", m.click_through_rate(agg), {}),
        ]
        if agg["f1"] is not None:
            values.append(("followers", agg["f1"][1], {}))
            values.append(("follower_growth", m.follower_growth(agg), {}))
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
    def _trailing(self, state: dict[str, Any], watermark: int, size: int) -> windows.Agg:
        return windows.trailing(state["win"], watermark, size, m.merge) or m.empty()

    def samples(self, key: str, state: dict[str, Any], watermark: int) -> Iterable[Sample]:
        platform, account = key.split("|", 1)
        followers = state["followers"][1] if state["followers"] else None
        if followers is not None:
            yield "socialpulse_followers", (platform, account), float(followers)
        for size in self.spec.trailing:
            label = self.spec.label(size)
            agg = self._trailing(state, watermark, size)
            lv = (platform, account, label)
            yield "socialpulse_engagements", lv, float(agg["eng"])
            yield "socialpulse_impressions", lv, float(agg["imp"])
            yield "socialpulse_clicks", lv, float(agg["clk"])
            for name, value in (
                ("socialpulse_engagement_rate", m.engagement_rate(agg)),
                ("socialpulse_engagement_rate_by_followers", m.engagement_rate_by_followers(agg, followers)),
                ("socialpulse_click_through_rate", m.click_through_rate(agg)),
                ("socialpulse_follower_growth", m.follower_growth(agg)),
            ):
                if value is not None:
                    yield name, lv, float(value)

    def view(self, key: str, state: dict[str, Any], watermark: int) -> dict[str, Any]:
        followers = state["followers"][1] if state["followers"] else None
        out: dict[str, Any] = {"followers": followers, "windows": {}}
        for size in self.spec.trailing:
            agg = self._trailing(state, watermark, size)
            out["windows"][self.spec.label(size)] = {
                "engagements": agg["eng"],
                "by_kind": dict(sorted(agg["kinds"].items())),
                "impressions": agg["imp"],
                "clicks": agg["clk"],
                "engagement_rate": m.engagement_rate(agg),
                "engagement_rate_by_followers": m.engagement_rate_by_followers(agg, followers),
                "click_through_rate": m.click_through_rate(agg),
                "follower_growth": m.follower_growth(agg),
                "top_posts": m.top_posts(agg, self.top_n),
            }
        return out
