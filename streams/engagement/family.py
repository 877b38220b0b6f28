"""Engagement family: likes, impressions, audience and clicks per platform account, and
per post the engagements, impressions, clicks, leads and credited revenue.

State per key (``platform|account``): the windowed aggregates of
``engagement.metrics``, the recent follower snapshots ordered by event time and the closed
windows it published that can still be corrected (``engagement.followers``).

Followers are a function of the snapshots by ``ts``, whatever order they arrive in: a closed
window's follower count (``followers``, the denominators of the by-followers rates, the
per-post table's ``followers``) is the last snapshot before its end (``ts < window_end``),
never a later one; the gauges and the API take the last snapshot at or before the watermark.
A snapshot that arrives late changes the count of the published windows after it that have
none of their own: they are published again, next revision. Follower growth is the window's
latest minus its first snapshot (two snapshots of one ``ts``: ordered by count).

Its events on the ``account`` stream: ``likes``, ``impressions``, ``audience``, ``clicks``
(its own primary routes), ``leads`` (routed here by the funnel family) and ``credits``
(each touch's share of an order, forwarded by the shopper stage): only leads and credits
that name a post count, and only per post.

Per post (results topic and API only, never Prometheus labels). Closed-window results, for
closed windows of an hour or more (the longest closed window when all are shorter: shorter
windows keep no per-post detail, which would be bytes in every changelog write):

- ``metric="posts"``: ``value`` = posts seen in the window (any engagement, impression,
  click, lead or credited revenue not netting to zero); ``posts`` = the per-post table, one row per post sorted
  by post id: ``post_id``, ``engagements``, ``impressions``, ``engagement_rate`` (eng ÷
  imp), ``engagement_rate_by_followers`` (eng ÷ the account's latest follower count, also
  in ``followers``), ``clicks``, ``click_through_rate`` (clicks ÷ imp), ``leads``,
  ``revenue`` ({currency: last-touch credited revenue as Decimal text; negative credits of
  cancelled or refunded orders included}). Ratios are null where the denominator is 0.
  A busy window's table is split in pages of at most ``POSTS_PER_RESULT`` rows and
  ``ROWS_MAX`` (48 KiB) of rows' JSON, so no record passes the bound on every record (64 KiB,
  ``RECORD_MAX``): ``page`` (0-based) and ``pages``; key ``posts|platform|account|window|
  window_start|<page>``. Pages are filled in post-id order, each as full as it can be, and
  late data only adds posts or grows their numbers, so a revision has at least as many
  pages as the one it replaces and every key is upserted.
- ``metric="top_posts"``: ``value`` = posts listed, ``top_posts`` = up to ``TOP_POSTS``
  [{post_id, engagements}], most first.
- ``metric="top_posts_by_revenue"``, one per currency: ``value`` = posts listed,
  ``top_posts_by_revenue`` = up to ``TOP_POSTS`` [{post_id, revenue}] with positive
  revenue, most first; key ``...|<currency>``. Both lists stop early where the next post
  would take them past ``ROWS_MAX`` of JSON (only long post ids and a ``TOP_POSTS`` in the
  hundreds get there).
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
from math import gcd
from typing import Any, NotRequired, TypedDict

import orjson

from schemas.events import PLATFORMS, Audience, Credit, Event, Lead, of_account, split_account_key
from schemas.results import Result, result_key

from .. import windows
from ..family import RECORD_MAX, Gauge, Output, Route, Sample
from ..windows import Windowed, WindowSpec, iso
from . import followers as fl
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
    (``socialpulse_<name>``), the samples, the API view and the results all come from it.
    ``additive``: a count or sum (``streams.family.Gauge``); ``activity``: counts events."""

    name: str
    help: str
    value: Callable[[windows.Agg, int | None], float | int | None]
    additive: bool = True
    activity: bool = False

    @property
    def gauge(self) -> Gauge:
        return Gauge(f"socialpulse_{self.name}", self.help, _W, additive=self.additive, activity=self.activity)


