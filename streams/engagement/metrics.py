"""Engagement arithmetic: pure functions over one window's aggregate.

An aggregate (``agg``) is what the windowing core keeps per bucket and window:

    {"eng": int, "kinds": {kind: int}, "imp": int, "clk": int,
     "posts": {post_id: int},            # engagements per post, for top posts
     "f0": [ts, followers] | None,       # first follower snapshot in the window
     "f1": [ts, followers] | None}       # latest follower snapshot in the window
"""

from __future__ import annotations

from typing import Any

from schemas.events import Audience, Click, Event, Impression, Like

from ..windows import Agg

__all__ = [
    "empty",
    "fold",
    "merge",
    "engagement_rate",
    "engagement_rate_by_followers",
    "click_through_rate",
    "follower_growth",
    "top_posts",
    "BENCHMARK_ENGAGEMENT_RATE",
]

#: Published per-post engagement-rate benchmarks (Rival IQ via Bazaarvoice, METRICS.md).
BENCHMARK_ENGAGEMENT_RATE = {"facebook": 0.0006, "instagram": 0.0047, "tiktok": 0.0569, "x": 0.00035}


def empty() -> Agg:
    return {"eng": 0, "kinds": {}, "imp": 0, "clk": 0, "posts": {}, "f0": None, "f1": None}


def fold(agg: Agg, event: Event) -> None:
    """Add one event to an aggregate."""
    if isinstance(event, Like):
        agg["eng"] += 1
        kinds = agg["kinds"]
        kinds[event.kind] = kinds.get(event.kind, 0) + 1
        posts = agg["posts"]
        posts[event.post_id] = posts.get(event.post_id, 0) + 1
    elif isinstance(event, Impression):
        agg["imp"] += event.count
    elif isinstance(event, Click):
        agg["clk"] += 1
    elif isinstance(event, Audience):
        snap = [event.ts, event.followers]
        if agg["f0"] is None or snap[0] < agg["f0"][0]:
            agg["f0"] = snap
        if agg["f1"] is None or snap[0] >= agg["f1"][0]:
            agg["f1"] = snap


def merge(into: Agg, other: Agg) -> None:
    """Fold ``other`` into ``into`` (associative and commutative)."""
    into["eng"] += other["eng"]
    into["imp"] += other["imp"]
    into["clk"] += other["clk"]
    for name in ("kinds", "posts"):
        target = into[name]
        for k, v in other[name].items():
            target[k] = target.get(k, 0) + v
    f0, f1 = other["f0"], other["f1"]
    if f0 is not None and (into["f0"] is None or f0[0] < into["f0"][0]):
        into["f0"] = list(f0)
    if f1 is not None and (into["f1"] is None or f1[0] >= into["f1"][0]):
        into["f1"] = list(f1)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def engagement_rate(agg: Agg) -> float | None:
    """Engagements ÷ impressions; None while impressions = 0."""
    return _ratio(agg["eng"], agg["imp"])


def engagement_rate_by_followers(agg: Agg, followers: int | None) -> float | None:
    """Engagements ÷ the latest follower count; None without a positive count."""
    return _ratio(agg["eng"], followers) if followers else None


def click_through_rate(agg: Agg) -> float | None:
    """Clicks ÷ impressions; None while impressions = 0."""
    return _ratio(agg["clk"], agg["imp"])


def follower_growth(agg: Agg) -> int | None:
    """Latest − first follower snapshot in the window; None without a snapshot."""
    if agg["f0"] is None or agg["f1"] is None:
        return None
    return int(agg["f1"][1] - agg["f0"][1])


def top_posts(agg: Agg, n: int) -> list[dict[str, Any]]:
    """The ``n`` posts with most engagements (ties broken by post id, for stable output)."""
    ranked = sorted(agg["posts"].items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [{"post_id": post, "engagements": count} for post, count in ranked]
