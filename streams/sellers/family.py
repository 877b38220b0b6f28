"""Sellers family: the people who post, connect and converse for an account, each with their
posts, earned engagement, network, referrals, attributed outcomes, a selling index of four
0-25 pillars and a 1-100 influence score over a trailing window (``SELLER_WINDOW``, 28 days).

**Keyed by account.** A seller (an ``author_id`` of ``posts`` and ``connections``, an agent of
``messages``, a ``referrer_id``) belongs to an account (``platform|account_id``): the family
lives in the ``account`` stage, so every event about a seller and the posts their engagement
joins to reach one key on one worker, and their numbers are exact whatever the number of
workers. Orders carry no account: a referred order is joined to its referrer's account on the
shopper's key first (``sellers.referrals``), which forwards a ``Referral`` record here.

State per key, small and bounded (days and sellers capped, everything expires):

    {"posts": {post_id: [ts, author, kind]},        # the sellers' posts (o, s, c) in the horizon
     "pend":  {post_id: {"r": [[ts, field, n, actor or currency], ...],   # engagement etc. waiting for its post
                         "c": {"day|field": [ts, n]}}},   # beyond the bound, or without a person: counts
     "days":  {day: {author: {field: n | {currency: "amount"}}}},   # UTC day number -> per seller
     "eng":   {author: {actor: [day, ...]}},        # who engaged with the seller's posts, and when
     "conv":  {conversation_id: {"m": [[ts, code, who, event_id], ...], "s": [[day, author, field, n], ...]}},
     "dml":   {event_id: [ts, actor, author | None]},   # leads without a post, and whose conversation got them
     "cs":    {event_id: [ts, lead_id, amount, currency, orders, customers, author | None]},  # conversation sales
     "net":   {author: n},                           # network size: accepted minus removed, all time
     "pub":   {day: [revision, changed]}}            # daily results published and still correctable

**Joins by post.** A like, impression, click, lead or credit names a ``post_id``; if the post is
a seller's, it counts for that seller on the day of its own ``ts``. One that comes before its post
waits in ``pend``: everything in the state is a sum of per-event parts, so the order of arrival
never matters. It waits while its post could still be accepted: a post is stamped before its
engagement, so once an entry is older than the allowed lateness its post would be late, and the
entry goes.

**Conversations** (``messages``) are kept ordered by ``ts`` and what they contribute is computed
from the whole conversation and applied by difference (the old contribution taken back, the new
one added): a reply read before the message it answers is still its reply. The conversation's
seller is its first human outbound writer; its customer waits (spells) count for that seller,
answered or not; each human reply's latency counts for whoever replied; a conversation that a
seller opened is outreach, answered when the prospect writes within ``OUTREACH_WINDOW``.

**Leads from conversations.** A lead without a ``post_id`` counts for the seller of the shopper's
conversation: the conversation whose customer (its first inbound writer) is the lead's
``actor_id`` and who wrote in it within ``OUTREACH_WINDOW`` before the lead (the latest such),
decided again by difference when a late message changes it, until the lead is past the allowed
lateness. An order of a shopper who left a DM lead in the lookback before it is a sale of that
lead's conversation (``ConversationSale``, from ``sellers.referrals``): its new customer and
revenue count for the conversation's seller, moved with the lead if a late message changes who
that is. (A channel of its own beside the posts' last-touch credit: an order may count in both.)

**Daily results.** Each UTC day with events of the key is published per seller once the watermark
passes its end plus grace (revision 0): the day's counts and the index, pillars and influence of
the trailing window ending with that day. A late event changes its day and the index of the days
after it: those are published again with the next revision, until the allowed lateness passes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any, NotRequired, TypedDict

from schemas.events import (
    Click,
    Connection,
    ConversationSale,
    Credit,
    Event,
    Impression,
    Lead,
    Like,
    Message,
    Post,
    Referral,
    of_account,
    split_account_key,
)
from schemas.results import Result, result_key

from ..accounts import book_for
from ..family import Gauge, Output, Route, Sample
from ..windows import WindowSpec, iso
from . import index as ix

__all__ = ["Sellers", "DAY_MS", "TEAM", "trailing", "seller_inputs"]

DAY_MS = 86_400_000
#: the team's own entries of a day (a control character: no author id can be it)
TEAM = "\x00team"
#: the kind of a post, as kept: original, share, comment
_KIND = {"original": "o", "share": "s", "comment": "c"}
#: the money fields (per currency)
MONEY = ("rev", "rr", "crv")
#: most distinct engagers kept per seller (beyond it the engagers of the oldest days go first)
MAX_ENGAGERS = 5_000
#: most posts waiting for their post record, and entries per post (beyond: counted without the actor)
MAX_PENDING_POSTS = 500
MAX_PENDING_ENTRIES = 32
#: days a seller's post is kept: engagement, clicks and credits on it count that long after it
POST_DAYS = 90
#: most conversations kept per account (the least recent go; what they counted stays)
MAX_CONVERSATIONS = 2_000
#: most messages kept of one conversation
MAX_MESSAGES = 100

_L = ("platform", "account", "seller", "window")
_S = ("seller",)


def _g(name: str, help: str, labels: tuple[str, ...] = _L, additive: bool = True) -> Gauge:
    return Gauge(name, help, labels, additive=additive, detail=_S if "seller" in labels else ())


POSTS = _g("socialpulse_seller_posts", "A seller's posts in the trailing window (SELLER_WINDOW), by kind (their own: "
           "original; on others' content: a repost or a comment).", (*_L, "kind"))
ENGAGEMENTS = _g("socialpulse_seller_engagements", "Engagements on a seller's posts (likes etc. on them, joined by post), "
                 "trailing window.")
ENGAGERS = _g("socialpulse_seller_engagers", "Distinct people who engaged with a seller's posts, trailing window (not a "
              "sum: capped sellers only, none under seller=\"other\").",
              additive=False)
CONNECTIONS = _g("socialpulse_seller_connections", "A seller's connection requests sent, accepted and removed, "
                 "trailing window.", (*_L, "status"))
ACCEPTANCE = _g("socialpulse_seller_acceptance_rate", "Connections accepted / requests sent, trailing window (ratio, "
                "at most 1).", additive=False)
DECISION_MAKERS = _g("socialpulse_seller_decision_makers", "Accepted connections flagged decision makers, trailing "
                     "window.")
NETWORK = _g("socialpulse_seller_network_size", "A seller's network: connections accepted minus removed, since the "
             "seller's first event kept.", ("platform", "account", "seller"))
REFERRALS = _g("socialpulse_seller_referrals", "Leads and orders referred by a seller (referrer_id), trailing "
               "window, by kind (lead, order).", (*_L, "kind"))
REFERRAL_REVENUE = _g("socialpulse_seller_referral_revenue", "Revenue of a seller's referred orders (placed minus "
                      "cancelled and refunded), trailing window.", (*_L, "currency"))
REFERRAL_SHARE = _g("socialpulse_seller_referral_customer_share", "A seller's referred new customers / the team's "
                    "new customers (attributed plus referred), trailing window (ratio).", additive=False)
CLICKS = _g("socialpulse_seller_clicks", "Clicks on a seller's posts, trailing window.")
LEADS = _g("socialpulse_seller_leads", "Leads from a seller's posts and conversations, trailing window.")
CUSTOMERS = _g("socialpulse_seller_new_customers", "New customers attributed to a seller's posts (last touch) and "
               "conversations (a DM lead in the lookback before the first order), trailing window.")
REVENUE = _g("socialpulse_seller_attributed_revenue", "Revenue attributed to a seller's posts (last touch) and "
             "conversations (a DM lead in the lookback before the order), trailing window.", (*_L, "currency"))
INDEX = _g("socialpulse_selling_index", "A seller's selling index (0-100: four pillars of 0-25), trailing window (a "
           "score: capped sellers only, the MAX_SELLERS highest of each account).",
           additive=False)
PILLAR = _g("socialpulse_selling_index_pillar", "A pillar of a seller's selling index (0-25: brand, people, insights, "
            "relationships), trailing window (capped sellers only).", (*_L, "pillar"), additive=False)
INFLUENCE = _g("socialpulse_seller_influence", "A seller's influence score (1-100: distinct people reacting and the "
               "reach of their posts, log scale), trailing window (capped sellers only).", additive=False)
TEAM_INDEX = _g("socialpulse_team_selling_index", "The mean selling index of an account's sellers, trailing window.",
                ("platform", "account", "window"), additive=False)
TEAM_SELLERS = _g("socialpulse_team_sellers", "Sellers of an account with activity in the trailing window.",
                  ("platform", "account", "window"))
TEAM_REVENUE = _g("socialpulse_team_seller_revenue", "Revenue attributed to the sellers' posts plus their referred "
                  "revenue (the team's total), trailing window.", ("platform", "account", "window", "currency"))


class State(TypedDict):
    """A key's sellers slot (its changelog JSON has the same keys; day numbers as text there)."""

    posts: dict[str, list[Any]]
    days: dict[int, dict[str, dict[str, Any]]]
    pend: NotRequired[dict[str, dict[str, Any]]]
    eng: NotRequired[dict[str, dict[str, list[int]]]]
    conv: NotRequired[dict[str, dict[str, Any]]]
    dml: NotRequired[dict[str, list[Any]]]
    cs: NotRequired[dict[str, list[Any]]]
    net: NotRequired[dict[str, int]]
    pub: NotRequired[dict[int, list[int]]]