METRICS: tuple[Metric, ...] = (
    Metric("engagements", "Interactions (likes, comments, shares, saves, reactions) in the trailing window.",
           lambda agg, followers: agg["eng"], activity=True),
    Metric("impressions", "Impressions in the trailing window.", lambda agg, followers: agg["imp"]),
    Metric("clicks", "Clicks in the trailing window.", lambda agg, followers: agg["clk"], activity=True),
    Metric("engagement_rate", "Engagements / impressions in the trailing window (ratio).",
           lambda agg, followers: m.engagement_rate(agg), additive=False),
    Metric("engagement_rate_by_followers", "Engagements in the trailing window / latest follower count (ratio).",
           m.engagement_rate_by_followers, additive=False),
    Metric("click_through_rate", "Clicks / impressions in the trailing window (ratio).",
           lambda agg, followers: m.click_through_rate(agg), additive=False),
    Metric("follower_growth", "Latest minus first follower snapshot in the trailing window.",
           lambda agg, followers: m.follower_growth(agg)),
    Metric("post_engagement_rate_by_followers", "Mean over the trailing window's posts engaged with of post "
           "engagements / latest follower count (ratio; Rival IQ's per-post benchmark).",
           m.post_engagement_rate_by_followers, additive=False),
)
#: rows of the per-post table in one ``posts`` result (more posts: more pages)
POSTS_PER_RESULT = 500
#: bytes of JSON of the rows of one ``posts`` result, or of a top-posts list, at most: with the
#: result's other fields and its key, a record stays within ``RECORD_MAX`` (64 KiB)
ROWS_MAX = RECORD_MAX - 16 * 1024


def paged(rows: list[dict[str, Any]], most: int | None = None, limit: int = ROWS_MAX) -> list[list[dict[str, Any]]]:
    """Rows in pages of at most ``most`` (``POSTS_PER_RESULT``) rows and ``limit`` bytes of JSON,
    in order, each page as full as it can be (so more rows, or larger ones, never make fewer pages)."""
    most = POSTS_PER_RESULT if most is None else most
    pages: list[list[dict[str, Any]]] = []
    size = 0
    for row in rows:
        n = len(orjson.dumps(row)) + 1
        if not pages or len(pages[-1]) >= most or (pages[-1] and size + n > limit):
            pages.append([])
            size = 0
        pages[-1].append(row)
        size += n
    return pages


def fitting(entries: list[dict[str, Any]], limit: int = ROWS_MAX) -> list[dict[str, Any]]:
    """The first entries of a ranked list whose JSON fits in ``limit`` bytes."""
    size = 0
    for i, entry in enumerate(entries):
        size += len(orjson.dumps(entry)) + 1
        if size > limit:
            return entries[:i]
    return entries
#: what a result of a metric carries besides its value
EXTRAS: dict[str, Callable[[windows.Agg, int | None], dict[str, Any]]] = {
    "engagements": lambda agg, followers: {"by_kind": dict(sorted(agg["kinds"].items()))},
    "engagement_rate_by_followers": lambda agg, followers: {"followers": followers},
    "post_engagement_rate_by_followers": lambda agg, followers: {
        "followers": followers, "posts_counted": len(agg["posts"])},
}
FOLLOWERS = Gauge("socialpulse_followers", "Latest follower count snapshot.", ("platform", "account"))
CTR_BY_TYPE = Gauge("socialpulse_click_through_rate_by_type",
                    "Clicks / impressions of one type (organic, paid) in the trailing window (ratio).", (*_W, "type"),
                    additive=False)


