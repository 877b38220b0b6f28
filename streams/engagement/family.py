"""Engagement family: likes, impressions, audience and clicks per platform account, and
per post the engagements, impressions, clicks, leads and credited revenue.

State per key (``platform|account``): the windowed aggregates of
``engagement.metrics`` plus the latest follower snapshot ever seen.

Its events on the ``account`` stream: ``likes``, ``impressions``, ``audience``, ``clicks``
(its own primary routes), ``leads`` (routed here by the funnel family) and ``credits``
(each touch's share of an order, forwarded by the shopper stage): only leads and credits
that name a post count, and only per post.

Per post (results topic and API only, never Prometheus labels). Closed-window results, for
closed windows of an hour or more (the longest closed window when all are shorter: shorter
windows keep no per-post detail, which would be bytes in every changelog write):

- ``metric="posts"``: ``value`` = posts seen in the window (any engagement, impression,
  click, lead or credited revenue); ``posts`` = the per-post table, one row per post sorted
  by post id: ``post_id``, ``engagements``, ``impressions``, ``engagement_rate`` (eng ÷
  imp), ``engagement_rate_by_followers`` (eng ÷ the account's latest follower count, also
  in ``followers``), ``clicks``, ``click_through_rate`` (clicks ÷ imp), ``leads``,
  ``revenue`` ({currency: last-touch credited revenue as Decimal text; negative credits of
  cancelled or refunded orders included}). Ratios are null where the denominator is 0.
  A busy window's table is split in pages of ``POSTS_PER_RESULT`` rows so no record grows
  without bound: ``page`` (0-based) and ``pages``; key ``posts|platform|account|window|
  window_start|<page>``. Late data only adds posts, so a revision has at least as many
  pages as the one it replaces and every key is upserted.
- ``metric="top_posts_by_revenue"``, one per currency: ``value`` = posts listed,
  ``top_posts_by_revenue`` = up to ``TOP_POSTS`` [{post_id, revenue}] with positive
  revenue, most first; key ``...|<currency>``.
- ``metric="post_engagement_rate_by_followers"``: the mean over the window's posts with
  engagements or impressions of post engagements ÷ followers (Rival IQ's per-post
  benchmark); ``followers``, and ``posts_counted`` = how many posts the mean is over.
- ``metric="click_through_rate_by_type"``, one per ``type`` (organic, paid) with
  impressions of that type: clicks ÷ impressions of the type (Chatdesk's split); key
  ``...|<type>``.

The account API view carries the same per trailing window: ``posts`` (the table, unpaged),
``top_posts_by_revenue``, ``post_engagement_rate_by_followers`` and
``click_through_rate_by_type``. Gauges: ``socialpulse_post_engagement_rate_by_followers``
and ``socialpulse_click_through_rate_by_type{type}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

from schemas.events import PLATFORMS, Audience, Credit, Event, Lead, of_account, split_account_key
from schemas.results import Result, result_key

from .. import windows
from ..family import Gauge, Output, Route, Sample
from ..windows import Windowed, WindowSpec, iso
from . import metrics as m

__all__ = ["Engagement"]

_W = ("platform", "account", "window")


#: per-post tables are published for closed windows of at least an hour
DETAIL_FROM_MS = 3_600_000
#: the live per-post tables (API) are kept in slots of 5 minutes, not in every bucket
POST_SLOT_MS = 300_000


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
    Metric("post_engagement_rate_by_followers", "Mean over the trailing window's posts engaged with of post "
           "engagements / latest follower count (ratio; Rival IQ's per-post benchmark).",
           m.post_engagement_rate_by_followers),
)
#: rows of the per-post table in one ``posts`` result (more posts: more pages)
POSTS_PER_RESULT = 500
#: what a result of a metric carries besides its value
EXTRAS: dict[str, Callable[[windows.Agg, int | None], dict[str, Any]]] = {
    "engagements": lambda agg, followers: {"by_kind": dict(sorted(agg["kinds"].items()))},
    "engagement_rate_by_followers": lambda agg, followers: {"followers": followers},
    "post_engagement_rate_by_followers": lambda agg, followers: {
        "followers": followers, "posts_counted": len(agg["posts"])},
}
FOLLOWERS = Gauge("socialpulse_followers", "Latest follower count snapshot.", ("platform", "account"))
CTR_BY_TYPE = Gauge("socialpulse_click_through_rate_by_type",
                    "Clicks / impressions of one type (organic, paid) in the trailing window (ratio).", (*_W, "type"))


class State(TypedDict):
    """A key's engagement slot (its changelog JSON has the same keys)."""

    win: Windowed  # aggregates of ``engagement.metrics`` (eng, imp, clk, kinds, posts, f0, f1)
    followers: list[int] | None  # the latest follower snapshot ever seen: [ts, count]
    pb: NotRequired[dict[int, windows.Agg]]  # per-post detail of the trailing windows, per slot (POST_SLOT_MS)


