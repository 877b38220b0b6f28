"""Engagement arithmetic: pure functions over one window's aggregate.

An aggregate (``agg``) is what the windowing core keeps per bucket and window:

    {"eng": int, "kinds": {kind: int}, "imp": int, "clk": int,
     "posts": {post_id: int},            # engagements per post, for top posts
     "f0": [ts, followers] | None,       # first follower snapshot in the window (least [ts, followers])
     "f1": [ts, followers] | None,       # latest follower snapshot in the window (greatest [ts, followers])
     # per post and paid/organic (absent in aggregates written before them: read with .get)
     "impp": int, "clkp": int,           # paid impressions, paid clicks (organic = total - paid)
     "pi": {post_id: int},               # impressions per post
     "pc": {post_id: int},               # clicks per post (clicks that name a post)
     "pl": {post_id: int},               # leads per post (leads that name a post)
     "pr": {post_id: {currency: "amount"}}}  # last-touch credited revenue per post (Decimal text)

Per-post entries exist only for the posts that had an event in the bucket or window, so a
window's memory grows with the posts active in it, not with the account's history. A lead
or a credit without ``post_id`` counts for no post (the account's leads and revenue are the
funnel's and conversion's).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from schemas.events import Audience, Click, Credit, Event, Impression, Lead, Like

from ..windows import Agg

__all__ = [
    "empty",
    "is_void",
    "fold",
    "merge",
    "engagement_rate",
    "engagement_rate_by_followers",
    "click_through_rate",
    "follower_growth",
    "top_posts",
    "post_engagement_rate_by_followers",
    "click_through_rate_by_type",
    "post_table",
    "top_posts_by_revenue",
    "BENCHMARK_ENGAGEMENT_RATE",
    "CTR_TYPES",
]

#: Published per-post engagement-rate benchmarks (Rival IQ via Bazaarvoice, METRICS.md).
BENCHMARK_ENGAGEMENT_RATE = {"facebook": 0.0006, "instagram": 0.0047, "tiktok": 0.0569, "x": 0.00035}


#: ``type`` label values of the click-through rate by type
CTR_TYPES = ("organic", "paid")
#: per-post counters (post -> int), beside ``posts`` (engagements per post)
_PER_POST = ("pi", "pc", "pl")


def empty() -> Agg:
    # the paid and per-post fields appear only once they have something (they are written
    # to the changelog with every bucket: an empty map per bucket is bytes for nothing)
    return {"eng": 0, "kinds": {}, "imp": 0, "clk": 0, "posts": {}, "f0": None, "f1": None}


#: the per-post detail (``slim`` drops it)
DETAIL = ("pi", "pc", "pl", "pr")


def slim(agg: Agg) -> Agg:
    """The aggregate without its per-post detail (for windows that publish no per-post table)."""
    return {k: v for k, v in agg.items() if k not in DETAIL}


def _add_money(d: dict[str, str], currency: str, amount: Decimal | str) -> None:
    d[currency] = str(Decimal(d.get(currency, "0")) + Decimal(amount))


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
        pi = agg.setdefault("pi", {})
        pi[event.post_id] = pi.get(event.post_id, 0) + event.count
        if event.paid:
            agg["impp"] = agg.get("impp", 0) + event.count
    elif isinstance(event, Click):
        agg["clk"] += 1
        if event.paid:
            agg["clkp"] = agg.get("clkp", 0) + 1
        if event.post_id is not None:
            pc = agg.setdefault("pc", {})
            pc[event.post_id] = pc.get(event.post_id, 0) + 1
    elif isinstance(event, Lead):
        if event.post_id is not None:
            pl = agg.setdefault("pl", {})
            pl[event.post_id] = pl.get(event.post_id, 0) + 1
    elif isinstance(event, Credit):
        # last-touch revenue of the click's post; negative when a cancelled order takes it back
        amount = event.revenue.get("last_touch")
        if event.post_id is not None and amount is not None and amount != 0:
            _add_money(agg.setdefault("pr", {}).setdefault(event.post_id, {}), event.currency, amount)
    elif isinstance(event, Audience):
        # first and latest by (ts, count): two snapshots of the same ts are ordered by count,
        # never by which came first
        snap = [event.ts, event.followers]
        if agg["f0"] is None or snap < agg["f0"]:
            agg["f0"] = snap
        if agg["f1"] is None or snap > agg["f1"]:
            agg["f1"] = list(snap)


def merge(into: Agg, other: Agg) -> None:
    """Fold ``other`` into ``into`` (associative and commutative). Either may have been
    written before the per-post and paid fields existed (``.get``/``setdefault``)."""
    into["eng"] += other["eng"]
    into["imp"] += other["imp"]
    into["clk"] += other["clk"]
    for name in ("impp", "clkp"):
        if other.get(name):
            into[name] = into.get(name, 0) + other[name]
    for name in ("kinds", "posts"):
        target = into[name]
        for k, v in other[name].items():
            target[k] = target.get(k, 0) + v
    for name in _PER_POST:
        if not other.get(name):
            continue
        target = into.setdefault(name, {})
        for k, v in other[name].items():
            target[k] = target.get(k, 0) + v
    for post, by_cur in other.get("pr", {}).items():
        revenue = into.setdefault("pr", {})
        mine = revenue.setdefault(post, {})
        for cur, v in by_cur.items():
            _add_money(mine, cur, v)
    f0, f1 = other["f0"], other["f1"]
    if f0 is not None and (into["f0"] is None or f0 < into["f0"]):
        into["f0"] = list(f0)
    if f1 is not None and (into["f1"] is None or f1 > into["f1"]):
        into["f1"] = list(f1)


def is_void(agg: Agg) -> bool:
    """Nothing in the window counts: no engagement, impression, click, snapshot or lead, and
    credited revenue (if any) that nets to zero, or none kept (windows without per-post detail
    keep no credits). Such a window publishes nothing, as if it never had any events: an
    order credited to a post and re-credited elsewhere by a late click leaves one behind in
    one arrival order and none in event-time order."""
    if agg["eng"] or agg["imp"] or agg["clk"] or agg["f1"] is not None or agg["posts"]:
        return False
    if any(agg.get(name) for name in _PER_POST):
        return False
    return not any(Decimal(v) != 0 for by_cur in agg.get("pr", {}).values() for v in by_cur.values())


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


def _posts_with_content(agg: Agg) -> set[str]:
    """Posts engaged with in the window (the per-post benchmark's posts; the trailing buckets
    keep engagements per post, not the per-post impressions)."""
    return set(agg["posts"])


def post_engagement_rate_by_followers(agg: Agg, followers: int | None) -> float | None:
    """Mean over the window's posts engaged with of post engagements ÷
    the latest follower count (Rival IQ's per-post benchmark). Every engagement names its
    post, so this is engagements ÷ (posts × followers). None without posts or followers."""
    n = len(_posts_with_content(agg))
    if not n or not followers:
        return None
    return sum(agg["posts"].values()) / (n * followers)


def click_through_rate_by_type(agg: Agg) -> dict[str, float | None]:
    """{"organic": organic clicks ÷ organic impressions, "paid": paid clicks ÷ paid impressions},
    None where that type had no impressions."""
    imp_paid, clk_paid = agg.get("impp", 0), agg.get("clkp", 0)
    return {"organic": _ratio(agg["clk"] - clk_paid, agg["imp"] - imp_paid), "paid": _ratio(clk_paid, imp_paid)}


def post_table(agg: Agg, followers: int | None) -> list[dict[str, Any]]:
    """One row per post seen in the window (any of engagements, impressions, clicks, leads,
    credited revenue that does not net to zero), sorted by post id. Ratios are None where the denominator is 0;
    revenue is last-touch credited revenue per currency as Decimal text (currencies that net
    to zero left out)."""
    eng, imp, clk, leads, rev = agg["posts"], agg.get("pi", {}), agg.get("pc", {}), agg.get("pl", {}), agg.get("pr", {})
    # a post whose credited revenue all netted to zero (an order credited to it, then taken
    # back or re-credited to another post by a late click) and nothing else is not a post of
    # the window: in event-time order it may never have been credited at all
    credited = {post for post, by_cur in rev.items() if any(Decimal(v) != 0 for v in by_cur.values())}
    rows = []
    for post in sorted(set(eng) | set(imp) | set(clk) | set(leads) | credited):
        e, i, c = eng.get(post, 0), imp.get(post, 0), clk.get(post, 0)
        rows.append({
            "post_id": post, "engagements": e, "impressions": i, "engagement_rate": _ratio(e, i),
            "engagement_rate_by_followers": _ratio(e, followers) if followers else None,
            "clicks": c, "click_through_rate": _ratio(c, i), "leads": leads.get(post, 0),
            # a currency whose credits cancel out is left out: an order credited and taken back
            # shows as no revenue, whether its credit came before its cancellation or never
            "revenue": {cur: v for cur, v in sorted(rev.get(post, {}).items()) if Decimal(v) != 0},
        })
    return rows


def top_posts_by_revenue(agg: Agg, n: int) -> dict[str, list[dict[str, Any]]]:
    """Per currency, the ``n`` posts with the most positive last-touch revenue (ties by post id).
    Currencies are never added together: there is no exchange rate here."""
    by_cur: dict[str, list[tuple[Decimal, str]]] = {}
    for post, revenue in agg.get("pr", {}).items():
        for cur, v in revenue.items():
            amount = Decimal(v)
            if amount > 0:
                by_cur.setdefault(cur, []).append((amount, post))
    return {
        cur: [{"post_id": post, "revenue": str(amount)} for amount, post in sorted(rows, key=lambda r: (-r[0], r[1]))[:n]]
        for cur, rows in sorted(by_cur.items())
    }