class State(TypedDict):
    """A key's engagement slot (its changelog JSON has the same keys)."""

    win: Windowed  # aggregates of ``engagement.metrics`` (eng, imp, clk, kinds, posts, f0, f1)
    fh: list[list[int]]  # recent follower snapshots [[ts, count], ...] by ts (``engagement.followers``)
    pub: NotRequired[dict[int, fl.Runs]]  # per closed size, the published windows still correctable
    pb: NotRequired[dict[int, windows.Agg]]  # per-post detail of the trailing windows, per slot (POST_SLOT_MS)


class Engagement:
    name = "engagement"
    # leads: routed to the account stage by the funnel family; credits: forwarded by ``Shopper``
    topics = frozenset({"likes", "impressions", "audience", "clicks", "leads", "credits"})
    routes = tuple(Route(topic, of_account) for topic in ("audience", "clicks", "impressions", "likes"))
    counters: tuple[Gauge, ...] = ()
    gauges: tuple[Gauge, ...] = (*(x.gauge for x in METRICS), FOLLOWERS, CTR_BY_TYPE)

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
        #: every window end is a multiple of this: of the follower snapshots the watermark has
        #: passed, one per span this long is enough (``followers.compact``)
        self.grain = gcd(*spec.closed_ms)

    @classmethod
    def from_settings(cls, settings: Any, spec: WindowSpec) -> Engagement:
        return cls(spec, settings.top_posts)

    def constants(self) -> Iterable[tuple[Gauge, float]]:
        return ()

    # -- state -------------------------------------------------------------
    def new_state(self) -> State:
        return {"win": windows.new_windowed(), "fh": []}

    def decode_state(self, raw: dict[str, Any]) -> State:
        history = raw.get("fh")
        if history is None:  # written before the history: the latest snapshot read, a snapshot all the same
            history = [raw["followers"]] if raw.get("followers") else []
        state: State = {"win": windows.decode_windowed(raw["win"]), "fh": history}
        if raw.get("pb"):
            state["pb"] = {int(slot): detail for slot, detail in raw["pb"].items()}
        if raw.get("pub"):
            state["pub"] = {int(size): runs for size, runs in raw["pub"].items()}
        return state

    def is_empty(self, state: State) -> bool:
        # a key with a follower snapshot stays: the last one is the count of any window to come
        return windows.is_empty(state["win"]) and not state.get("pb") and not state.get("pub") and not state["fh"]

    def windowed(self, state: State) -> Windowed:
        return state["win"]  # type: ignore[no-any-return]

    # -- events ------------------------------------------------------------
    def apply(self, key: str, state: State, events: list[Event], watermark: int) -> list[Output]:
        """Pre-aggregate the batch per bucket, then fold each bucket in once."""
        spec = self.spec
        parts: dict[int, windows.Agg] = {}
        snapshots: list[tuple[int, int]] = []
        for event in events:
            if isinstance(event, Lead | Credit) and event.post_id is None:
                continue  # counts for no post (and must not open buckets, e.g. for the ``direct`` channel)
            b = windows.bucket_start(event.ts, spec.bucket_ms)
            agg = parts.get(b)
            if agg is None:
                agg = parts[b] = m.empty()
            m.fold(agg, event)
            if isinstance(event, Audience):
                snapshots.append((event.ts, event.followers))
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
        self._trim(state, watermark)
        if snapshots:
            self._take_snapshots(state, snapshots)
        self._note_published(state, watermark)
        return []

    def _take_snapshots(self, state: State, snapshots: list[tuple[int, int]]) -> None:
        """Add follower snapshots to the history; the published windows whose count they
        change (after them, none of their own) get an empty late part, so the stage
        publishes them again, next revision (``windows.take_late``). The windows they fall in
        get their own late part from ``windows.add``."""
        history = state["fh"]
        first = min(ts for ts, _ in snapshots)
        published = state.get("pub", {})
        was = {(size, start): _count(fl.before(history, start + size))
               for size, runs in published.items() for start in fl.starts(runs, size, first)}
        changed = False
        for ts, count in snapshots:
            changed = fl.insert(history, ts, count) or changed
        if not changed or not was:
            return
        for (size, start), before in was.items():
            if _count(fl.before(history, start + size)) != before:
                late = state["win"].setdefault("late", {})
                late.setdefault(size, {}).setdefault(start, m.empty())

    def _trim(self, state: State, watermark: int) -> bool:
        """Forget the snapshots and published windows nothing can reach any more."""
        low = watermark - self.spec.lateness_ms
        history = state["fh"]
        changed = fl.prune(history, low)
        changed = fl.compact(history, watermark, self.grain) or changed
        published = state.get("pub")
        if published:
            for size in list(published):
                changed = fl.drop_before(published[size], size, low) or changed
                if not published[size]:
                    del published[size]
            if not published:
                del state["pub"]
        return changed

    def _note_published(self, state: State, watermark: int) -> bool:
        """Note the windows the stage publishes at this watermark, right after ``apply`` or
        ``close``: the open windows it closes and the late parts it publishes (a correction,
        or the first publication of a window that had nothing of this key), as long as they
        can still be corrected. True if any was new."""
        win, low, changed = state["win"], watermark - self.spec.lateness_ms, False
        due = [(size, start) for size, per_size in win["w"].items() for start in per_size
               if start + size + self.spec.grace_ms <= watermark]
        due += [(size, start) for size, per_size in win.get("late", {}).items() for start in per_size]
        for size, start in due:
            if start + size > low:
                changed = fl.note(state.setdefault("pub", {}).setdefault(size, []), start, size) or changed
        return changed

    def _followers(self, state: State, watermark: int) -> int | None:
        """The live follower count: the last snapshot at or before the watermark."""
        return _count(fl.at_or_before(state["fh"], watermark))

    def close(self, key: str, state: State, watermark: int) -> tuple[list[Output], bool]:
        changed = windows.prune(state["win"], watermark, self.spec)
        changed = self._trim(state, watermark) or changed
        changed = self._note_published(state, watermark) or changed
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
        agg = cw.agg
        if m.is_void(agg):  # only credits that netted to zero (or leads and credits a short window keeps none of)
            return []
        platform, account = split_account_key(key)
        start, end = iso(cw.start), iso(cw.end)
        # the last snapshot before the window's end: its own latest, or the history's
        # (a restored state's history may lack the window's own)
        own, known = agg["f1"], fl.before(state["fh"], cw.end)
        followers = _count(max(own, known) if own is not None and known is not None else own or known)
        values: list[tuple[str, float | None, dict[str, Any]]] = [
            (x.name, x.value(agg, followers), EXTRAS[x.name](agg, followers) if x.name in EXTRAS else {})
            for x in METRICS
        ]
        if followers is not None:
            values.append(("followers", followers, {}))
        if agg["posts"]:
            top = fitting(m.top_posts(agg, self.top_n))
            values.append(("top_posts", len(top), {"top_posts": top}))
        # (metric, value, fields, key suffix): the per-post and per-type results
        keyed: list[tuple[str, float | None, dict[str, Any], tuple[str, ...]]] = []
        for kind, ctr in m.click_through_rate_by_type(agg).items():
            keyed.append(("click_through_rate_by_type", ctr, {"type": kind}, (kind,)))
        table = m.post_table(agg, followers) if cw.size >= self.detail_from_ms else []
        chunks = paged(table)
        pages = len(chunks)
        for page, rows in enumerate(chunks):
            keyed.append(("posts", len(table), {"posts": rows, "page": page, "pages": pages, "followers": followers},
                          (str(page),)))
        for cur, top_rev in (m.top_posts_by_revenue(agg, self.top_n) if table else {}).items():
            top_rev = fitting(top_rev)
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
        followers = self._followers(state, watermark)
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
        followers = self._followers(state, watermark)
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


def _count(snapshot: list[int] | None) -> int | None:
    return snapshot[1] if snapshot is not None else None