def _add(fields: dict[str, Any], name: str, n: Any) -> None:
    if name in MONEY:
        cur, amount = n
        money = fields.setdefault(name, {})
        total = Decimal(money.get(cur, "0")) + Decimal(amount)
        if total:
            money[cur] = str(total)
        else:
            money.pop(cur, None)
            if not money:
                del fields[name]
        return
    v = fields.get(name, 0) + n
    if v:
        fields[name] = v
    else:
        fields.pop(name, None)


def trailing(days: dict[int, dict[str, dict[str, Any]]], last_day: int, n_days: int) -> dict[str, dict[str, Any]]:
    """Per author, the sums of their fields over the ``n_days`` UTC days ending with ``last_day``."""
    out: dict[str, dict[str, Any]] = {}
    for day, by in days.items():
        if last_day - n_days < day <= last_day:
            for author, fields in by.items():
                mine = out.setdefault(author, {})
                for name, v in fields.items():
                    if name in MONEY:
                        for cur, amount in v.items():
                            _add(mine, name, (cur, amount))
                    else:
                        _add(mine, name, v)
    return out


def _money(*parts: dict[str, str]) -> dict[str, str]:
    """Amounts per currency, summed (nothing for a currency that nets to zero)."""
    out: dict[str, Decimal] = {}
    for part in parts:
        for cur, amount in part.items():
            out[cur] = out.get(cur, Decimal(0)) + Decimal(amount)
    return {cur: str(v) for cur, v in sorted(out.items()) if v}


