"""Replies family: how fast customers get an answer, and how prospects answer outreach, per
platform account.

State per key (``platform|account``):

    {"win": windowed aggregates (replies.metrics),
     "convs": {conversation_id: conversation},
     "hist": {channel: {"lat", "first", "next", "business", "bfirst", "bnext": h}},
     "agent_hist": {agent: h}, "agents": [agent, ...],   # most recently active last
     "sla": {"policy|channel": {"met": n, "breached": n}}, "clamped": n,
     "bots": {channel: n},                                # waits a bot ended
     "outreach": {agent: [started, answered]}, "phist": h,  # outreach and time to the prospect's answer
     "coh": {day: [started, answered, revision, changed]}}  # daily outreach cohorts (``streams.cohorts``)

**Event time, whatever the arrival order.** A conversation keeps its messages of the last
``ALLOWED_LATENESS`` ordered by event time (ties: the customer's message first, then a human
reply, then a bot's, then by ``event_id``), and what older messages left behind (``Carry``:
who wrote first, the first customer message, whether it had its first human reply, the open
spell, the outreach). Each time a message arrives (in any order, within the allowed
lateness) the conversation is re-derived from them (``_replay``) into *facts*: started,
replied, a reply's latency and SLA result, a breach, a bot resolution, outreach and its
answer. The facts already applied to the key's histograms, counters and windows are kept
beside them (``eff``); only the difference is applied: a fact that no longer holds is
retracted (histogram bucket and sum back by one, counters back, the latency taken out of
its window, a published window corrected by revision), a new one added. A breach that turns
out not to have happened (its reply, read late, was within the target) is withdrawn with a
tombstone (a null value under the breach record's key) on ``socialpulse.reply-breaches``.
Counters and histograms can therefore go down by a correction; Prometheus reads that as a
reset of the series, which ``rate()`` and ``increase()`` handle.

A conversation is remembered for ``CONVERSATION_TTL`` (at least the allowed lateness) after
its last message: a customer who writes again an hour after the answer opens a follow-up
spell (next-reply target), not a new conversation.

**Definitions.** "Conversations started" and the response rate count customer-started
conversations only (the first message is the customer's): of the conversations whose first
message lies in a window, the share with a human reply so far. Outreach has its own counts
and its prospect response rate, and replies to a prospect's answer are follow-ups.

**Spells and policies.** A customer's message opens a *spell* (if none is open); the
first human reply closes it. The spell is judged against the account's first SLA policy
that matches the conversation's platform and channel (``schemas.accounts.SlaPolicy``,
from the account's settings: file, topic or environment): its first-reply target before
the conversation's first human reply, its next-reply target after, counted in calendar
time or in the account's business hours. Without a matching policy the ``default`` policy
applies: ``REPLY_SLO`` for both, in business hours when the account has them (the
behaviour before policies). A policy change applies to spells opened after it.

**Automated messages and bots.** An ``automated`` outbound message (an auto-acknowledgement)
never stops the clock. A ``bot`` message ends the open spell without a human reply time:
the spell counts as bot-resolved (``socialpulse_bot_resolved_total``), neither met nor
breached (unless it had breached already). The customer's next message opens a new spell
(a hand-off to a human), and the first human reply is still the conversation's first
response. Example: customer 10:00, bot 10:01 ("here is the tracking link"), customer
10:20 ("I need a person"), agent 10:35: one bot-resolved spell, a first response of 15 min
(10:20 -> 10:35), judged against the first-reply target.

**Outreach.** A conversation whose first message is outbound (a seller wrote first) is
outreach, decided once the watermark passes that message plus grace (an older customer
message read late still makes it an ordinary conversation). It is answered when the
prospect's first message comes within ``OUTREACH_WINDOW``; the prospect response rate of a
UTC day is answered / started, published per day and corrected as answers come, until the
window plus the allowed lateness after the day. Replies to a prospect's answer are
follow-up replies (next-reply target).

Conversations live with their account, so one worker owns an account's histograms and
counters (and ``sum`` across workers stays exact).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, NotRequired, TypedDict

from schemas.accounts import AccountSettings
from schemas.events import PLATFORMS, Direction, Event, Message, of_account, split_account_key
from schemas.results import ReplyBreach, Result, result_key

from .. import cohorts, windows
from ..accounts import book_for
from ..family import Gauge, Output, Record, Route, Sample, Tally
from ..settings import SettingsError
from ..topics import BREACHES, RESULTS
from ..windows import Windowed, WindowSpec, iso
from . import metrics as m
from .hours import BusinessHours, business_deadline, business_seconds, from_schedule, parse_hours, weekday_hour, zone

__all__ = ["Replies"]

_A = ("platform", "account")
_AC = ("platform", "account", "channel")
_W = ("platform", "account", "window")
QUANTILES = (0.5, 0.9, 0.99)
#: the histograms kept per channel
HISTS = ("lat", "first", "next", "business", "bfirst", "bnext")
#: a histogram's Prometheus name (``business*``: accounts with business hours only)
HIST_NAMES = {
    "lat": "socialpulse_reply_latency_seconds", "first": "socialpulse_first_response_seconds",
    "next": "socialpulse_followup_reply_seconds", "business": "socialpulse_reply_business_latency_seconds",
    "bfirst": "socialpulse_first_response_business_seconds", "bnext": "socialpulse_followup_reply_business_seconds",
}
#: outreach cohort counts
STARTED, ANSWERED = 0, 1
#: a conversation's policy: [name, target, hours, target ms]
Policy = list[Any]


class Carry(TypedDict):
    """A conversation as its folded messages (older than the allowed lateness) left it."""

    first: str | None  # "in": the customer wrote first; "out": outreach (the seller wrote first)
    started: int | None  # its first customer message (customer-started conversations)
    answered: bool  # had its first human reply (outreach: from the start, replies are follow-ups)
    since: int | None  # the open spell's start
    out: NotRequired[dict[str, Any]]  # outreach: {"ts", "agent", "ans"} (the prospect's first message)


class Conversation(TypedDict):
    """One conversation of a key (its changelog JSON has the same keys)."""

    c: Carry
    msgs: list[list[Any]]  # its messages within the allowed lateness, by event time: [ts, code, agent, event_id]
    eff: list[list[Any]]  # the facts of its messages applied to the key's counters and windows (``_replay``)
    last: int  # its latest message
    open: int | None  # waiting since (after all its messages), for the gauges
    due: int  # the watermark at which it must be looked at again
    ch: NotRequired[str]  # channel: its earliest message's (dm when absent)
    ch0: NotRequired[list[Any]]  # [ts, event_id] of that message
    pol: NotRequired[dict[str, Policy]]  # the policy each spell was first held to: "since|first|channel" -> policy


class State(TypedDict):
    """A key's replies slot (its changelog JSON has the same keys)."""

    win: Windowed  # aggregates of ``replies.metrics``
    convs: dict[str, Conversation]
    hist: dict[str, dict[str, dict[str, Any]]]  # channel -> lifetime histograms (``metrics.hist_new``)
    agent_hist: dict[str, dict[str, Any]]
    sla: dict[str, dict[str, int]]  # "policy|channel" -> met, breached
    clamped: int  # replies stamped before the message they answer (latency clamped to 0)
    agents: list[str]  # the MAX_AGENTS most recently active agents keep their own label
    bots: NotRequired[dict[str, int]]
    outreach: NotRequired[dict[str, list[int]]]
    phist: NotRequired[dict[str, Any]]
    coh: NotRequired[dict[int, cohorts.Cohort]]
    wm: NotRequired[int]  # the latest watermark the key's windows were judged at (open, published, dropped)
    nd: NotRequired[int]  # no conversation is due before this watermark (absent: look at each)


