"""Realistic synthetic traffic for every input topic.

A simulated set of brand accounts posts on several platforms. Each simulated
second, every account gets impressions, and engagements and clicks at that
platform's published benchmark rates (METRICS.md); customers open conversations
that agents answer after human-like (log-normal) delays, some only with an
automated acknowledgement or a bot (some then ask for a person), some never; a quarter are
public comments; sellers also write first (outreach) and some prospects answer; a few
percent of clicks become orders,
a few of those are cancelled; campaigns report spend. A small share of records
are duplicates, late, or malformed, as in production.

``Traffic`` is pure (seeded ``random.Random``, simulated clock), so the same
``--seed`` and ``--start`` give the same records; ``run`` paces it in real time
and produces it with aiokafka.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from .windows import iso

__all__ = ["Traffic", "run", "ENGAGEMENT_RATE", "CLICK_THROUGH_RATE"]

#: Published engagement-rate benchmarks (per impression), METRICS.md; others: a plausible 1%.
ENGAGEMENT_RATE = {"facebook": 0.0006, "instagram": 0.0047, "tiktok": 0.0569, "x": 0.00035, "linkedin": 0.01}
#: Click-through benchmarks (Chatdesk): Instagram 18%, TikTok 14% organic, Facebook 9% ads.
#: Applied to link impressions, which we take as 1 in 20 impressions.
CLICK_THROUGH_RATE = {"instagram": 0.18, "tiktok": 0.14, "facebook": 0.09, "x": 0.02, "linkedin": 0.04}
LINK_SHARE = 0.05
PLATFORM_MIX = {"instagram": 0.3, "tiktok": 0.25, "facebook": 0.2, "linkedin": 0.15, "x": 0.1}
KINDS = (("like", 0.7), ("comment", 0.12), ("share", 0.08), ("save", 0.05), ("reaction", 0.05))
CURRENCIES = (("USD", 0.6), ("EUR", 0.3), ("GBP", 0.1))
LEAD_KINDS = (("signup", 0.6), ("form", 0.4))
SOURCES = (("direct", 0.5), ("search", 0.35), ("email", 0.15))
AGENTS = ("ana", "ben", "chloe", "dev", "emre")
#: each brand's team of sellers and their habits, per simulated hour: original posts, shares and
#: comments on others' content, connection requests (share accepted, share of decision makers),
#: referrals; a poster, a networker, a curator (so the selling index separates them)
SELLERS: dict[str, dict[str, float]] = {
    "ana": {"original": 6.0, "insight": 1.0, "connect": 2.0, "accept": 0.5, "dm": 0.2, "refer": 0.5},
    "ben": {"original": 1.0, "insight": 1.0, "connect": 12.0, "accept": 0.6, "dm": 0.4, "refer": 2.0},
    "chloe": {"original": 1.5, "insight": 8.0, "connect": 3.0, "accept": 0.4, "dm": 0.2, "refer": 0.5},
}


@dataclass
class Account:
    platform: str
    account_id: str
    followers: int
    posts: list[str]
    campaigns: list[str]
    weight: float


@dataclass(order=True)
class _Pending:
    ts: int
    seq: int
    topic: str = field(compare=False)
    record: dict[str, Any] = field(compare=False)


class Traffic:
    """A seeded, simulated-time source of (topic, value bytes, event ts) records."""

    def __init__(
        self, rate: float, seed: int = 1, start_ms: int | None = None, noise: bool = True, reply_median_s: float = 240.0,
        incident: str | None = None, incident_at_s: int = 60, incident_minutes: float = 20.0, answered: float = 0.88,
    ) -> None:
        self.rng = random.Random(seed)
        # which impressions are ads: a stream of its own, so ``rng`` (and every other record) stays as it was
        self.ads = random.Random(f"ads-{seed}")
        # the channel of a conversation, bots and outreach: a stream of their own too
        self.talk = random.Random(f"talk-{seed}")
        # the sellers' posts, connections and referrals: a stream of their own too
        self.sell = random.Random(f"sell-{seed}")
        self.sell_seq = 0
        self.reply_median_s = reply_median_s
        self.answered = answered  # share of conversations a human answers
        #: ``slow-replies``: from ``incident_at_s`` simulated seconds on, for ``incident_minutes``,
        #: one account's team answers late (8-20 min) or not at all: its reply SLO alerts fire
        if incident not in (None, "slow-replies"):
            raise ValueError(f"unknown incident {incident!r} (known: slow-replies)")
        self.incident = incident
        self.incident_span = (incident_at_s, incident_at_s + int(incident_minutes * 60))
        self.rate = rate
        self.noise = noise
        self.now = int(time.time() * 1000) if start_ms is None else start_ms
        self.seq = 0
        self.seconds = 0
        self.pending: list[_Pending] = []
        self.accounts = self._accounts()
        self.sent_payloads: list[tuple[str, bytes]] = []
        self.counts: Counter[str] = Counter()
        # Events per account-second per impression, to size impressions to the rate.
        per_imp = sum(
            a.weight * (ENGAGEMENT_RATE[a.platform] + LINK_SHARE * CLICK_THROUGH_RATE[a.platform] + 1 / 150)
            for a in self.accounts
        )
        self.impressions_per_second = max(rate * 0.85 / per_imp, 1.0)

    def _accounts(self) -> list[Account]:
        out = []
        for platform, share in PLATFORM_MIX.items():
            for i in range(3):
                aid = f"{platform[:2]}-brand-{i + 1}"
                out.append(
                    Account(
                        platform,
                        aid,
                        followers=self.rng.randint(2_000, 400_000),
                        posts=[f"{aid}-post-{j}" for j in range(12)],
                        campaigns=[f"{aid}-cmp-{j}" for j in range(2)],
                        weight=share / 3,
                    )
                )
        return out

    def _id(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}-{self.seq:09d}-{self.rng.getrandbits(24):06x}"

    def _schedule(self, topic: str, ts: int, record: dict[str, Any]) -> None:
        self.seq += 1
        heapq.heappush(self.pending, _Pending(ts, self.seq, topic, record))

    def _poisson(self, lam: float) -> int:
        if lam <= 0:
            return 0
        if lam > 30:
            return max(0, int(self.rng.gauss(lam, math.sqrt(lam)) + 0.5))
        limit, k, p = math.exp(-lam), 0, 1.0
        while True:
            p *= self.rng.random()
            if p <= limit:
                return k
            k += 1

    def _pick(self, pairs: tuple[tuple[str, float], ...]) -> str:
        r, acc = self.rng.random(), 0.0
        for value, w in pairs:
            acc += w
            if r < acc:
                return value
        return pairs[-1][0]

    # -- one simulated second ------------------------------------------------
    def second(self) -> list[tuple[str, bytes, int]]:
        """All records whose event time falls in the next simulated second."""
        t0, rng = self.now, self.rng
        for acct in self.accounts:
            imps = self._poisson(self.impressions_per_second * acct.weight)
            left = imps
            while left > 0:
                n = min(left, rng.randint(100, 200))
                left -= n
                self._schedule("impressions", t0 + rng.randrange(1000), {
                    "event_id": self._id("imp"), "platform": acct.platform, "account_id": acct.account_id,
                    "post_id": rng.choice(acct.posts), "count": n,
                    "paid": self.ads.random() < 0.35,  # about a third of reach is bought (clicks: 30% paid)
                })
            for _ in range(self._poisson(imps * ENGAGEMENT_RATE[acct.platform])):
                self._schedule("likes", t0 + rng.randrange(1000), {
                    "event_id": self._id("lk"), "platform": acct.platform, "account_id": acct.account_id,
                    "post_id": acct.posts[min(int(rng.expovariate(0.4)), len(acct.posts) - 1)],
                    "actor_id": f"u{rng.randrange(50_000)}", "kind": self._pick(KINDS),
                })
            for _ in range(self._poisson(imps * LINK_SHARE * CLICK_THROUGH_RATE[acct.platform])):
                self._click(acct, t0 + rng.randrange(1000))
            if rng.random() < 0.1:
                acct.followers += rng.randint(-3, 12)
                self._schedule("audience", t0 + rng.randrange(1000), {
                    "event_id": self._id("aud"), "platform": acct.platform, "account_id": acct.account_id,
                    "followers": max(acct.followers, 0),
                })
            if rng.random() < min(0.02 * self.rate / 100, 0.9) * acct.weight * 15:
                self._conversation(acct, t0 + rng.randrange(1000))
            if self.talk.random() < min(0.002 * self.rate / 100, 0.1) * acct.weight * 15:
                self._outreach(acct, t0 + self.talk.randrange(1000))
            if self.seconds % 60 == 0:  # ad platforms report each campaign's spend once a minute
                for campaign in acct.campaigns:
                    self._schedule("spend", t0 + rng.randrange(1000), {
                        "event_id": self._id("sp"), "platform": acct.platform, "account_id": acct.account_id,
                        "campaign_id": campaign, "amount": f"{rng.uniform(1, 40):.2f}", "currency": "USD",
                    })
        self._sellers(t0)
        self._visits(t0)
        self.now += 1000
        self.seconds += 1
        out: list[tuple[str, bytes, int]] = []
        while self.pending and self.pending[0].ts < self.now:
            item = heapq.heappop(self.pending)
            out.extend(self._emit(item))
        return out

    def _session(self, actor: str, ts: int, source: str, **fields: Any) -> None:
        """A site visit: log-normal time on site (median ~50 s) and pages."""
        rng = self.rng
        self._schedule("sessions", ts, {
            "event_id": self._id("ss"), "actor_id": actor, "source": source,
            "duration_s": round(max(rng.lognormvariate(math.log(50), 1.0), 1.0), 1), "pages": 1 + int(rng.expovariate(0.5)),
            **{k: v for k, v in fields.items() if v is not None},
        })

    def _checkout(self, actor: str, ts: int, completed_at: int | None, currency: str = "USD", amount: str | None = None) -> None:
        checkout_id = self._id("co")
        base = {"checkout_id": checkout_id, "actor_id": actor, "currency": currency}
        if amount is not None:
            base["amount"] = amount
        self._schedule("checkouts", ts, {"event_id": self._id("ch"), "status": "started", **base})
        if completed_at is not None:
            self._schedule("checkouts", completed_at, {"event_id": self._id("ch"), "status": "completed", **base})

    def _visits(self, t0: int) -> None:
        """Visitors who come back directly, from search or from email; some start a checkout."""
        rng = self.rng
        for _ in range(self._poisson(0.4 * max(self.rate, 1) / 200)):
            actor, ts = f"u{rng.randrange(20_000)}", t0 + rng.randrange(1000)
            self._session(actor, ts, self._pick(SOURCES))
            if rng.random() < 0.1:  # most of these carts are left behind (CHECKOUT_TIMEOUT decides)
                done = ts + int(rng.uniform(60, 600) * 1000) if rng.random() < 0.3 else None
                self._checkout(actor, ts + int(rng.uniform(20, 120) * 1000), done)

    def _click(self, acct: Account, ts: int) -> None:
        rng = self.rng
        actor = f"u{rng.randrange(20_000)}"
        click_id = self._id("ck")
        post, campaign = rng.choice(acct.posts), rng.choice(acct.campaigns)
        self._schedule("clicks", ts, {
            "event_id": self._id("cl"), "platform": acct.platform, "account_id": acct.account_id,
            "actor_id": actor, "post_id": post, "campaign_id": campaign, "click_id": click_id,
            "paid": rng.random() < 0.3,
        })
        if rng.random() < 0.85:  # most clicks land on the site, a moment later
            self._session(actor, ts + rng.randint(300, 3000), acct.platform, platform=acct.platform,
                          account_id=acct.account_id, campaign_id=campaign, post_id=post, click_id=click_id)
        if rng.random() < 0.06:  # a sign-up or a form, within minutes
            self._schedule("leads", ts + int(rng.uniform(20, 300) * 1000), {
                "event_id": self._id("ld"), "platform": acct.platform, "account_id": acct.account_id,
                "actor_id": actor, "kind": self._pick(LEAD_KINDS), "campaign_id": campaign, "post_id": post,
                "click_id": click_id,
            })
        if rng.random() < 0.03:  # a cart left behind
            self._checkout(actor, ts + int(rng.uniform(30, 300) * 1000), None)
        if rng.random() < 0.03:  # a few percent of clicks convert, minutes later
            order_id = self._id("ord")
            currency = self._pick(CURRENCIES)
            amount = f"{rng.lognormvariate(3.6, 0.6):.2f}"
            at = ts + int(max(rng.lognormvariate(math.log(45), 0.8), 3) * 1000)  # median 45 s after the click
            order = {"event_id": self._id("o"), "order_id": order_id, "actor_id": actor, "amount": amount,
                     "currency": currency, "status": "placed"}
            self._checkout(actor, at - int(rng.uniform(10, 40) * 1000), at, currency, amount)
            if rng.random() < 0.5:
                order["click_id"] = click_id
            self._schedule("orders", at, order)
            if rng.random() < 0.05:
                self._schedule("orders", at + int(rng.uniform(60, 1800) * 1000), order | {
                    "event_id": self._id("o"), "status": rng.choice(("cancelled", "refunded"))})

    def _conversation(self, acct: Account, ts: int) -> None:
        rng = self.rng
        conv = self._id("conv")
        customer = f"u{rng.randrange(50_000)}"
        base = {"platform": acct.platform, "account_id": acct.account_id, "conversation_id": conv}
        talk = self.talk
        channel = "comment" if talk.random() < 0.25 else "mention" if talk.random() < 0.05 else "dm"
        if channel != "dm":  # a public comment (or mention) and the brand's answer to it
            base["channel"] = channel
        t = last = ts
        for _ in range(1 + int(rng.expovariate(1.5))):  # one or a few inbound messages
            self._schedule("messages", t, base | {"event_id": self._id("m"), "direction": "inbound", "author_id": customer})
            last = t
            t += int(rng.uniform(5, 90) * 1000)
        if rng.random() < 0.05:  # a DM that turns into a lead
            self._schedule("leads", last + 60_000, {
                "event_id": self._id("ld"), "platform": acct.platform, "account_id": acct.account_id,
                "actor_id": customer, "kind": "dm"})
            if self.sell.random() < 0.4:  # and into a sale of the conversation, minutes later
                self._schedule("orders", last + int(self.sell.uniform(120, 900) * 1000), {
                    "event_id": self._sid("o"), "order_id": self._sid("ord"), "actor_id": customer,
                    "amount": f"{self.sell.lognormvariate(4.0, 0.5):.2f}", "currency": "USD"})
        if rng.random() < 0.2:  # an auto-acknowledgement, which must not stop the clock
            self._schedule("messages", ts + 2000, base | {
                "event_id": self._id("m"), "direction": "outbound", "author_id": "bot", "automated": True})
        if not self.in_incident(acct) and talk.random() < 0.12:  # a bot answers; half ask for a person
            self._schedule("messages", last + 20_000, base | {
                "event_id": self._id("m"), "direction": "outbound", "author_id": "assistant", "bot": True})
            if talk.random() < 0.5:
                again = last + int(talk.uniform(60, 300) * 1000)
                self._schedule("messages", again, base | {"event_id": self._id("m"), "direction": "inbound",
                                                          "author_id": customer})
                agent = talk.choice(AGENTS)
                self._schedule("messages", again + int(talk.lognormvariate(math.log(self.reply_median_s), 0.9) * 1000),
                               base | {"event_id": self._id("m"), "direction": "outbound", "author_id": agent,
                                       "agent_id": agent})
            return
        if self.in_incident(acct):
            if rng.random() < 0.8:  # the team is swamped: late replies, some never
                agent = rng.choice(AGENTS)
                self._schedule("messages", last + int(rng.uniform(8, 20) * 60_000), base | {
                    "event_id": self._id("m"), "direction": "outbound", "author_id": agent, "agent_id": agent})
            return
        if rng.random() < self.answered:  # most get a human reply, log-normal delay (median ~4 min)
            agent = rng.choice(AGENTS)
            answer = ts + int(rng.lognormvariate(math.log(self.reply_median_s), 0.9) * 1000)
            self._schedule("messages", answer, base | {
                "event_id": self._id("m"), "direction": "outbound", "author_id": agent, "agent_id": agent})
            if last > answer:  # the customer wrote again after the answer: that gets an answer too
                again = last + int(rng.lognormvariate(math.log(self.reply_median_s), 0.9) * 1000)
                self._schedule("messages", again, base | {
                    "event_id": self._id("m"), "direction": "outbound", "author_id": agent, "agent_id": agent})

    def _sellers(self, t0: int) -> None:
        """Each brand's sellers post (their engagement follows over minutes), connect and refer."""
        sell = self.sell
        scale = 3 * max(self.rate, 1) / 200 / 3600  # habits are per hour at 200 events/s (x3: a demo's minutes show them)
        for acct in self.accounts:
            for seller, habit in SELLERS.items():
                if sell.random() < habit["original"] * scale * acct.weight * 15:
                    self._seller_post(acct, seller, "original", t0 + sell.randrange(1000))
                if sell.random() < habit["insight"] * scale * acct.weight * 15:
                    self._seller_post(acct, seller, sell.choice(("share", "comment")), t0 + sell.randrange(1000))
                if sell.random() < habit["connect"] * scale * acct.weight * 15:
                    self._connect(acct, seller, habit, t0 + sell.randrange(1000))
                if sell.random() < habit["refer"] * scale * acct.weight * 15:
                    self._refer(acct, seller, t0 + sell.randrange(1000))

    def _seller_post(self, acct: Account, seller: str, kind: str, ts: int) -> None:
        sell = self.sell
        post = f"{acct.account_id}-{seller}-{self._sid('sp')}"
        record: dict[str, Any] = {"event_id": self._sid("po"), "platform": acct.platform, "account_id": acct.account_id,
                                  "post_id": post, "author_id": seller, "kind": kind}
        if kind != "original":
            record["target_post_id"] = f"prospect-post-{sell.randrange(10_000)}"
        self._schedule("posts", ts, record)
        reach = int(sell.lognormvariate(math.log(400 if kind == "original" else 80), 0.8))
        self._schedule("impressions", ts + sell.randint(1000, 60_000), {
            "event_id": self._sid("imp"), "platform": acct.platform, "account_id": acct.account_id, "post_id": post,
            "count": max(reach, 1)})
        for _ in range(self._poisson_with(sell, reach * 0.03)):  # some engagement arrives before the post
            self._schedule("likes", ts + int(sell.uniform(-5, 600) * 1000), {
                "event_id": self._sid("lk"), "platform": acct.platform, "account_id": acct.account_id,
                "post_id": post, "actor_id": f"u{sell.randrange(50_000)}", "kind": self._pick_with(sell, KINDS)})
        for _ in range(self._poisson_with(sell, reach * 0.01)):  # clicks on the post's link; a few buy
            actor, click_id = f"u{sell.randrange(20_000)}", self._sid("ck")
            at = ts + int(sell.uniform(10, 600) * 1000)
            self._schedule("clicks", at, {
                "event_id": self._sid("cl"), "platform": acct.platform, "account_id": acct.account_id,
                "actor_id": actor, "post_id": post, "click_id": click_id})
            if sell.random() < 0.15:
                self._schedule("leads", at + 30_000, {
                    "event_id": self._sid("ld"), "platform": acct.platform, "account_id": acct.account_id,
                    "actor_id": actor, "kind": "form", "post_id": post, "click_id": click_id})
            if sell.random() < 0.25:
                self._schedule("orders", at + 60_000, {
                    "event_id": self._sid("o"), "order_id": self._sid("ord"), "actor_id": actor,
                    "amount": f"{sell.lognormvariate(4.0, 0.5):.2f}", "currency": "USD", "click_id": click_id})

    def _connect(self, acct: Account, seller: str, habit: dict[str, float], ts: int) -> None:
        sell = self.sell
        base = {"platform": acct.platform, "account_id": acct.account_id, "author_id": seller,
                "actor_id": f"p{sell.randrange(50_000)}"}
        self._schedule("connections", ts, base | {"event_id": self._sid("cn"), "status": "requested"})
        if sell.random() < habit["accept"]:
            self._schedule("connections", ts + int(sell.uniform(60, 3600) * 1000), base | {
                "event_id": self._sid("cn"), "status": "accepted", "decision_maker": sell.random() < habit["dm"]})

    def _refer(self, acct: Account, seller: str, ts: int) -> None:
        """A seller refers a shopper: a lead, and often an order (a few refunded)."""
        sell = self.sell
        actor = f"r{sell.randrange(20_000)}"
        self._schedule("leads", ts, {"event_id": self._sid("ld"), "platform": acct.platform,
                                     "account_id": acct.account_id, "actor_id": actor, "kind": "signup",
                                     "referrer_id": seller})
        if sell.random() < 0.5:
            order = {"event_id": self._sid("o"), "order_id": self._sid("ord"), "actor_id": actor,
                     "amount": f"{sell.lognormvariate(4.2, 0.5):.2f}", "currency": "USD", "referrer_id": seller}
            at = ts + int(sell.uniform(60, 1800) * 1000)
            self._schedule("orders", at, order)
            if sell.random() < 0.05:
                self._schedule("orders", at + 600_000, order | {"event_id": self._sid("o"), "status": "refunded"})

    def _sid(self, prefix: str) -> str:
        """An id from the sellers' own stream (the other records' ids and draws stay as they were)."""
        self.sell_seq += 1
        return f"{prefix}-s{self.sell_seq:08d}-{self.sell.getrandbits(24):06x}"

    def _poisson_with(self, rng: random.Random, lam: float) -> int:
        if lam <= 0:
            return 0
        if lam > 30:
            return max(0, int(rng.gauss(lam, math.sqrt(lam)) + 0.5))
        limit, k, p = math.exp(-lam), 0, 1.0
        while True:
            p *= rng.random()
            if p <= limit:
                return k
            k += 1

    @staticmethod
    def _pick_with(rng: random.Random, pairs: tuple[tuple[str, float], ...]) -> str:
        r, acc = rng.random(), 0.0
        for value, w in pairs:
            acc += w
            if r < acc:
                return value
        return pairs[-1][0]

    def _outreach(self, acct: Account, ts: int) -> None:
        """A seller writes first to a prospect; about a third answer (median 3 min), and get a reply."""
        talk = self.talk
        agent = talk.choice(AGENTS)
        prospect = f"p{talk.randrange(50_000)}"
        base = {"platform": acct.platform, "account_id": acct.account_id, "conversation_id": self._id("out")}
        self._schedule("messages", ts, base | {"event_id": self._id("m"), "direction": "outbound", "author_id": agent,
                                               "agent_id": agent})
        if talk.random() < 0.35:
            answer = ts + int(talk.lognormvariate(math.log(180), 1.0) * 1000)
            self._schedule("messages", answer, base | {"event_id": self._id("m"), "direction": "inbound",
                                                       "author_id": prospect})
            reply = answer + int(talk.lognormvariate(math.log(self.reply_median_s), 0.9) * 1000)
            self._schedule("messages", reply, base | {"event_id": self._id("m"), "direction": "outbound",
                                                      "author_id": agent, "agent_id": agent})

    #: the account an incident hits (the demo's summary and README point at it)
    INCIDENT_ACCOUNT = ("instagram", "in-brand-1")

    def in_incident(self, acct: Account) -> bool:
        start, end = self.incident_span
        return self.incident is not None and (acct.platform, acct.account_id) == self.INCIDENT_ACCOUNT and start <= self.seconds < end

    def _emit(self, item: _Pending) -> Iterator[tuple[str, bytes, int]]:
        record = {"event_id": item.record["event_id"], "ts": iso(item.ts)} | item.record
        rng = self.rng
        if self.noise:
            r = rng.random()
            if r < 0.003:
                yield item.topic, self._malformed(record), item.ts
                self.counts["malformed"] += 1
                return
            if r < 0.008:  # late: stamped long before its neighbours
                record["ts"] = iso(item.ts - int(rng.uniform(10, 60) * 60_000))
                self.counts["late"] += 1
        payload = orjson.dumps(record)
        self.counts[item.topic] += 1
        yield item.topic, payload, item.ts
        if self.noise and rng.random() < 0.01:  # an upstream retry: the same record again
            self.counts["duplicate"] += 1
            yield item.topic, payload, item.ts

    def _malformed(self, record: dict[str, Any]) -> bytes:
        kind = self.rng.randrange(5)
        if kind == 0:
            return orjson.dumps(record)[:-7]  # truncated JSON
        if kind == 1:
            return orjson.dumps({k: v for k, v in record.items() if k != "event_id"})
        if kind == 2 and "platform" in record:
            return orjson.dumps(record | {"platform": "myspace"})
        if kind == 3:
            return orjson.dumps(record | {"ts": record["ts"].replace("Z", "")})  # no offset
        return b"\xff\xfe not utf-8 \x80"