def seller_inputs(f: dict[str, Any]) -> ix.Inputs:
    """The index's inputs from a seller's trailing sums."""
    return ix.Inputs(
        originals=f.get("po", 0), original_engagement=f.get("eo", 0), accepted=f.get("ca", 0),
        decision_makers=f.get("cd", 0), outreach_answered=f.get("oa", 0), outreach=f.get("oo", 0),
        insights=f.get("ps", 0) + f.get("pc", 0), insight_engagement=f.get("ei", 0), replies=f.get("rq", 0),
        reply_seconds=f.get("rs", 0) / 1000, spells=f.get("sp", 0), answered=f.get("sa", 0),
        repeat_customers=f.get("rp", 0))


def _conversation(messages: list[list[Any]], outreach_ms: int) -> list[list[Any]]:
    """What a conversation contributes, ``[[day, author, field, n], ...]``, from its messages
    ordered by ``(ts, event id)``: ``rq``/``rs`` a reply and its latency (ms) for whoever replied,
    ``sp``/``sa`` a customer wait and whether it was answered, for the conversation's seller,
    ``oo``/``oa`` an outreach conversation and whether the prospect answered."""
    out: dict[tuple[int, str, str], int] = {}

    def add(ts: int, author: str, name: str, n: int) -> None:
        k = (ts // DAY_MS, author, name)
        out[k] = out.get(k, 0) + n

    seller = next((m[2] for m in messages if m[1] == "o"), None)
    first = messages[0] if messages else None
    if first is not None and first[1] == "o":
        add(first[0], first[2], "oo", 1)
        if any(m[1] == "i" and m[0] <= first[0] + outreach_ms for m in messages):
            add(first[0], first[2], "oa", 1)
    waiting: int | None = None
    for ts, code, who, _eid in messages:
        if code == "i":
            if waiting is None:
                waiting = ts
                if seller is not None:
                    add(ts, seller, "sp", 1)
        elif code in ("o", "b") and waiting is not None:
            if seller is not None:
                add(waiting, seller, "sa", 1)
            if code == "o":
                add(ts, who, "rq", 1)
                add(ts, who, "rs", ts - waiting)
            waiting = None
    return [[day, author, name, n] for (day, author, name), n in sorted(out.items()) if n]


class Sellers:
    name = "sellers"
    # referrals: from the shopper stream (``sellers.referrals``); credits: from ``conversion.shopper``
    topics = frozenset({"posts", "connections", "likes", "impressions", "clicks", "leads", "messages", "credits",
                        "referrals", "conversation_sales"})
    routes = (Route("posts", of_account), Route("connections", of_account), Route("likes", of_account),
              Route("impressions", of_account), Route("clicks", of_account), Route("leads", of_account),
              Route("messages", of_account))
    counters: tuple[Gauge, ...] = ()
    gauges: tuple[Gauge, ...] = (POSTS, ENGAGEMENTS, ENGAGERS, CONNECTIONS, ACCEPTANCE, DECISION_MAKERS, NETWORK,
                                 REFERRALS, REFERRAL_REVENUE, REFERRAL_SHARE, CLICKS, LEADS, CUSTOMERS, REVENUE, INDEX,
                                 PILLAR, INFLUENCE, TEAM_INDEX, TEAM_SELLERS, TEAM_REVENUE)
    merge = None  # its own daily publication (``close``), not the shared closed windows

    def __init__(self, spec: WindowSpec, window_ms: int = 28 * DAY_MS, max_sellers: int = 10,
                 outreach_ms: int = 7 * DAY_MS, conversation_ttl_ms: int = 7 * DAY_MS,
                 targets: dict[str, Decimal] | None = None, accounts: Callable[[str], Any] | None = None,
                 lookback_ms: int = 7 * DAY_MS) -> None:
        self.spec = spec
        self.days = max(1, window_ms // DAY_MS)
        self.label = f"{self.days}d"
        self.max_sellers = max_sellers
        self.outreach_ms = outreach_ms
        self.lookback_ms = lookback_ms  # a DM lead is kept this long for the orders that may follow it
        self.conversation_ttl_ms = conversation_ttl_ms
        self.targets = targets or ix.TARGETS
        #: an account's settings (``seller_targets`` override the default targets)
        self.accounts = accounts or (lambda key: None)
        #: days a day's data is kept after it: the trailing window of a day still correctable
        self._at = 0  # the watermark of the batch being applied
        self._swept: dict[str, int] = {}  # key -> the minute of the watermark its state was last expired at
        self.keep_days = self.days + -(-max(spec.lateness_ms, spec.grace_ms) // DAY_MS) + 1

    @classmethod
    def from_settings(cls, settings: Any, spec: WindowSpec) -> Sellers:
        return cls(spec, getattr(settings, "seller_window", 28 * DAY_MS), getattr(settings, "max_sellers", 10),
                   settings.outreach_window, settings.conversation_ttl, accounts=book_for(settings).get,
                   lookback_ms=settings.attribution_lookback)

    def targets_of(self, key: str) -> Mapping[str, Decimal]:
        """The index's targets for an account: its settings' ``seller_targets`` over the defaults."""
        acct = self.accounts(key)
        mine = getattr(acct, "seller_targets", None)
        return {**self.targets, **mine} if mine else self.targets

    def constants(self) -> Iterable[tuple[Gauge, float]]:
        return ()

    # -- state -------------------------------------------------------------
    def new_state(self) -> State:
        return {"posts": {}, "days": {}}

    def decode_state(self, raw: dict[str, Any]) -> State:
        state: State = {"posts": raw.get("posts", {}),
                        "days": {int(d): by for d, by in raw.get("days", {}).items()}}
        for name in ("pend", "eng", "conv", "dml", "cs", "net"):
            if raw.get(name):
                state[name] = raw[name]  # type: ignore[literal-required]
        if raw.get("pub"):
            state["pub"] = {int(d): v for d, v in raw["pub"].items()}
        return state

    def is_empty(self, state: State) -> bool:
        return not (state["posts"] or state["days"] or state.get("pend") or state.get("conv") or state.get("pub")
                    or state.get("net") or state.get("dml") or state.get("cs"))

    def windowed(self, state: State) -> None:
        return None

    # -- events ------------------------------------------------------------
    def _bump(self, state: State, ts: int, author: str, name: str, n: Any) -> None:
        day = ts // DAY_MS
        _add(state["days"].setdefault(day, {}).setdefault(author, {}), name, n)
        by = state["days"][day]
        if not by[author]:
            del by[author]
            if not by:
                del state["days"][day]
        pub = state.setdefault("pub", {})
        for d in range(day, day + self.days):  # its day and the trailing windows it falls in
            if d in pub:
                pub[d][1] = 1
            elif d == day and (day + 1) * DAY_MS + self.spec.lateness_ms > self._at:
                pub[d] = [-1, 1]  # (a day past its lateness is not published again from scratch)
        if not pub:
            del state["pub"]

    def _on_post(self, state: State, author: str, kind: str, entry: list[Any]) -> None:
        """An entry about one of ``author``'s posts: [ts, field, n, actor or currency]."""
        ts, name, n, extra = entry
        if name == "e":
            self._bump(state, ts, author, "eo" if kind == "o" else "ei", n)
            if extra:
                days = state.setdefault("eng", {}).setdefault(author, {}).setdefault(extra, [])
                day = ts // DAY_MS
                if day not in days:
                    days.append(day)
                    days.sort()
        elif name in MONEY:
            self._bump(state, ts, author, name, (extra, n))
        else:
            self._bump(state, ts, author, name, n)

    def _joined(self, state: State, post_id: str | None, entry: list[Any]) -> None:
        if post_id is None:
            return
        post = state["posts"].get(post_id)
        if post is not None:
            self._on_post(state, post[1], post[2], entry)
            return
        pend = state.setdefault("pend", {})
        waiting = pend.get(post_id)
        if waiting is None:
            if len(pend) >= MAX_PENDING_POSTS:
                return  # (documented bound: a post this far behind its engagement is not joined)
            waiting = pend[post_id] = {"r": []}
        name = entry[1]
        if name in MONEY or (entry[3] and len(waiting["r"]) < MAX_PENDING_ENTRIES):
            waiting["r"].append(entry)
            return
        # without a person (impressions, clicks), or beyond the bound: a count per day and field
        slot = f"{entry[0] // DAY_MS}|{name}"
        counts = waiting.setdefault("c", {})
        have = counts.get(slot)
        if have is None:
            counts[slot] = [entry[0], entry[2]]
        else:
            have[0] = max(have[0], entry[0])
            have[1] += entry[2]

    def apply(self, key: str, state: State, events: list[Event], watermark: int) -> list[Output]:
        self._at = watermark
        touched: set[str] = set()
        actors: set[str] = set()  # whose leads' conversation may have changed
        for event in events:
            if isinstance(event, Like):  # (the most frequent first)
                self._joined(state, event.post_id, [event.ts, "e", 1, event.actor_id])
            elif isinstance(event, Post):
                self._post(state, event)
            elif isinstance(event, Impression):
                self._joined(state, event.post_id, [event.ts, "im", event.count, ""])
            elif isinstance(event, Click):
                self._joined(state, event.post_id, [event.ts, "clk", 1, ""])
            elif isinstance(event, Lead):
                if event.post_id is not None:
                    self._joined(state, event.post_id, [event.ts, "ld", 1, ""])
                elif event.event_id not in state.get("dml", {}):
                    state.setdefault("dml", {})[event.event_id] = [event.ts, event.actor_id, None]
                    actors.add(event.actor_id)
                if event.referrer_id is not None:
                    self._bump(state, event.ts, event.referrer_id, "lr", 1)
            elif isinstance(event, Credit):
                if event.customers:
                    self._bump(state, event.ts, TEAM, "tnc", event.customers)
                self._joined(state, event.post_id, [event.ts, "nc", event.customers, ""])
                self._joined(state, event.post_id, [event.ts, "rev", str(event.revenue.get("last_touch", "0")),
                                                    event.currency])
            elif isinstance(event, Connection):
                self._connection(state, event)
            elif isinstance(event, Referral):
                self._bump(state, event.ts, event.referrer_id, "ro", event.orders)
                self._bump(state, event.ts, event.referrer_id, "rn", event.customers)
                self._bump(state, event.ts, event.referrer_id, "rp", event.repeat)
                self._bump(state, event.ts, event.referrer_id, "rr", (event.currency, event.amount))
            elif isinstance(event, Message):
                self._message(state, event)
                touched.add(event.conversation_id)
            elif isinstance(event, ConversationSale):
                self._conversation_sale(state, event)
        for cid in touched:
            self._sync_conversation(state, cid)
            m = state.get("conv", {}).get(cid, {}).get("m", ())
            actors.update(row[2] for row in m if row[1] == "i")
        if actors and state.get("dml"):
            self._sync_leads(state, actors)
        return []

    def _lead_seller(self, state: State, actor: str, ts: int) -> str | None:
        """The seller of the conversation that brought a lead: its customer is the lead's shopper and
        wrote in it within OUTREACH_WINDOW before the lead (the latest such conversation)."""
        best: tuple[int, str] | None = None
        seller = None
        for cid, conv in state.get("conv", {}).items():
            m = conv["m"]
            first_in = next((row for row in m if row[1] == "i"), None)
            owner = next((row[2] for row in m if row[1] == "o"), None)
            if first_in is None or first_in[2] != actor or owner is None:
                continue
            wrote = [row[0] for row in m if row[1] == "i" and row[2] == actor and ts - self.outreach_ms <= row[0] <= ts]
            if wrote and (best is None or (wrote[-1], cid) > best):
                best, seller = (wrote[-1], cid), owner
        return seller

    def _sync_leads(self, state: State, actors: set[str]) -> None:
        for eid, lead in state.get("dml", {}).items():
            if lead[1] not in actors:
                continue
            want = self._lead_seller(state, lead[1], lead[0])
            if want != lead[2]:
                if lead[2] is not None:
                    self._bump(state, lead[0], lead[2], "lc", -1)
                if want is not None:
                    self._bump(state, lead[0], want, "lc", 1)
                lead[2] = want
                for sale in state.get("cs", {}).values():  # its sales follow it
                    if sale[1] == eid:
                        self._credit_sale(state, sale, want)

    def _credit_sale(self, state: State, sale: list[Any], author: str | None) -> None:
        """Move a conversation sale's part to ``author`` (None: to nobody)."""
        ts, _lead, amount, cur, orders, customers, had = sale
        if had == author:
            return
        for who, sign in ((had, -1), (author, 1)):
            if who is not None:
                self._bump(state, ts, who, "co", sign * orders)
                self._bump(state, ts, who, "cc", sign * customers)
                self._bump(state, ts, who, "crv", (cur, str(sign * Decimal(amount))))
        sale[6] = author

    def _conversation_sale(self, state: State, event: ConversationSale) -> None:
        sales = state.setdefault("cs", {})
        if event.event_id in sales:
            return
        sale = sales[event.event_id] = [event.ts, event.lead_id, str(event.amount), event.currency, event.orders,
                                        event.customers, None]
        lead = state.get("dml", {}).get(event.lead_id)
        self._credit_sale(state, sale, lead[2] if lead is not None else None)

    def _post(self, state: State, event: Post) -> None:
        if event.post_id in state["posts"]:
            return  # (the same post again under another event id: counted once)
        kind = _KIND[event.kind]
        state["posts"][event.post_id] = [event.ts, event.author_id, kind]
        self._bump(state, event.ts, event.author_id, "p" + kind, 1)
        waiting = state.get("pend", {}).pop(event.post_id, None)
        if "pend" in state and not state["pend"]:
            del state["pend"]
        if waiting:
            for entry in waiting["r"]:
                self._on_post(state, event.author_id, kind, entry)
            for slot, (ts, n) in waiting.get("c", {}).items():
                self._on_post(state, event.author_id, kind, [ts, slot.partition("|")[2], n, ""])

    def _connection(self, state: State, event: Connection) -> None:
        author = event.author_id
        if event.status == "requested":
            self._bump(state, event.ts, author, "cr", 1)
            return
        n = 1 if event.status == "accepted" else -1
        if n > 0:
            self._bump(state, event.ts, author, "ca", 1)
            if event.decision_maker:
                self._bump(state, event.ts, author, "cd", 1)
        else:
            self._bump(state, event.ts, author, "cx", 1)
        net = state.setdefault("net", {})
        v = net.get(author, 0) + n
        if v:
            net[author] = v
        else:
            net.pop(author, None)
            if not net:
                del state["net"]

    @staticmethod
    def _message(state: State, event: Message) -> None:
        if event.direction == "inbound":
            code, who = "i", event.author_id
        elif event.automated:
            return  # an auto-acknowledgement: no reply, no seller
        elif event.bot:
            code, who = "b", event.author_id
        else:
            code, who = "o", event.agent_id or event.author_id
        conv = state.setdefault("conv", {}).setdefault(event.conversation_id, {"m": [], "s": []})
        row = [event.ts, code, who, event.event_id]
        m = conv["m"]
        m.append(row)
        if len(m) > 1 and (m[-2][0], m[-2][3]) > (row[0], row[3]):
            m.sort(key=lambda r: (r[0], r[3]))
        if len(m) > MAX_MESSAGES:
            del m[MAX_MESSAGES:]  # (the earliest messages decide: who the seller is, the first waits)

    def _sync_conversation(self, state: State, cid: str) -> None:
        conv = state.get("conv", {}).get(cid)
        if conv is None:
            return
        want = _conversation(conv["m"], self.outreach_ms)
        if want == conv["s"]:
            return
        for day, author, name, n in conv["s"]:
            self._bump(state, day * DAY_MS, author, name, -n)
        for day, author, name, n in want:
            self._bump(state, day * DAY_MS, author, name, n)
        conv["s"] = want

    # -- time --------------------------------------------------------------
    def close(self, key: str, state: State, watermark: int) -> tuple[list[Output], bool]:
        out: list[Output] = []
        changed = False
        today = watermark // DAY_MS
        late = watermark - max(self.spec.lateness_ms, self.spec.grace_ms)
        pub = state.get("pub")
        if pub:
            for day in sorted(pub):
                end = (day + 1) * DAY_MS
                if end + self.spec.grace_ms > watermark:
                    break
                entry = pub[day]
                if entry[1]:
                    entry[0] += 1
                    entry[1] = 0
                    out.extend(self._day_results(key, state, day, entry[0]))
                    changed = True
                if end + self.spec.lateness_ms <= watermark:
                    del pub[day]  # nothing accepted can change it any more
                    changed = True
            if not pub:
                del state["pub"]
        # the rest expires state by the watermark, to the minute at most: a tick each second need not
        # visit every engager of every seller (nothing read depends on it sooner)
        minute = watermark // 60_000
        if self._swept.get(key) == minute:
            return out, changed
        self._swept[key] = minute
        first = today - self.keep_days
        old = [d for d in state["days"] if d < first]
        for d in old:
            del state["days"][d]
        changed = changed or bool(old)
        dml = state.get("dml")
        if dml:  # kept for the orders of the lookback after it: their sales find their seller through it
            for eid in [e for e, lead in dml.items() if lead[0] < late - self.lookback_ms]:
                del dml[eid]  # (no message before it can come any more: its count stays)
                changed = True
            if not dml:
                del state["dml"]
        cs = state.get("cs")
        if cs:
            for eid in [e for e, sale in cs.items() if sale[0] < late]:
                del cs[eid]  # (its lead's seller is final: what it counted stays)
                changed = True
            if not cs:
                del state["cs"]
        # a post's engagement counts for POST_DAYS after it (the trailing window counts it on its own day)
        gone = [p for p, row in state["posts"].items() if row[0] // DAY_MS < today - max(self.keep_days, POST_DAYS)]
        for p in gone:
            del state["posts"][p]
        changed = changed or bool(gone)
        pend = state.get("pend")
        if pend:
            for p in list(pend):
                waiting = pend[p]
                rows = [r for r in waiting["r"] if r[0] >= late]
                counts = {k: v for k, v in waiting.get("c", {}).items() if v[0] >= late}
                if len(rows) != len(waiting["r"]) or len(counts) != len(waiting.get("c", {})):
                    changed = True
                    if rows or counts:
                        pend[p] = {"r": rows, **({"c": counts} if counts else {})}
                    else:
                        del pend[p]
            if not pend:
                del state["pend"]
        eng = state.get("eng")
        if eng:
            for author in list(eng):
                by = eng[author]
                for actor in list(by):
                    if by[actor][-1] < first:
                        del by[actor]
                        changed = True
                if len(by) > MAX_ENGAGERS:
                    for actor in sorted(by, key=lambda a: (by[a][-1], a))[:len(by) - MAX_ENGAGERS]:
                        del by[actor]
                    changed = True
                if not by:
                    del eng[author]
            if not eng:
                del state["eng"]
        conv = state.get("conv")
        if conv:
            horizon = late - self.conversation_ttl_ms
            for cid in [c for c, v in conv.items() if v["m"][-1][0] < horizon]:
                del conv[cid]  # (what it counted stays in its days)
                changed = True
            if len(conv) > MAX_CONVERSATIONS:
                for cid in sorted(conv, key=lambda c: (conv[c]["m"][-1][0], c))[:len(conv) - MAX_CONVERSATIONS]:
                    del conv[cid]
                changed = True
            if not conv:
                del state["conv"]
        return out, changed

    def results(self, key: str, cw: Any, state: State, revision: int) -> list[Output]:
        return []  # (no shared windows: ``close`` publishes the days)

    # -- reads -------------------------------------------------------------
    def sellers(self, state: State, last_day: int, targets: Mapping[str, Decimal] | None = None) -> dict[str, dict[str, Any]]:
        """Every seller's numbers over the trailing window ending with ``last_day`` (the index against
        ``targets``, the defaults without)."""
        sums = trailing(state["days"], last_day, self.days)
        team = sums.pop(TEAM, {})
        first = last_day - self.days
        team_new = team.get("tnc", 0) + sum(f.get("rn", 0) + f.get("cc", 0) for f in sums.values())
        eng = state.get("eng", {})
        net = state.get("net", {})
        out: dict[str, dict[str, Any]] = {}
        for author, f in sorted(sums.items()):
            engagers = sum(1 for days in eng.get(author, {}).values() if any(first < d <= last_day for d in days))
            inputs = seller_inputs(f)
            pillars = ix.pillars(inputs, targets or self.targets)
            requested, accepted = f.get("cr", 0), f.get("ca", 0)
            out[author] = {
                "posts": {"original": f.get("po", 0), "share": f.get("ps", 0), "comment": f.get("pc", 0)},
                "engagements": f.get("eo", 0) + f.get("ei", 0),
                "engagements_on_originals": f.get("eo", 0), "engagements_on_insights": f.get("ei", 0),
                "engagers": engagers, "impressions": f.get("im", 0),
                "connections": {"requested": requested, "accepted": accepted, "removed": f.get("cx", 0)},
                "acceptance_rate": min(1.0, accepted / requested) if requested else None,
                "decision_makers": f.get("cd", 0), "network_size": net.get(author, 0),
                "referrals": {"leads": f.get("lr", 0), "orders": f.get("ro", 0), "new_customers": f.get("rn", 0),
                              "repeat_customers": f.get("rp", 0), "revenue": dict(sorted(f.get("rr", {}).items())),
                              "customer_share": f.get("rn", 0) / team_new if team_new > 0 else None},
                "clicks": f.get("clk", 0), "leads": f.get("ld", 0) + f.get("lc", 0),
                "leads_from_posts": f.get("ld", 0), "leads_from_conversations": f.get("lc", 0),
                "new_customers": f.get("nc", 0) + f.get("cc", 0),
                "new_customers_from_posts": f.get("nc", 0), "new_customers_from_conversations": f.get("cc", 0),
                "attributed_revenue": _money(f.get("rev", {}), f.get("crv", {})),
                "revenue_from_posts": dict(sorted(f.get("rev", {}).items())),
                "revenue_from_conversations": dict(sorted(f.get("crv", {}).items())),
                "conversation_orders": f.get("co", 0),
                "replies": f.get("rq", 0),
                "mean_reply_seconds": f["rs"] / 1000 / f["rq"] if f.get("rq") else None,
                "response_rate": min(1.0, f.get("sa", 0) / f["sp"]) if f.get("sp") else None,
                "outreach": f.get("oo", 0), "outreach_answered": f.get("oa", 0),
                "prospect_response_rate": min(1.0, f.get("oa", 0) / f["oo"]) if f.get("oo") else None,
                "pillars": {p: str(v) for p, v in pillars.items()},
                "selling_index": str(ix.index(pillars)),
                "influence": ix.influence(engagers, f.get("im", 0)),
            }
        return out

    def _ranked(self, sellers: dict[str, dict[str, Any]]) -> list[str]:
        """Sellers by index, then attributed and referred activity (most first), then name."""
        return sorted(sellers, key=lambda a: (-Decimal(sellers[a]["selling_index"]), -sellers[a]["engagements"], a))

    def _day_results(self, key: str, state: State, day: int, revision: int) -> list[Output]:
        platform, account = split_account_key(key)
        start, end = iso(day * DAY_MS), iso((day + 1) * DAY_MS)
        today = {a: f for a, f in state["days"].get(day, {}).items() if a != TEAM}
        if not today:
            return []
        window = self.sellers(state, day, self.targets_of(key))
        out: list[Output] = []
        for author in sorted(today):
            s = window.get(author)
            f = today[author]
            if s is None:
                continue
            common = {"family": "sellers", "platform": platform, "account_id": account, "window": "1d",
                      "window_start": start, "window_end": end, "revision": revision, "author_id": author}

            def add(metric: str, value: Any, *extra: str, _author: str = author, _common: dict[str, Any] = common,
                    **fields: Any) -> None:
                out.append(Result(metric=metric, value=None if value is None else float(value),  # type: ignore[arg-type]
                                  key=result_key(metric, platform, account, "1d", start, _author, *extra),
                                  **_common, **fields))

            add("seller_posts", f.get("po", 0) + f.get("ps", 0) + f.get("pc", 0),
                by_kind={"original": f.get("po", 0), "share": f.get("ps", 0), "comment": f.get("pc", 0)})
            add("seller_engagements", f.get("eo", 0) + f.get("ei", 0))
            add("seller_connections_accepted", f.get("ca", 0), requested=f.get("cr", 0), removed=f.get("cx", 0),
                decision_makers=f.get("cd", 0))
            add("seller_referrals", f.get("lr", 0) + f.get("ro", 0), leads=f.get("lr", 0), orders=f.get("ro", 0),
                new_customers=f.get("rn", 0), revenue=dict(sorted(f.get("rr", {}).items())))
            add("seller_clicks", f.get("clk", 0))
            add("seller_leads", f.get("ld", 0) + f.get("lc", 0), from_posts=f.get("ld", 0),
                from_conversations=f.get("lc", 0))
            add("seller_new_customers", f.get("nc", 0) + f.get("cc", 0), from_posts=f.get("nc", 0),
                from_conversations=f.get("cc", 0))
            for cur, amount in _money(f.get("rev", {}), f.get("crv", {})).items():
                add("seller_attributed_revenue", Decimal(amount), cur, currency=cur, amount=amount,
                    from_posts=f.get("rev", {}).get(cur, "0"), from_conversations=f.get("crv", {}).get(cur, "0"))
            add("selling_index", Decimal(s["selling_index"]), pillars=s["pillars"], trailing_window=self.label)
            add("seller_influence", s["influence"], engagers=s["engagers"], impressions=s["impressions"],
                trailing_window=self.label)
            # as of the day's end: the network now less what was accepted or removed after the day
            later = sum(f2.get("ca", 0) - f2.get("cx", 0) for d, by in state["days"].items() if d > day
                        for a, f2 in by.items() if a == author)
            add("seller_network_size", s["network_size"] - later)
        return out

    def samples(self, key: str, state: State, watermark: int) -> Iterable[Sample]:
        sellers = self.sellers(state, watermark // DAY_MS, self.targets_of(key))
        net = state.get("net", {})
        if not sellers and not net:
            return
        platform, account = split_account_key(key)
        w = self.label
        ranked = self._ranked(sellers)
        shown = set(ranked[:self.max_sellers])
        folded: dict[tuple[str, tuple[str, ...]], float] = {}

        def emit(g: Gauge, author: str, value: float, *extra: str) -> Iterable[Sample]:
            if author in shown:
                yield g.name, (platform, account, author, w, *extra), value
            elif g.additive:
                k = (g.name, (platform, account, "other", w, *extra))
                folded[k] = folded.get(k, 0.0) + value

        team_rev: dict[str, Decimal] = {}
        for author in ranked:
            s = sellers[author]
            for kind, n in s["posts"].items():
                yield from emit(POSTS, author, float(n), kind)
            yield from emit(ENGAGEMENTS, author, float(s["engagements"]))
            yield from emit(ENGAGERS, author, float(s["engagers"]))
            for status, n in s["connections"].items():
                yield from emit(CONNECTIONS, author, float(n), status)
            if s["acceptance_rate"] is not None:
                yield from emit(ACCEPTANCE, author, s["acceptance_rate"])
            yield from emit(DECISION_MAKERS, author, float(s["decision_makers"]))
            r = s["referrals"]
            yield from emit(REFERRALS, author, float(r["leads"]), "lead")
            yield from emit(REFERRALS, author, float(r["orders"]), "order")
            for cur, amount in r["revenue"].items():
                yield from emit(REFERRAL_REVENUE, author, float(amount), cur)
                team_rev[cur] = team_rev.get(cur, Decimal(0)) + Decimal(amount)
            if r["customer_share"] is not None:
                yield from emit(REFERRAL_SHARE, author, r["customer_share"])
            yield from emit(CLICKS, author, float(s["clicks"]))
            yield from emit(LEADS, author, float(s["leads"]))
            yield from emit(CUSTOMERS, author, float(s["new_customers"]))
            for cur, amount in s["attributed_revenue"].items():
                yield from emit(REVENUE, author, float(amount), cur)
                team_rev[cur] = team_rev.get(cur, Decimal(0)) + Decimal(amount)
            yield from emit(INDEX, author, float(s["selling_index"]))
            for p, v in s["pillars"].items():
                yield from emit(PILLAR, author, float(v), p)
            yield from emit(INFLUENCE, author, float(s["influence"]))
        for author, n in sorted(net.items()):
            if author in shown:
                yield NETWORK.name, (platform, account, author), float(n)
            else:
                k = (NETWORK.name, (platform, account, "other"))
                folded[k] = folded.get(k, 0.0) + n
        for (name, labels), value in sorted(folded.items()):
            yield name, labels, value
        if sellers:
            yield TEAM_SELLERS.name, (platform, account, w), float(len(sellers))
            mean = sum(Decimal(s["selling_index"]) for s in sellers.values()) / len(sellers)
            yield TEAM_INDEX.name, (platform, account, w), float(mean)
        for cur, amount in sorted(team_rev.items()):
            yield TEAM_REVENUE.name, (platform, account, w, cur), float(amount)

    def view(self, key: str, state: State, watermark: int) -> dict[str, Any]:
        targets = self.targets_of(key)
        sellers = self.sellers(state, watermark // DAY_MS, targets)
        ranked = self._ranked(sellers)
        return {"window": self.label, "sellers": sellers, "leaderboard": ranked,
                "targets": {name: str(v) for name, v in targets.items()},
                "team": {"sellers": len(sellers),
                         "selling_index": str(sum((Decimal(s["selling_index"]) for s in sellers.values()), Decimal(0))
                                              / len(sellers)) if sellers else None}}