def _hists() -> dict[str, dict[str, Any]]:
    return {name: m.hist_new() for name in HISTS}


class Replies:
    name = "replies"
    topics = frozenset({"messages"})
    routes = (Route("messages", of_account),)
    counters: tuple[Gauge, ...] = (
        Gauge("socialpulse_reply_breaches_published", "Reply-SLA breach records published.", (), "counter"),
    )
    SLO = Gauge("socialpulse_reply_slo_seconds", "The reply SLO of the default policy (SOCIALPULSE_REPLY_SLO).", ())
    gauges: tuple[Gauge, ...] = (
        Gauge(HIST_NAMES["lat"], "Human reply latency: reply ts minus waiting_since (first and follow-up).", _AC,
              "histogram"),
        Gauge(HIST_NAMES["first"], "First response time of conversations (the first human reply).", _AC, "histogram"),
        Gauge(HIST_NAMES["next"], "Follow-up reply time: replies after the first response.", _AC, "histogram"),
        Gauge(HIST_NAMES["business"], "Reply latency in business seconds (accounts with business hours only).", _AC,
              "histogram"),
        Gauge(HIST_NAMES["bfirst"], "First response time in business seconds (accounts with business hours).", _AC,
              "histogram"),
        Gauge(HIST_NAMES["bnext"], "Follow-up reply time in business seconds (accounts with business hours).", _AC,
              "histogram"),
        Gauge(
            "socialpulse_agent_reply_latency_seconds",
            "Reply latency per agent (the most recently active MAX_AGENTS; the rest as 'other').",
            ("platform", "account", "agent"), "histogram", detail=("agent",),
        ),
        Gauge(
            "socialpulse_reply_latency_window_seconds",
            "Reply latency quantiles (0.5, 0.9, 0.99) of replies in the trailing window.",
            ("platform", "account", "window"), "summary", additive=False,
        ),
        Gauge("socialpulse_reply_latency_window_mean_seconds", "Mean reply latency over the trailing window.", _W,
              additive=False),
        Gauge("socialpulse_response_rate", "Of conversations started in the window, the fraction replied so far.", _W,
              additive=False),
        Gauge("socialpulse_conversations_started", "Conversations whose first inbound message lies in the window.", _W,
              activity=True),
        Gauge("socialpulse_awaiting_reply", "Conversations waiting for a reply now.", _A),
        Gauge(
            "socialpulse_oldest_awaiting_reply_timestamp_seconds",
            "waiting_since of the oldest open spell (age: time() - value).", _A, additive=False, extreme="min",
        ),
        Gauge("socialpulse_reply_sla_total", "Waiting spells by SLA result (met, breached), channel and policy.",
              ("platform", "account", "channel", "policy", "result"), "counter"),
        Gauge("socialpulse_reply_clamped_total", "Negative reply latencies (clock skew) clamped to 0.", _A, "counter"),
        Gauge("socialpulse_bot_resolved_total", "Waits a bot ended without a human reply.", _AC, "counter"),
        Gauge("socialpulse_outreach_conversations_total", "Outreach conversations (the seller wrote first), by the "
              "agent who wrote.", ("platform", "account", "agent"), "counter", detail=("agent",)),
        Gauge("socialpulse_outreach_answered_total", "Outreach conversations the prospect answered within "
              "OUTREACH_WINDOW.", ("platform", "account", "agent"), "counter", detail=("agent",)),
        Gauge("socialpulse_prospect_response_seconds", "Time from the seller's first message to the prospect's "
              "answer (answered outreach).", _A, "histogram"),
        Gauge("socialpulse_outreach_started", "Outreach conversations started in the trailing window.", _W, activity=True),
        Gauge("socialpulse_prospect_response_rate", "Of the outreach started in the trailing window, the share the "
              "prospect has answered so far.", _W, additive=False),
    )

    merge = staticmethod(m.merge)

    def __init__(
        self,
        spec: WindowSpec,
        slo_ms: int,
        timezones: dict[str, str] | None = None,
        hours: dict[str, BusinessHours] | None = None,
        max_agents: int = 20,
        conversation_ttl_ms: int = 7 * 86_400_000,
        accounts: Callable[[str], AccountSettings | None] | None = None,
        outreach_window_ms: int = 7 * 86_400_000,
    ) -> None:
        self.spec = spec
        self.slo_ms = slo_ms
        self.zones = {k: zone(v) for k, v in (timezones or {}).items()}
        self.hours = hours or {}
        self.max_agents = max_agents
        self.ttl_ms = conversation_ttl_ms
        self.accounts = accounts or (lambda key: None)
        self.outreach_ms = outreach_window_ms
        # a conversation is remembered for its TTL after its last message (at least the allowed
        # lateness: a message that is still accepted never finds its conversation forgotten)
        self.keep_ms = max(conversation_ttl_ms, spec.lateness_ms)
        self._schedules: dict[str, tuple[Any, BusinessHours]] = {}

    @classmethod
    def from_settings(cls, settings: Any, spec: WindowSpec) -> Replies:
        zones = settings.account_timezones
        try:
            hours = {k: parse_hours(v, zones.get(k, "UTC")) for k, v in settings.business_hours.items()}
        except ValueError as exc:
            raise SettingsError(f"bad setting:\n  SOCIALPULSE_BUSINESS_HOURS: {exc}") from None
        return cls(spec, settings.reply_slo, zones, hours, settings.max_agents, settings.conversation_ttl,
                   _account_book(settings), settings.outreach_window)

    def constants(self) -> Iterable[tuple[Gauge, float]]:
        return ((self.SLO, self.slo_ms / 1000),)

    # -- account settings ----------------------------------------------------
    def _hours(self, key: str) -> BusinessHours | None:
        """The account's business hours: its settings' schedule, else the environment's."""
        acct = self.accounts(key)
        if acct is not None and acct.business_hours is not None:
            cached = self._schedules.get(key)
            if cached is None or cached[0] is not acct:
                cached = self._schedules[key] = (acct, from_schedule(acct.business_hours, acct.timezone or "UTC"))
            return cached[1]
        return self.hours.get(key)

    def _zone(self, key: str) -> Any:
        acct = self.accounts(key)
        if acct is not None and acct.timezone:
            return zone(acct.timezone)
        hours = self._hours(key)
        return self.zones.get(key) or (hours.tz if hours else zone("UTC"))

    def _policy(self, key: str, channel: str, first: bool) -> Policy:
        """[name, target, hours, target ms] of the policy a spell is held to."""
        target = "first_reply" if first else "next_reply"
        acct = self.accounts(key)
        if acct is not None:
            platform = split_account_key(key)[0]
            for p in acct.sla_policies:
                if p.matches(platform, channel):
                    ms = p.first_reply if first else (p.next_reply or p.first_reply)
                    return [p.name, target, p.hours, ms]
        return ["default", target, "business" if self._hours(key) else "calendar", self.slo_ms]

    # -- state -------------------------------------------------------------
    def new_state(self) -> State:
        return {"win": windows.new_windowed(), "convs": {}, "hist": {}, "agent_hist": {}, "sla": {}, "clamped": 0,
                "agents": []}

    def decode_state(self, raw: dict[str, Any]) -> State:
        state: State = raw | {"win": windows.decode_windowed(raw["win"])}  # type: ignore[assignment]
        hist = raw["hist"]
        if "lat" in hist:  # written before channels: every conversation was a dm
            state["hist"] = {"dm": _hists() | hist}
        sla = raw["sla"]
        if "met" in sla:  # written before policies: the default policy
            state["sla"] = {"default|dm": sla} if any(sla.values()) else {}
        if raw.get("coh"):
            state["coh"] = cohorts.decode(raw["coh"])
        convs = raw["convs"]
        if any("c" not in conv for conv in convs.values()):  # written before event-time replies
            state["convs"] = {cid: conv if "c" in conv else _upgrade(conv) for cid, conv in convs.items()}
        return state

    def windowed(self, state: State) -> Windowed:
        return state["win"]  # type: ignore[no-any-return]

    def is_empty(self, state: State) -> bool:
        # cumulative histograms and counters must survive: keep a key that ever replied
        return (windows.is_empty(state["win"]) and not state["convs"] and not state["hist"] and not state["sla"]
                and not state.get("bots") and not state.get("outreach") and not state.get("coh"))

    # -- events ------------------------------------------------------------
    def apply(self, key: str, state: State, events: list[Event], watermark: int) -> list[Output]:
        """Add each message to its conversation (kept ordered by event time), then re-derive the
        conversations it touched and apply the difference (``_sync``)."""
        out: list[Output] = []
        touched: dict[str, Conversation] = {}
        for event in events:
            assert isinstance(event, Message)
            cid = event.conversation_id
            conv = state["convs"].get(cid)
            if conv is None:
                conv = state["convs"][cid] = _new_conv()
            conv["last"] = max(conv["last"], event.ts)
            first = conv.get("ch0")
            if "ch" not in conv or (first is not None and (event.ts, event.event_id) < (first[0], first[1])):
                conv["ch0"] = [event.ts, event.event_id]  # the channel is its earliest message's
                conv["ch"] = event.channel
            if event.direction == Direction.inbound:
                code = IN
            elif event.automated:
                touched[cid] = conv  # auto-acknowledgements never stop the clock (but keep it alive)
                continue
            else:
                code = BOT if event.bot else HUMAN
            agent = (event.agent_id or "unassigned") if code == HUMAN else ""
            conv["msgs"].append([event.ts, code, agent, event.event_id])
            touched[cid] = conv
        for cid, conv in touched.items():
            conv["msgs"].sort(key=_order)
            self._sync(key, state, cid, conv, watermark, out)
        if watermark > state.get("wm", 0):
            state["wm"] = watermark
        return out

    def _deadline(self, key: str, since: int, pol: Policy) -> int:
        hours = self._hours(key) if pol[2] == "business" else None
        return business_deadline(since, pol[3] / 1000, hours) if hours else since + int(pol[3])

    def _spell_policy(self, key: str, conv: Conversation, since: int, first: bool, used: dict[str, Policy]) -> Policy:
        """A spell's policy: the one it was first held to (a policy change applies to spells
        that start after it), else the account's current one."""
        ch = conv.get("ch", "dm")
        k = f"{since}|{int(first)}|{ch}"
        pol = conv.get("pol", {}).get(k) or used.get(k) or self._policy(key, ch, first)
        used[k] = pol
        return pol

    def _replay(self, key: str, conv: Conversation, c: Carry, msgs: list[list[Any]], wm: int,
                facts: list[list[Any]], used: dict[str, Policy]) -> None:
        """Walk messages (ordered by event time) from the state ``c``, which it advances,
        appending the facts they make. The rules, message by message:

        - a customer message opens a spell if none is open; the conversation's first message
          decides whether it is customer-started (``s``) or outreach (``o``, counted once the
          watermark passes it plus grace); the prospect's first message answers the outreach
          (``oa``, within ``OUTREACH_WINDOW``);
        - a human reply closes the open spell: a latency (``l``), met or, after the deadline,
          breached (``b``); the first one after a customer start also marks the conversation
          replied (``r``); a reply with no open spell (a second reply, outreach) measures nothing;
        - a bot closes the open spell without a human latency: bot-resolved (``bot``), or
          breached if it came after the deadline.
        """
        ch = conv.get("ch", "dm")
        for ts, code, agent, _eid in msgs:
            if code == IN:
                if c["first"] is None:
                    c["first"], c["started"] = "in", ts
                    facts.append(["s", ts])
                reach = c.get("out")
                if reach is not None and reach["ans"] is None:
                    reach["ans"] = ts
                    if reach["ts"] + self.spec.grace_ms <= wm and ts - reach["ts"] <= self.outreach_ms:
                        facts.append(["oa", reach["ts"], reach["agent"], ts])
                if c["since"] is None:
                    c["since"] = ts
                continue
            if c["first"] is None and code == HUMAN:  # the seller wrote first: outreach; replies to the prospect are follow-ups
                c["first"], c["answered"] = "out", True
                c["out"] = {"ts": ts, "agent": agent or "unassigned", "ans": None}
                if ts + self.spec.grace_ms <= wm:
                    facts.append(["o", ts, agent or "unassigned"])
            since = c["since"]
            if since is None:
                continue  # nothing waiting: a second reply, a bot's greeting
            first = not c["answered"]
            pol = self._spell_policy(key, conv, since, first, used)
            deadline = self._deadline(key, since, pol)
            if code == BOT:
                facts.append(["bot", ts, ch] if ts <= deadline else ["b", since, deadline, ch, *pol])
            else:
                latency = (ts - since) / 1000
                hours = self._hours(key)
                business = business_seconds(since, ts, hours) if hours else None
                judged = business if pol[2] == "business" and business is not None else latency
                met = judged * 1000 <= pol[3]
                if not met:
                    facts.append(["b", since, deadline, ch, *pol])
                wd, hr = weekday_hour(ts, self._zone(key))
                facts.append(["l", since, ts, agent, int(first), ch, *pol, latency, business, int(met), f"{wd}-{hr:02d}"])
                if first and c["first"] == "in":
                    facts.append(["r", c["started"]])
                c["answered"] = True
            c["since"] = None

    def _derive(self, key: str, conv: Conversation, wm: int) -> list[list[Any]]:
        """The facts of a conversation: a function of its messages by event time (and, for a
        spell still open, of whether the watermark has passed its deadline)."""
        c = _copy_carry(conv["c"])
        facts: list[list[Any]] = []
        used: dict[str, Policy] = {}
        self._replay(key, conv, c, conv["msgs"], wm, facts, used)
        due: list[int] = []
        since = c["since"]
        conv["open"] = since
        if since is not None:
            pol = self._spell_policy(key, conv, since, not c["answered"], used)
            deadline = self._deadline(key, since, pol)
            if deadline > wm:
                due.append(deadline)
            else:  # (a reply stamped before the deadline and read later withdraws it)
                facts.append(["b", since, deadline, conv.get("ch", "dm"), *pol])
        reach = c.get("out")
        if reach is not None and reach["ts"] + self.spec.grace_ms > wm:
            due.append(reach["ts"] + self.spec.grace_ms)
        if conv["msgs"]:
            due.append(conv["msgs"][0][0] + self.spec.lateness_ms + 1)  # then it folds
        keep = conv["last"] + self.keep_ms
        if reach is not None and reach["ans"] is None:
            keep = max(keep, reach["ts"] + self.outreach_ms)
        due.append(keep + 1)  # then it is forgotten
        if used:
            conv["pol"] = used
        else:
            conv.pop("pol", None)
        conv["due"] = min(due)
        return facts

    def _sync(self, key: str, state: State, cid: str, conv: Conversation, wm: int, out: list[Output],
              win_wm: int | None = None) -> None:
        """Re-derive a conversation and apply the difference to the key's counters, histograms
        and windows: facts that no longer hold are retracted, new ones added (a breach that did
        not happen after all is withdrawn by a tombstone on the breaches topic). Then fold the
        messages no late message can precede any more into the conversation's carried state."""
        new = self._derive(key, conv, wm)
        nd = state.get("nd")
        if nd is None or conv["due"] < nd:
            state["nd"] = conv["due"]
        old = Counter(tuple(f) for f in conv["eff"])
        now = Counter(tuple(f) for f in new)
        gone, added = old - now, now - old
        at = wm if win_wm is None else max(wm, win_wm)
        for f in sorted(gone.elements(), key=repr):
            self._fact(key, state, list(f), -1, at)
        for f in sorted(added.elements(), key=repr):
            self._fact(key, state, list(f), 1, at)
        if gone:
            _drop_zeros(state)
        conv["eff"] = new
        published = {f[1]: f for f in added if f[0] == "b"}
        for since in sorted({f[1] for f in gone if f[0] == "b"} - published.keys()):
            out.append(Record(BREACHES, _breach_key(key, cid, since), None))  # withdrawn: a tombstone
        for _since, f in sorted(published.items()):
            out.append(self._breach_record(key, cid, list(f)))
            out.append(Tally("socialpulse_reply_breaches_published", ()))
        self._fold(key, conv, wm)

    def _fold(self, key: str, conv: Conversation, wm: int) -> None:
        """Messages older than the allowed lateness behind the watermark can no longer be preceded
        by an accepted one: fold them into the carried state (their facts are final)."""
        horizon = wm - self.spec.lateness_ms
        msgs = conv["msgs"]
        n = 0
        while n < len(msgs) and msgs[n][0] < horizon:
            n += 1
        if not n:
            return
        facts: list[list[Any]] = []
        self._replay(key, conv, conv["c"], msgs[:n], wm, facts, dict(conv.get("pol", {})))
        eff = Counter(tuple(f) for f in conv["eff"])
        eff.subtract(tuple(f) for f in facts)
        conv["eff"] = [list(f) for f in eff.elements()]
        del msgs[:n]
        if not msgs:
            conv.pop("ch0", None)  # no earlier message can come any more: its channel is settled

    def _fact(self, key: str, state: State, f: list[Any], n: int, wm: int) -> None:
        """Apply one fact (``n = 1``) or retract it (``n = -1``)."""
        kind = f[0]
        win = state["win"]

        def add(ts: int, part: windows.Agg) -> None:
            windows.add(win, ts, part if n > 0 else m.negate(part), self.spec, m.merge, wm)

        if kind == "s":
            add(f[1], m.empty() | {"started": 1})
        elif kind == "r":
            add(f[1], m.empty() | {"replied": 1})
        elif kind == "l":
            _, since, ts, agent, first, ch, pol_name, _target, _hours, _ms, latency, business, met, slot = f
            hists = state["hist"].get(ch)
            if hists is None:
                hists = state["hist"][ch] = _hists()
            m.hist_observe(hists["lat"], latency, n=n)
            m.hist_observe(hists["first" if first else "next"], latency, n=n)
            label = self._agent(state, agent) if n > 0 else (agent if agent in state["agent_hist"] else "other")
            m.hist_observe(state["agent_hist"].setdefault(label, m.hist_new()), latency, n=n)
            if business is not None:
                m.hist_observe(hists["business"], business, n=n)
                m.hist_observe(hists["bfirst" if first else "bnext"], business, n=n)
            part = m.empty() | {"lat": [latency], "first" if first else "next": [latency],
                                "agents": {agent: {slot: [latency]}}}
            if met:
                state["sla"].setdefault(f"{pol_name}|{ch}", {"met": 0, "breached": 0})["met"] += n
                part["met"] = 1
            add(ts, part)
        elif kind == "b":
            _, _since, deadline, ch, pol_name, *_ = f
            state["sla"].setdefault(f"{pol_name}|{ch}", {"met": 0, "breached": 0})["breached"] += n
            add(deadline, m.empty() | {"breached": 1})
        elif kind == "bot":
            _, ts, ch = f
            bots = state.setdefault("bots", {})
            bots[ch] = bots.get(ch, 0) + n
            add(ts, m.empty() | {"bot": 1})
        elif kind == "o":
            _, ts, agent = f
            cohorts.bump(state.setdefault("coh", {}), ts, STARTED, n, 2)
            windows.add_bucket(win, ts, m.empty() | {"ostart": n}, self.spec, m.merge, wm)
            reach = state.setdefault("outreach", {})
            label = self._agent(state, agent) if n > 0 else (agent if agent in reach else "other")
            reach.setdefault(label, [0, 0])[0] += n
        elif kind == "oa":
            _, ts, agent, ans = f
            cohorts.bump(state.setdefault("coh", {}), ts, ANSWERED, n, 2)
            windows.add_bucket(win, ts, m.empty() | {"oans": n}, self.spec, m.merge, wm)
            reach = state.setdefault("outreach", {})
            reach.setdefault(agent if agent in reach else "other", [0, 0])[1] += n
            m.hist_observe(state.setdefault("phist", m.hist_new(m.PROSPECT_BUCKETS)), (ans - ts) / 1000,
                           m.PROSPECT_BUCKETS, n=n)

    def _breach_record(self, key: str, cid: str, f: list[Any]) -> Record:
        _, since, deadline, ch, name, target, hours, ms = f
        platform, account = split_account_key(key)
        breach = ReplyBreach(
            platform=platform, account_id=account, conversation_id=cid, waiting_since=iso(since),
            breached_at=iso(deadline), slo_seconds=ms / 1000, policy=name, target=target, hours=hours, channel=ch,
            detail={"business_hours": hours == "business"},
        )
        return Record(BREACHES, _breach_key(key, cid, since), breach.model_dump_json().encode())

    def _agent(self, state: State, agent: str) -> str:
        """The agent's label: the MAX_AGENTS most recently active agents keep their own; the
        least recently active one makes room for a new agent (its history goes to ``other``)."""
        known = state["agents"]
        if agent in known:
            if known[-1] != agent:
                known.remove(agent)
                known.append(agent)
            return agent
        if agent == "other":
            return agent
        if len(known) >= self.max_agents:
            gone = known.pop(0)
            h = state["agent_hist"].pop(gone, None)
            if h is not None:
                m.hist_merge(state["agent_hist"].setdefault("other", m.hist_new()), h)
            reach = state.get("outreach", {}).pop(gone, None)
            if reach is not None:
                other = state["outreach"].setdefault("other", [0, 0])
                other[0] += reach[0]
                other[1] += reach[1]
        known.append(agent)
        return agent

    # -- time --------------------------------------------------------------
    def close(self, key: str, state: State, watermark: int) -> tuple[list[Output], bool]:
        """Conversations whose time has come: a wait past its deadline breaches, outreach past
        its grace counts, old messages fold, and a conversation quiet for ``CONVERSATION_TTL``
        (at least the allowed lateness) is forgotten."""
        out: list[Output] = []
        changed = False
        convs = state["convs"]
        seen = state.get("wm", 0)
        if watermark > seen:
            state["wm"] = watermark
        nd = state.get("nd")
        # (``nd``: no conversation is due before it, so a tick visits a key's conversations only
        # when one is: a busy account's thousands of them are not walked every second)
        for cid, conv in list(convs.items()) if nd is None or nd <= watermark else ():
            # like event-time timers, in their order: each at its own moment, so a decision that the
            # watermark jumped past (a day's jump after an outage) lands in the windows it would have
            step = 0
            while conv["due"] <= watermark:
                step = max(conv["due"], step + 1)
                # (windows are judged open or published at the latest watermark they were judged at)
                self._sync(key, state, cid, conv, step, out, win_wm=seen)
                changed = True
                reach = conv["c"].get("out")
                waiting_for_prospect = reach is not None and reach["ans"] is None and reach["ts"] + self.outreach_ms > step
                if conv["last"] + self.keep_ms < step and not waiting_for_prospect:
                    del convs[cid]
                    break
        if nd is None or nd <= watermark:
            due = min((conv["due"] for conv in convs.values()), default=None)
            if due is None:
                state.pop("nd", None)
            elif due != nd:
                state["nd"] = due
        changed = windows.prune(state["win"], watermark, self.spec) or changed
        published, moved = cohorts.close(state, watermark, self.spec.grace_ms, self.outreach_ms + self.spec.lateness_ms,
                                         lambda day, c: self._cohort_results(key, day, c))
        return out + published, changed or moved

    @staticmethod
    def _cohort_results(key: str, day: int, c: cohorts.Cohort) -> list[Output]:
        started, answered = c[STARTED], max(min(c[ANSWERED], c[STARTED]), 0)
        count = cohorts.result("replies", "outreach_started", key, day, c, float(started))
        if started <= 0:  # outreach taken back entirely: nothing to publish, or the day's records withdrawn
            if cohorts.revision(c) == 0:
                return []
            rate = cohorts.result("replies", "prospect_response_rate", key, day, c, 0.0)
            return [Record(RESULTS, r.key, None) for r in (count, rate)]
        out: list[Output] = [count]
        if started > 0:
            out.append(cohorts.result("replies", "prospect_response_rate", key, day, c, answered / started,
                                      answered=answered, started=started))
        return out

    def results(self, key: str, cw: windows.ClosedWindow, state: State, revision: int) -> list[Output]:
        """The results of one closed window (``revision`` 0 first, +1 per correction)."""
        platform, account = split_account_key(key)
        return list(self._results(platform, account, cw, revision))

    def _results(self, platform: str, account: str, cw: windows.ClosedWindow, revision: int = 0) -> list[Result]:
        agg, start = cw.agg, iso(cw.start)
        common = {"family": "replies", "platform": platform, "account_id": account, "window": cw.label,
                  "window_start": start, "window_end": iso(cw.end), "revision": revision}
        out: list[Result] = []

        def add(metric: str, value: float | None, *extra_key: str, **fields: Any) -> None:
            if value is not None:
                key = result_key(metric, platform, account, cw.label, start, *extra_key)
                out.append(Result(metric=metric, value=value, key=key, **common, **fields))  # type: ignore[arg-type]

        if agg["lat"]:
            s = m.summary(agg["lat"])
            add("reply_latency_seconds", s["mean"], **s)
        if agg["first"]:
            s = m.summary(agg["first"])
            add("first_response_seconds", s["mean"], **s)
        if agg.get("next"):
            s = m.summary(agg["next"])
            add("followup_reply_seconds", s["mean"], **s)
        if agg["started"]:
            add("conversations_started", agg["started"])
            add("response_rate", agg["replied"] / agg["started"], replied=agg["replied"], started=agg["started"])
        if agg["met"] or agg["breached"]:
            add("reply_sla_met", agg["met"])
            add("reply_sla_breached", agg["breached"])
        if agg.get("bot"):
            add("bot_resolved", agg["bot"])
        for agent, slots in sorted(agg["agents"].items()):
            for slot, values in sorted(slots.items()):
                wd, hr = slot.split("-")
                s = m.summary(values)
                add("agent_reply_seconds", s["mean"], agent, slot, agent_id=agent, weekday=int(wd), hour=int(hr),
                    median=s["p50"], count=s["count"])
        return out

    # -- reads -------------------------------------------------------------
    def _trailing(self, state: State, watermark: int, size: int) -> windows.Agg:
        return windows.trailing(state["win"], watermark, size, m.merge) or m.empty()

    def samples(self, key: str, state: State, watermark: int) -> Iterable[Sample]:
        platform, account = split_account_key(key)
        if platform not in PLATFORMS:
            return  # the shop's and the direct channel's keys (``all|all``, ``direct|direct``): no conversations
        a = (platform, account)
        business = self._hours(key) is not None
        for ch, hists in state["hist"].items():
            for name, h in hists.items():
                if name.startswith("b") and not business:
                    continue
                if name in ("lat", "first", "next", "business") or any(h["c"]):
                    yield HIST_NAMES[name], (platform, account, ch), m.hist_value(h)
        for agent, h in state["agent_hist"].items():
            yield "socialpulse_agent_reply_latency_seconds", (platform, account, agent), m.hist_value(h)
        for pc, sla in state["sla"].items():
            policy, _, ch = pc.partition("|")
            for result in ("met", "breached"):
                yield "socialpulse_reply_sla_total", (platform, account, ch, policy, result), float(sla[result])
        for ch, n in state.get("bots", {}).items():
            yield "socialpulse_bot_resolved_total", (platform, account, ch), float(n)
        for agent, (started, answered) in state.get("outreach", {}).items():
            yield "socialpulse_outreach_conversations_total", (platform, account, agent), float(started)
            yield "socialpulse_outreach_answered_total", (platform, account, agent), float(answered)
        if "phist" in state:
            yield "socialpulse_prospect_response_seconds", a, m.hist_value(state["phist"], m.PROSPECT_BUCKETS)
        yield "socialpulse_reply_clamped_total", a, float(state["clamped"])
        waiting = [c["open"] for c in state["convs"].values() if c["open"] is not None]
        yield "socialpulse_awaiting_reply", a, float(len(waiting))
        if waiting:
            yield "socialpulse_oldest_awaiting_reply_timestamp_seconds", a, min(waiting) / 1000
        for size in self.spec.trailing_ms:
            label = self.spec.label(size)
            agg = self._trailing(state, watermark, size)
            if agg["lat"]:
                qs = [(str(q), m.quantile(agg["lat"], q) or 0.0) for q in QUANTILES]
                yield "socialpulse_reply_latency_window_seconds", (platform, account, label), (qs, len(agg["lat"]), float(sum(agg["lat"])))
                yield "socialpulse_reply_latency_window_mean_seconds", (platform, account, label), sum(agg["lat"]) / len(agg["lat"])
            yield "socialpulse_conversations_started", (platform, account, label), float(agg["started"])
            if agg["started"]:
                yield "socialpulse_response_rate", (platform, account, label), agg["replied"] / agg["started"]
            if agg.get("ostart") or "outreach" in state:
                yield "socialpulse_outreach_started", (platform, account, label), float(agg.get("ostart", 0))
            if agg.get("ostart", 0) > 0:
                rate = max(min(agg.get("oans", 0), agg["ostart"]), 0) / agg["ostart"]
                yield "socialpulse_prospect_response_rate", (platform, account, label), rate

    def view(self, key: str, state: State, watermark: int) -> dict[str, Any]:
        waiting = [c["open"] for c in state["convs"].values() if c["open"] is not None]
        sla: dict[str, dict[str, int]] = {}
        for pc, counts in state["sla"].items():
            total = sla.setdefault(pc.partition("|")[0], {"met": 0, "breached": 0})
            total["met"] += counts["met"]
            total["breached"] += counts["breached"]
        out: dict[str, Any] = {
            "awaiting_reply": len(waiting),
            "oldest_awaiting_since": iso(min(waiting)) if waiting else None,
            "sla": {"met": sum(v["met"] for v in sla.values()), "breached": sum(v["breached"] for v in sla.values())},
            "sla_by_policy": sla,
            "sla_by_policy_and_channel": {pc: dict(v) for pc, v in sorted(state["sla"].items())},
            "bot_resolved": dict(state.get("bots", {})),
            "outreach": {agent: {"started": s, "answered": a} for agent, (s, a) in sorted(state.get("outreach", {}).items())},
            "outreach_cohorts": {iso(day): {"started": c[STARTED], "answered": c[ANSWERED],
                                            "revision": cohorts.revision(c) if cohorts.revision(c) >= 0 else None}
                                 for day, c in sorted(state.get("coh", {}).items()) if c[STARTED] or c[ANSWERED]},
            "clamped_negative_latencies": state["clamped"],
            "slo_seconds": self.slo_ms / 1000,
            "business_hours": self._hours(key) is not None,
            "windows": {},
        }
        for size in self.spec.trailing_ms:
            agg = self._trailing(state, watermark, size)
            out["windows"][self.spec.label(size)] = {
                "reply_latency_seconds": m.summary(agg["lat"]),
                "first_response_seconds": m.summary(agg["first"]),
                "followup_reply_seconds": m.summary(agg.get("next", [])),
                "conversations_started": agg["started"],
                "replied": agg["replied"],
                "response_rate": agg["replied"] / agg["started"] if agg["started"] else None,
                "sla_met": agg["met"],
                "sla_breached": agg["breached"],
                "bot_resolved": agg.get("bot", 0),
                "outreach_started": agg.get("ostart", 0),
                "prospect_response_rate": (max(min(agg.get("oans", 0), agg["ostart"]), 0) / agg["ostart"]
                                           if agg.get("ostart", 0) > 0 else None),
                "agents": {
                    agent: {slot: {"mean": m.summary(v)["mean"], "median": m.quantile(v, 0.5), "count": len(v)}
                            for slot, v in sorted(slots.items())}
                    for agent, slots in sorted(agg["agents"].items())
                },
            }
        return out