async def run(
    settings: Any, rate: float, duration: float, seed: int, start_ms: int | None = None,
    fast: bool = False, progress: bool = True, reply_median_s: float = 240.0, incident: str | None = None,
    incident_at_s: int = 60, answered: float = 0.88,
) -> Counter[str]:
    """Produce ``duration`` simulated seconds of traffic at ``rate`` events/s."""
    from schemas.events import INPUT_TOPICS

    from . import clients
    from .topics import ensure_topics

    await ensure_topics(settings, [settings.topic(t) for t in INPUT_TOPICS])  # its only topics (ACLs: docs/operations.md)
    traffic = Traffic(rate, seed, start_ms, reply_median_s=reply_median_s, incident=incident, incident_at_s=incident_at_s,
                      answered=answered)
    producer = clients.producer(settings, linger_ms=5, max_batch_size=262_144)
    await producer.start()
    sent = 0
    began = time.monotonic()
    tty = sys.stderr.isatty()
    try:
        for second in range(int(duration)):
            futures = [
                await producer.send(settings.topic(topic), value, timestamp_ms=None)
                for topic, value, _ts in traffic.second()
            ]
            if futures:
                await asyncio.gather(*futures)
            sent += len(futures)
            if progress:
                line = f"generate: {second + 1}/{int(duration)} s, {sent} records sent ({sent / max(time.monotonic() - began, 1e-9):,.0f}/s)"
                print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)
            if not fast:
                await asyncio.sleep(max(0.0, began + second + 1 - time.monotonic()))
    finally:
        await producer.stop()
        if progress and tty:
            print(file=sys.stderr)
    traffic.counts["sent"] = sent
    return traffic.counts