class Engagement:
    name = "engagement"
    # leads: routed to the account stage by the funnel family; credits: forwarded by ``Shopper``
    topics = frozenset({"likes", "impressions", "audience", "clicks", "leads", "credits"})
    routes = tuple(Route(topic, of_account) for topic in ("audience", "clicks", "impressions", "likes"))
    counters: tuple[Gauge, ...] = ()
    gauges: tuple[Gauge, ...] = (*(Gauge(f"socialpulse_{x.name}", x.help, _W) for x in METRICS), FOLLOWERS, CTR_BY_TYPE)

    merge = staticmethod(m.merge)

    def __init__(self, spec: WindowSpec, top_n: int = 10) -> None:
        self.spec = spec
        self.top_n = top_n
        #: closed windows shorter than this keep no per-post detail and publish no per-post
        #: table: an hour, or the longest closed window when all are shorter (a per-post table
        #: per minute is bytes in every changelog write for little use)
        long = [size for size in spec.closed_ms if size >= DETAIL_FROM_MS]
        self.detail_from_ms = min(long) if long else max(spec.closed_ms)
        #: the trailing buckets keep no per-post detail either: the API's per-post tables come
        #: from slots this long (the trailing window rounded out to whole slots)
        self.slot_ms = max(spec.bucket_ms, min(POST_SLOT_MS, min(spec.trailing_ms)))

    @classmethod
    def from_settings(cls, settings: Any, spec: WindowSpec) -> Engagement:
        return cls(spec, settings.top_posts)

    def constants(self) -> Iterable[tuple[Gauge, float]]:
        return ()

    # -- state -------------------------------------------------------------
    def new_state(self) -> State:
        return {"win": windows.new_windowed(), "followers": None}

    def decode_state(self, raw: dict[str, Any]) -> State:
        state: State = {"win": windows.decode_windowed(raw["win"]), "followers": raw.get("followers")}
        if raw.get("pb"):
            state["pb"] = {int(slot): detail for slot, detail in raw["pb"].items()}
        return state

    def is_empty(self, state: State) -> bool:
        return windows.is_empty(state["win"]) and not state.get("pb")

    def windowed(self, state: State) -> Windowed:
        return state["win"]  # type: ignore[no-any-return]

    # -- events ------------------------------------------------------------
    def apply(self, key: str, state: State, events: list[Event], watermark: int) -> list[Output]:
        """Pre-aggregate the batch per bucket, then fold each bucket in once."""
        spec = self.spec
        parts: dict[int, windows.Agg] = {}
        for event in events:
            if isinstance(event, Lead | Credit) and event.post_id is None:
                continue  # counts for no post (and must not open buckets, e.g. for the ``direct`` channel)
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
            slim = m.slim(agg)
            windows.add(state["win"], b, agg, spec, m.merge, watermark, slim, self.detail_from_ms)
            if len(slim) != len(agg) and b > watermark - spec.keep_buckets_ms - self.slot_ms:
                slots = state.setdefault("pb", {})
                slot = windows.bucket_start(b, self.slot_ms)
                detail = m.empty() | {k: agg[k] for k in m.DETAIL if k in agg}
                if slot in slots:
                    m.merge(slots[slot], detail)
                else:
                    slots[slot] = detail
        return []

    def close(self, key: str, state: State, watermark: int) -> tuple[list[Output], bool]:
        changed = windows.prune(state["win"], watermark, self.spec)
        slots = state.get("pb")
        if slots:
            low = watermark - self.spec.keep_buckets_ms - self.slot_ms
            for slot in [s for s in slots if s <= low]:
                del slots[slot]
                changed = True
            if not slots:
                del state["pb"]
        return [], changed

    def _detailed(self, state: State, watermark: int, size: int) -> windows.Agg:
        """The trailing window with the per-post detail of the slots it reaches (whole slots)."""
        agg = self._trailing(state, watermark, size)
        for slot, detail in state.get("pb", {}).items():
            if watermark - size < slot + self.slot_ms:  # (a slot ahead of the watermark too: its events are in)
                m.merge(agg, detail)
        return agg

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
        # (metric, value, fields, key suffix): the per-post and per-type results
        keyed: list[tuple[str, float | None, dict[str, Any], tuple[str, ...]]] = []
        for kind, ctr in m.click_through_rate_by_type(agg).items():
            keyed.append(("click_through_rate_by_type", ctr, {"type": kind}, (kind,)))
        table = m.post_table(agg, followers) if cw.size >= self.detail_from_ms else []
        pages = -(-len(table) // POSTS_PER_RESULT)
        for page in range(pages):
            rows = table[page * POSTS_PER_RESULT:(page + 1) * POSTS_PER_RESULT]
            keyed.append(("posts", len(table), {"posts": rows, "page": page, "pages": pages, "followers": followers},
                          (str(page),)))
        for cur, top_rev in (m.top_posts_by_revenue(agg, self.top_n) if table else {}).items():
            keyed.append(("top_posts_by_revenue", len(top_rev), {"currency": cur, "top_posts_by_revenue": top_rev}, (cur,)))
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
                key=result_key(metric, platform, account, cw.label, start, *suffix),
                revision=revision,
                **extra,
            )
            for metric, value, extra, suffix in [(a, b, c, ()) for a, b, c in values] + keyed
            if value is not None  # a ratio with a zero denominator is not a value
        ]

    # -- reads -------------------------------------------------------------
    def _trailing(self, state: State, watermark: int, size: int) -> windows.Agg:
        return windows.trailing(state["win"], watermark, size, m.merge) or m.empty()

    def samples(self, key: str, state: State, watermark: int) -> Iterable[Sample]:
        platform, account = split_account_key(key)
        if platform not in PLATFORMS:
            return  # the shop's and the direct channel's keys (``all|all``, ``direct|direct``): no posts
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
            for kind, ctr in m.click_through_rate_by_type(agg).items():
                if ctr is not None:
                    yield CTR_BY_TYPE.name, (*lv, kind), ctr

    def view(self, key: str, state: State, watermark: int) -> dict[str, Any]:
        followers = state["followers"][1] if state["followers"] else None
        out: dict[str, Any] = {"followers": followers, "windows": {}}
        for size in self.spec.trailing_ms:
            agg = self._detailed(state, watermark, size)
            view: dict[str, Any] = {x.name: x.value(agg, followers) for x in METRICS}
            view["by_kind"] = dict(sorted(agg["kinds"].items()))
            view["top_posts"] = m.top_posts(agg, self.top_n)
            view["click_through_rate_by_type"] = m.click_through_rate_by_type(agg)
            view["posts"] = m.post_table(agg, followers)
            view["top_posts_by_revenue"] = m.top_posts_by_revenue(agg, self.top_n)
            out["windows"][self.spec.label(size)] = view
        return out