#: message codes, in the order that breaks a tie of equal ``ts``: the customer's message, then
#: a human reply, then a bot's (then the event ids)
IN, HUMAN, BOT = 0, 1, 2


def _order(msg: list[Any]) -> tuple[int, int, str]:
    return msg[0], msg[1], msg[3]


def _new_conv() -> Conversation:
    return {"c": {"first": None, "started": None, "answered": False, "since": None}, "msgs": [], "eff": [],
            "last": 0, "open": None, "due": 0}


def _copy_carry(c: Carry) -> Carry:
    out: Carry = dict(c)  # type: ignore[assignment]
    if "out" in c:
        out["out"] = dict(c["out"])
    return out


def _drop_zeros(state: State) -> None:
    """Counters and histograms a retraction brought back to zero go, as if never counted (the
    same series whatever order the messages came in)."""
    for name in ("sla", "bots", "outreach"):
        counts: dict[str, Any] = state.get(name) or {}  # type: ignore[assignment]
        for k in [k for k, v in counts.items() if not any(v.values() if isinstance(v, dict) else
                                                          (v if isinstance(v, list) else [v]))]:
            del counts[k]
        if not counts and name != "sla":
            state.pop(name, None)  # type: ignore[misc]
    for ch in [ch for ch, hists in state["hist"].items() if not any(any(h["c"]) for h in hists.values())]:
        del state["hist"][ch]
    for agent in [a for a, h in state["agent_hist"].items() if not any(h["c"])]:
        del state["agent_hist"][agent]
    if "phist" in state and not any(state["phist"]["c"]):
        del state["phist"]
    coh = state.get("coh")
    if coh:  # a day never published whose outreach was all taken back: as if it never had any
        for day in [d for d, c in coh.items() if not (c[STARTED] or c[ANSWERED]) and cohorts.revision(c) < 0]:
            del coh[day]
        if not coh:
            del state["coh"]


