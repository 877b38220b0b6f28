"""Hypothesis strategies: realistic multisets of input events over two hours of event time,
per family, and arrival orders of them (``Schedule``).

Event times start at ``harness.T0`` (Monday 2025-01-06 23:00 UTC: 18:00 in New York, where
instagram|acme's business hours close at 19:00; the UTC day ends an hour later). Every event
gets a distinct ``ts`` (its offset in seconds, plus its index in milliseconds): with ties,
"ordered by event time" would not say which came first.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from .harness import INPUT_PARTITIONS, T0, Ev, Schedule

__all__ = [
    "engagement_events", "replies_events", "conversion_events", "funnel_events", "all_events", "sellers_events",
    "scenarios",
]

SPAN_S = 2 * 3600
#: (platform, account): two platforms; instagram|acme has business hours and policies, instagram|beta none
ACCOUNTS = (("instagram", "acme"), ("facebook", "acme"), ("instagram", "beta"))
POSTS = ("p1", "p2", "p3")
AGENTS = ("ana", "ben", "cy")
CAMPAIGNS = ("c1", "c2")

Draft = tuple[str, int, dict[str, Any]]  # topic, offset in seconds from T0, fields

offsets = st.integers(0, SPAN_S - 1)
accounts = st.sampled_from(ACCOUNTS)
#: gaps between the messages of a conversation (seconds): around the SLA targets (10 m, 15 m, 30 m) and anything
gaps = st.one_of(st.sampled_from([20, 290, 540, 610, 840, 960, 1790, 1810, 3000]), st.integers(1, 3600))


def finish(drafts: list[Draft]) -> list[Ev]:
    return [Ev(topic, f"e{i}", T0 + min(off, SPAN_S - 1) * 1000 + i, {k: v for k, v in fields.items() if v is not None})
            for i, (topic, off, fields) in enumerate(drafts)]


# -- engagement -------------------------------------------------------------------------
@st.composite
def like(draw: Any) -> Draft:
    platform, account = draw(accounts)
    return ("likes", draw(offsets), {"platform": platform, "account_id": account, "post_id": draw(st.sampled_from(POSTS)),
                                     "actor_id": draw(st.sampled_from(("f1", "f2", "f3"))),
                                     "kind": draw(st.sampled_from(("like", "comment", "share", "save", "reaction")))})


@st.composite
def impression(draw: Any) -> Draft:
    platform, account = draw(accounts)
    return ("impressions", draw(offsets), {"platform": platform, "account_id": account,
                                           "post_id": draw(st.sampled_from(POSTS)), "count": draw(st.integers(1, 500)),
                                           "paid": draw(st.booleans())})


@st.composite
def audience(draw: Any) -> Draft:
    platform, account = draw(accounts)
    return ("audience", draw(offsets), {"platform": platform, "account_id": account,
                                        "followers": draw(st.integers(900, 1100))})


@st.composite
def click(draw: Any, actor: str | None = None, click_id: str | None = None) -> Draft:
    platform, account = draw(accounts)
    return ("clicks", draw(offsets), {
        "platform": platform, "account_id": account,
        "actor_id": actor or draw(st.sampled_from(("v1", "v2"))),
        "post_id": draw(st.one_of(st.none(), st.sampled_from(POSTS))),
        "campaign_id": draw(st.one_of(st.none(), st.sampled_from(CAMPAIGNS))),
        "click_id": click_id, "paid": draw(st.booleans()),
    })


@st.composite
def engagement_drafts(draw: Any, max_size: int = 30) -> list[Draft]:
    return draw(st.lists(st.one_of(like(), impression(), audience(), click()), min_size=1, max_size=max_size))


# -- replies ----------------------------------------------------------------------------
#: conversation shapes: two spells; outreach answered by the prospect (and followed up); a bot
#: and a hand-off to a human; an automated acknowledgement; two customer messages in one wait
TEMPLATES = (
    ("in", "agent", "in", "agent"), ("agent", "in", "agent"), ("in", "bot", "in", "agent"),
    ("in", "ack", "agent"), ("in", "in", "agent"), ("in",), ("agent", "in"),
)


@st.composite
def conversation(draw: Any, n: int) -> list[Draft]:
    platform, account = draw(accounts)
    channel = draw(st.sampled_from(("dm", "dm", "comment")))
    steps = draw(st.one_of(st.sampled_from(TEMPLATES),
                           st.lists(st.sampled_from(("in", "agent", "ack", "bot")), min_size=1, max_size=5)))
    t = draw(st.integers(0, SPAN_S - 1))
    out: list[Draft] = []
    for j, step in enumerate(steps):
        if j:
            t += draw(gaps)
            if t >= SPAN_S:
                break
        base = {"platform": platform, "account_id": account, "conversation_id": f"c{n}", "channel": channel}
        if step == "in":
            fields = base | {"direction": "inbound", "author_id": f"cust{n}"}
        elif step == "agent":
            agent = draw(st.sampled_from(AGENTS))
            fields = base | {"direction": "outbound", "author_id": agent, "agent_id": agent}
        elif step == "bot":
            fields = base | {"direction": "outbound", "author_id": "bot", "bot": True}
        else:
            fields = base | {"direction": "outbound", "author_id": "autoack", "automated": True}
        out.append(("messages", t, fields))
    return out


@st.composite
def replies_drafts(draw: Any, max_conversations: int = 6, prefix: str = "") -> list[Draft]:
    k = draw(st.integers(1, max_conversations))
    out: list[Draft] = []
    for n in range(k):
        for topic, off, fields in draw(conversation(n)):
            out.append((topic, off, fields | {"conversation_id": f"{prefix}c{n}"}))
    return out


# -- shoppers (conversion and funnel) ---------------------------------------------------
@st.composite
def shopper(draw: Any, actor: str, funnel: bool) -> list[Draft]:
    out: list[Draft] = []
    click_ids = [f"{actor}k{k}" for k in range(draw(st.integers(0, 3)))]
    for cid in click_ids:
        out.append(draw(click(actor=actor, click_id=cid)))
    for k in range(draw(st.integers(0, 2))):
        oid = f"{actor}o{k}"
        off = draw(offsets)
        pinned = draw(st.one_of(st.none(), st.sampled_from(click_ids))) if click_ids else None
        fields = {"order_id": oid, "actor_id": actor, "amount": draw(st.sampled_from(["10.00", "25.50", "99.99"])),
                  "currency": draw(st.sampled_from(["USD", "EUR"])), "status": "placed", "click_id": pinned}
        out.append(("orders", off, fields))
        after = draw(st.sampled_from([None, "cancelled", "refunded"]))
        if after:  # stamped after its order (it may arrive before it)
            out.append(("orders", off + draw(gaps), fields | {"status": after, "click_id": None}))
    for _ in range(draw(st.integers(0, 2))):
        source = draw(st.sampled_from(["instagram", "facebook", "direct", "search"]))
        fields = {"actor_id": actor, "source": source, "duration_s": draw(st.sampled_from([15.0, 30.0, 180.0]))}
        if source in ("instagram", "facebook"):
            fields |= {"platform": source, "account_id": "acme", "campaign_id": draw(st.one_of(st.none(), st.sampled_from(CAMPAIGNS)))}
        out.append(("sessions", draw(offsets), fields))
    if funnel:
        for _ in range(draw(st.integers(0, 2))):
            platform, account = draw(accounts)
            out.append(("leads", draw(offsets), {
                "platform": platform, "account_id": account, "actor_id": actor,
                "kind": draw(st.sampled_from(["signup", "form", "dm"])),
                "campaign_id": draw(st.one_of(st.none(), st.sampled_from(CAMPAIGNS))),
                "click_id": draw(st.one_of(st.none(), st.sampled_from(click_ids))) if click_ids else None,
            }))
        for k in range(draw(st.integers(0, 2))):
            off = draw(offsets)
            chk = {"checkout_id": f"{actor}x{k}", "actor_id": actor, "amount": "25.50", "currency": "USD"}
            out.append(("checkouts", off, chk | {"status": "started"}))
            if draw(st.booleans()):  # completed (maybe after the 1 h timeout), maybe read before its start
                out.append(("checkouts", off + draw(st.sampled_from([60, 1800, 3500, 3700])), chk | {"status": "completed"}))
    return out


@st.composite
def spend(draw: Any) -> Draft:
    platform, account = draw(accounts)
    return ("spend", draw(offsets), {"platform": platform, "account_id": account,
                                     "campaign_id": draw(st.sampled_from(CAMPAIGNS)),
                                     "amount": draw(st.sampled_from(["40.00", "12.50"])), "currency": "USD"})


@st.composite
def shoppers_drafts(draw: Any, actors: tuple[str, ...], funnel: bool) -> list[Draft]:
    n = draw(st.integers(1, len(actors)))
    out: list[Draft] = []
    for actor in actors[:n]:
        out.extend(draw(shopper(actor, funnel)))
    out.extend(draw(st.lists(spend(), max_size=2)))
    return out


def _events(drafts: st.SearchStrategy[list[Draft]]) -> st.SearchStrategy[list[Ev]]:
    return drafts.filter(bool).map(finish)


engagement_events = _events(engagement_drafts())
replies_events = _events(replies_drafts())
conversion_events = _events(shoppers_drafts(("u1", "u2", "u3", "u4"), funnel=False))
funnel_events = _events(shoppers_drafts(("u1", "u2", "u3"), funnel=True))


@st.composite
def _all(draw: Any) -> list[Draft]:
    return (draw(engagement_drafts(max_size=10)) + draw(replies_drafts(max_conversations=3))
            + draw(shoppers_drafts(("u1", "u2"), funnel=False)) + draw(shoppers_drafts(("u3", "u4"), funnel=True)))


all_events = _events(_all())


# -- sellers ------------------------------------------------------------------------------
SELLERS = ("ana", "ben")


@st.composite
def sellers_drafts(draw: Any) -> list[Draft]:
    """Sellers' posts (their engagement before or after them), connections, referred leads and orders
    (some refunded, the lead maybe after the order), DM leads of conversation customers, conversations."""
    out: list[Draft] = []
    posts = []
    for n in range(draw(st.integers(1, 4))):
        platform, account = draw(accounts)
        kind = draw(st.sampled_from(["original", "share", "comment"]))
        post, off = f"sp{n}", draw(offsets)
        posts.append((platform, account, post))
        out.append(("posts", off, {"platform": platform, "account_id": account, "post_id": post,
                                   "author_id": draw(st.sampled_from(SELLERS)), "kind": kind,
                                   "target_post_id": "other" if kind != "original" else None}))
        for _ in range(draw(st.integers(0, 3))):  # stamped after the post, read in any order
            out.append(("likes", off + draw(st.integers(0, 600)), {
                "platform": platform, "account_id": account, "post_id": post,
                "actor_id": draw(st.sampled_from(("f1", "f2", "f3"))), "kind": "like"}))
    for _ in range(draw(st.integers(0, 4))):
        platform, account = draw(accounts)
        fields = {"platform": platform, "account_id": account, "author_id": draw(st.sampled_from(SELLERS)),
                  "actor_id": draw(st.sampled_from(("v1", "v2"))), "decision_maker": draw(st.booleans())}
        out.append(("connections", draw(offsets), fields | {"status": draw(st.sampled_from(["requested", "accepted", "removed"]))}))
    for k, actor in enumerate(("r1", "r2")[:draw(st.integers(0, 2))]):
        platform, account = draw(accounts)
        referrer = draw(st.sampled_from(SELLERS))
        out.append(("leads", draw(offsets), {"platform": platform, "account_id": account, "actor_id": actor,
                                             "kind": "signup", "referrer_id": referrer}))
        off = draw(offsets)
        order = {"order_id": f"ro{k}", "actor_id": actor, "amount": "25.50", "currency": "USD", "referrer_id": referrer}
        out.append(("orders", off, order))
        if draw(st.booleans()):
            out.append(("orders", off + draw(gaps), order | {"status": "refunded"}))
    replies = draw(replies_drafts(max_conversations=3, prefix="s"))
    out.extend(replies)
    for _topic, off, fields in replies:
        if fields["direction"] == "inbound" and draw(st.booleans()):  # a DM lead of the conversation's customer
            out.append(("leads", off + draw(st.integers(0, 900)), {
                "platform": fields["platform"], "account_id": fields["account_id"], "actor_id": fields["author_id"],
                "kind": "dm"}))
            if draw(st.booleans()):  # and an order of theirs: a sale of the conversation
                order = {"order_id": "dm-order", "actor_id": fields["author_id"], "amount": "40.00", "currency": "USD"}
                out.append(("orders", off + draw(st.integers(0, 1800)), order))
            break
    return out


sellers_events = _events(sellers_drafts())


# -- arrival orders -----------------------------------------------------------------------
def reference(events: list[Ev], redeliver: tuple[int, ...] = ()) -> Schedule:
    """Event-time order, one event per batch, a tick after each: a perfect stream (a record
    Kafka re-delivers comes again at once)."""
    order = sorted(range(len(events)), key=lambda i: events[i].ts)
    steps: list[tuple[Any, ...]] = []
    for i in order:
        steps += [("batch", (i,)), ("tick", False, 0)]
        if i in redeliver:
            steps += [("batch", (i,)), ("tick", False, 0)]
    return Schedule("reference", False, tuple(0 for _ in events), tuple(steps))


@st.composite
def schedule(draw: Any, events: list[Ev], kind: str, redeliver: tuple[int, ...]) -> Schedule:
    """``kind``: ``time`` (event-time order), ``shuffle`` (any order: two hours are well within
    the allowed lateness of a day) or ``blocks`` (shuffled within 10-minute blocks of event time)."""
    n = len(events)
    by_ts = sorted(range(n), key=lambda i: events[i].ts)
    if kind == "time":
        order = by_ts
    elif kind == "shuffle":
        order = list(draw(st.permutations(by_ts)))
    else:
        order = []
        block: list[int] = []
        for i in by_ts:
            if block and (events[i].ts - T0) // 600_000 != (events[block[0]].ts - T0) // 600_000:
                order += draw(st.permutations(block))
                block = []
            block.append(i)
        order += draw(st.permutations(block))
    # Kafka re-delivers some records (a crash, a rebalance): the same record again, later
    for i in redeliver:
        at = order.index(i)
        order.insert(draw(st.integers(at + 1, len(order))), i)
    partition = tuple(draw(st.lists(st.integers(0, INPUT_PARTITIONS - 1), min_size=n, max_size=n)))
    backlog = draw(st.booleans())
    steps: list[tuple[Any, ...]] = []
    batch: list[int] = []
    for i in order:
        batch.append(i)
        if draw(st.integers(0, 3)) == 0:  # the end of a fetched batch
            steps.append(("batch", tuple(batch)))
            batch = []
            for _ in range(draw(st.integers(0, 2))):  # marks and a tick, the wall clock moving on
                idle = draw(st.booleans())
                steps.append(("tick", idle, draw(st.sampled_from([0, 30, 300, 900, 1800])) if idle else 0))
    if batch:
        steps.append(("batch", tuple(batch)))
    return Schedule(kind, backlog, partition, tuple(steps))


@st.composite
def scenarios(draw: Any, events: st.SearchStrategy[list[Ev]]) -> tuple[list[Ev], list[Schedule]]:
    """A multiset of events, the reference order and three more (time, shuffle, blocks)."""
    evs = draw(events)
    redeliver = tuple(sorted(draw(st.sets(st.integers(0, len(evs) - 1), max_size=2))))
    return evs, [reference(evs, redeliver)] + [draw(schedule(evs, kind, redeliver)) for kind in ("time", "shuffle", "blocks")]