def _breach_key(key: str, cid: str, since: int) -> str:
    return f"{key}|{cid}|{iso(since)}"


def _upgrade(old: dict[str, Any]) -> Conversation:
    """A conversation as the release before event-time replies wrote it: its state becomes the
    carried state (a breach already counted stays counted once)."""
    conv = _new_conv()
    conv["last"] = old.get("last", 0)
    ch = old.get("ch", "dm")
    conv["ch"] = ch
    reach = old.get("out")
    since = old.get("since")
    if reach is not None and not reach.get("counted"):  # not counted yet: replay its opener (and answer)
        conv["msgs"] = [[reach["ts"], HUMAN, reach["agent"], "~opener"]]
        if reach.get("ans") is not None:
            conv["msgs"].append([reach["ans"], IN, "", "~answer"])
        return conv
    conv["c"] = {"first": "out" if reach else ("in" if old.get("started") is not None else None),
                 "started": old.get("started"), "answered": bool(old.get("answered")), "since": since}
    if reach is not None:
        conv["c"]["out"] = {"ts": reach["ts"], "agent": reach["agent"], "ans": reach.get("ans")}
    conv["open"] = since
    if since is not None and old.get("pol"):
        pol = old["pol"]
        conv["pol"] = {f"{since}|{int(not old.get('answered'))}|{ch}": pol}
        if old.get("breached") and old.get("deadline") is not None:
            conv["eff"] = [["b", since, old["deadline"], ch, *pol]]
    return conv


def _account_book(settings: Any) -> Callable[[str], AccountSettings | None]:
    """The account settings of the process (topic, file and environment: ``streams.accounts``)."""
    return book_for(settings).get
