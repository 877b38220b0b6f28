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

A conversation: ``since`` (waiting_since of the open spell, or None), ``deadline`` (when
the open spell breaches its policy's target), ``pol`` (that policy: name, target,
calendar or business hours, target ms), ``breached``, ``started`` (first inbound),
``answered`` (had its first human reply), ``last_reply``, ``last`` (latest activity),
``pending`` (recent outbound messages that found no open spell: an inbound that arrives
late but is older pairs with them), ``ch`` (its channel) and ``out`` (outreach: the
seller wrote first).

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

from collections.abc import Callable, Iterable
from typing import Any, NotRequired, TypedDict

from schemas.accounts import AccountSettings
from schemas.events import PLATFORMS, Direction, Event, Message, of_account, split_account_key
from schemas.results import ReplyBreach, Result, result_key

from .. import cohorts, windows
from ..accounts import book_for
from ..family import Gauge, Output, Record, Route, Sample, Tally
from ..settings import SettingsError
from ..topics import BREACHES
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


class Conversation(TypedDict):
    """One conversation of a key (its changelog JSON has the same keys)."""

    since: int | None  # when the current wait began (the customer's first unanswered message)
    deadline: int | None  # when that wait breaches its policy's target (business hours applied)
    breached: bool
    started: int | None  # its first inbound message
    answered: bool  # had its first human reply (outreach: the seller wrote first)
    last_reply: int  # the latest outbound reply
    last: int  # the latest message either way
    pending: list[list[Any]]  # outbound replies seen before the message they answer: [ts, agent]
    judge: NotRequired[int]  # the watermark at which a due breach is judged
    closed: NotRequired[dict[str, Any]]  # the last measured reply (to correct it if late data moves it)
    ch: NotRequired[str]  # channel (dm when absent)
    pol: NotRequired[Policy]  # the open spell's policy
    out: NotRequired[dict[str, Any]]  # outreach: {"ts", "agent", "counted", "ans"}


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
            ("platform", "account", "agent"), "histogram",
        ),
        Gauge(
            "socialpulse_reply_latency_window_seconds",
            "Reply latency quantiles (0.5, 0.9, 0.99) of replies in the trailing window.",
            ("platform", "account", "window"), "summary",
        ),
        Gauge("socialpulse_reply_latency_window_mean_seconds", "Mean reply latency over the trailing window.", _W),
        Gauge("socialpulse_response_rate", "Of conversations started in the window, the fraction replied so far.", _W),
        Gauge("socialpulse_conversations_started", "Conversations whose first inbound message lies in the window.", _W),
        Gauge("socialpulse_awaiting_reply", "Conversations waiting for a reply now.", _A),
        Gauge(
            "socialpulse_oldest_awaiting_reply_timestamp_seconds",
            "waiting_since of the oldest open spell (age: time() - value).", _A,
        ),
        Gauge("socialpulse_reply_sla_total", "Waiting spells by SLA result (met, breached), channel and policy.",
              ("platform", "account", "channel", "policy", "result"), "counter"),
        Gauge("socialpulse_reply_clamped_total", "Negative reply latencies (clock skew) clamped to 0.", _A, "counter"),
        Gauge("socialpulse_bot_resolved_total", "Waits a bot ended without a human reply.", _AC, "counter"),
        Gauge("socialpulse_outreach_conversations_total", "Outreach conversations (the seller wrote first), by the "
              "agent who wrote.", ("platform", "account", "agent"), "counter"),
        Gauge("socialpulse_outreach_answered_total", "Outreach conversations the prospect answered within "
              "OUTREACH_WINDOW.", ("platform", "account", "agent"), "counter"),
        Gauge("socialpulse_prospect_response_seconds", "Time from the seller's first message to the prospect's "
              "answer (answered outreach).", _A, "histogram"),
        Gauge("socialpulse_outreach_started", "Outreach conversations started in the trailing window.", _W),
        Gauge("socialpulse_prospect_response_rate", "Of the outreach started in the trailing window, the share the "
              "prospect has answered so far.", _W),
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
        # a replied conversation is kept while a late message could still change it
        self.keep_ms = spec.grace_ms + spec.bucket_ms
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
        return state

    def windowed(self, state: State) -> Windowed:
        return state["win"]  # type: ignore[no-any-return]

    def is_empty(self, state: State) -> bool:
        # cumulative histograms and counters must survive: keep a key that ever replied
        return (windows.is_empty(state["win"]) and not state["convs"] and not state["hist"] and not state["sla"]
                and not state.get("bots") and not state.get("outreach") and not state.get("coh"))

    # -- events ------------------------------------------------------------
    def apply(self, key: str, state: State, events: list[Event], watermark: int) -> list[Output]:
        out: list[Output] = []
        for event in events:
            assert isinstance(event, Message)
            conv = state["convs"].setdefault(event.conversation_id, _new_conv())
            conv["last"] = max(conv["last"], event.ts)
            if event.channel != "dm" and "ch" not in conv:
                conv["ch"] = event.channel
            if event.direction == Direction.inbound:
                self._inbound(key, state, conv, event, watermark, out)
            elif event.automated:
                continue  # auto-acknowledgements never stop the clock
            elif event.bot:
                self._bot(state, conv, event.ts, watermark)
            else:
                agent = event.agent_id or "unassigned"
                if conv["since"] is not None:
                    self._reply(key, state, conv, event.conversation_id, event.ts, agent, watermark, out)
                else:  # outreach or a second reply: no latency (unless an older inbound turns up)
                    if conv["started"] is None and "out" not in conv:
                        conv["out"] = {"ts": event.ts, "agent": agent, "counted": False, "ans": None}
                        conv["answered"] = True  # the seller spoke first: replies to the prospect are follow-ups
                    conv["pending"].append([event.ts, agent])
        return out

    def _inbound(self, key: str, state: State, conv: Conversation, event: Message, wm: int, out: list[Output]) -> None:
        ts = event.ts
        reach = conv.get("out")
        if reach is not None:
            if ts < reach["ts"]:  # the customer wrote first after all: not outreach
                self._not_outreach(state, conv, reach, wm)
            elif reach["ans"] is None or ts < reach["ans"]:
                first_answer = reach["ans"] is None
                reach["ans"] = ts
                if reach["counted"] and first_answer:
                    self._answered(state, reach, wm)
        if conv["started"] is None or ts < conv["started"]:
            if conv["started"] is None and "out" not in conv:
                windows.add(state["win"], ts, m.empty() | {"started": 1}, self.spec, m.merge, wm)
            conv["started"] = ts
        if ts <= conv["last_reply"]:
            closed = conv.get("closed")
            if closed and closed["prev"] < ts < closed["since"]:
                self._extend(state, closed, ts, wm)  # it belonged to the spell that reply closed
            return  # otherwise an older message, already answered
        pending = sorted((p for p in conv["pending"] if p[0] >= ts), key=lambda p: p[0])
        if pending:  # the reply came in before this (older) inbound: pair them
            reply_ts, agent = pending[0]
            conv["pending"].remove(pending[0])
            if conv["since"] is None or ts < conv["since"]:
                conv["since"] = ts
                conv["pol"] = self._policy(key, conv.get("ch", "dm"), not conv["answered"])
            self._reply(key, state, conv, event.conversation_id, reply_ts, agent, wm, out)
            return
        since = conv["since"]
        if since is None:
            since, conv["breached"] = ts, False
            conv.pop("judge", None)
            conv["pol"] = self._policy(key, conv.get("ch", "dm"), not conv["answered"])
        elif ts < since:
            since = ts  # a late, older inbound moves the start of the spell back
        conv["since"] = since
        deadline = conv["deadline"] = self._deadline(key, since, conv)
        if deadline <= wm and "judge" not in conv:
            # a spell that arrives already past its deadline (a late source) is judged only
            # after a grace of its own, so the reply that comes with it can still count as met
            conv["judge"] = wm + self.spec.grace_ms

    def _deadline(self, key: str, since: int, conv: Conversation) -> int:
        pol = conv.get("pol") or self._policy(key, conv.get("ch", "dm"), not conv["answered"])
        hours = self._hours(key) if pol[2] == "business" else None
        return business_deadline(since, pol[3] / 1000, hours) if hours else since + int(pol[3])

    def _bot(self, state: State, conv: Conversation, ts: int, wm: int) -> None:
        """A bot answered: the wait ends without a human reply time."""
        if conv["since"] is None or ts < conv["since"]:
            return  # nothing waiting (a bot's greeting, or a message before the wait)
        if not conv["breached"]:
            bots = state.setdefault("bots", {})
            ch = conv.get("ch", "dm")
            bots[ch] = bots.get(ch, 0) + 1
            windows.add(state["win"], ts, m.empty() | {"bot": 1}, self.spec, m.merge, wm)
        conv["since"], conv["deadline"], conv["breached"] = None, None, False
        conv.pop("judge", None)
        conv.pop("pol", None)
        conv["last_reply"] = max(conv["last_reply"], ts)

    def _reply(
        self, key: str, state: State, conv: Conversation, cid: str, reply_ts: int, agent: str,
        wm: int, out: list[Output],
    ) -> None:
        since = conv["since"]
        assert since is not None  # a reply is measured against a wait
        latency = (reply_ts - since) / 1000
        if latency < 0:
            state["clamped"] += 1
            latency = 0.0
        agent = self._agent(state, agent)
        ch = conv.get("ch", "dm")
        pol = conv.get("pol") or self._policy(key, ch, not conv["answered"])
        hists = state["hist"].get(ch)
        if hists is None:
            hists = state["hist"][ch] = _hists()
        first = not conv["answered"]
        m.hist_observe(hists["lat"], latency)
        m.hist_observe(hists["first" if first else "next"], latency)
        m.hist_observe(state["agent_hist"].setdefault(agent, m.hist_new()), latency)
        hours = self._hours(key)
        business = None
        if hours:
            business = business_seconds(since, max(reply_ts, since), hours)
            m.hist_observe(hists["business"], business)
            m.hist_observe(hists["bfirst" if first else "bnext"], business)
        judged = business if pol[2] == "business" and business is not None else latency
        wd, hr = weekday_hour(reply_ts, self._zone(key))
        part = m.empty() | {"lat": [latency], "agents": {agent: {f"{wd}-{hr:02d}": [latency]}}}
        if first:
            conv["answered"] = True
            part["first"] = [latency]
            windows.add(state["win"], conv["started"] or since, m.empty() | {"replied": 1}, self.spec, m.merge, wm)
        else:
            part["next"] = [latency]
        if not conv["breached"]:
            if judged * 1000 <= pol[3]:
                sla = state["sla"].setdefault(f"{pol[0]}|{ch}", {"met": 0, "breached": 0})
                sla["met"] += 1
                part["met"] = 1
            else:  # replied too late, before the watermark had noticed: the breach is now
                self._breach(key, state, conv, cid, conv["deadline"] or since + int(pol[3]), wm, out)
        windows.add(state["win"], reply_ts, part, self.spec, m.merge, wm)
        conv["closed"] = {"since": since, "reply": reply_ts, "latency": latency, "agent": agent,
                          "prev": conv["last_reply"], "first": first, "slot": f"{wd}-{hr:02d}", "ch": ch}
        conv["since"], conv["deadline"], conv["breached"] = None, None, False
        conv.pop("judge", None)
        conv.pop("pol", None)
        conv["last_reply"] = max(conv["last_reply"], reply_ts)

    def _extend(self, state: State, closed: dict[str, Any], ts: int, wm: int) -> None:
        """An inbound that arrives after the reply that answered it, but is older than the
        spell's start: the spell started earlier, so its latency grows by the difference.

        Histogram sums and window quantiles are corrected exactly; a count moves bucket
        only in the rare case the correction crosses a bucket edge (a Prometheus counter
        reset for that bucket), and an SLA result already counted stays as it was.
        """
        old = closed["latency"]
        new = max((closed["reply"] - ts) / 1000, 0.0)
        ch_hists = state["hist"][closed.get("ch", "dm")]
        hists = [ch_hists["lat"], ch_hists["first" if closed["first"] else "next"]]
        hists.append(state["agent_hist"].get(closed["agent"]) or state["agent_hist"].setdefault("other", m.hist_new()))
        for h in hists:
            m.hist_move(h, old, new)
        replace = {"lat": True, "first": closed["first"], "next": not closed["first"]}
        for agg in windows.containing(state["win"], closed["reply"], self.spec, wm):
            for name, wanted in replace.items():
                if wanted and old in agg.get(name, ()):
                    agg[name][agg[name].index(old)] = new
            slot = agg["agents"].get(closed["agent"], {}).get(closed["slot"])
            if slot and old in slot:
                slot[slot.index(old)] = new
        closed["since"], closed["latency"] = ts, new

    def _breach(self, key: str, state: State, conv: Conversation, cid: str, at: int, wm: int, out: list[Output]) -> None:
        since = conv["since"]
        assert since is not None  # only a wait breaches
        ch = conv.get("ch", "dm")
        pol = conv.get("pol") or self._policy(key, ch, not conv["answered"])
        conv["breached"] = True
        sla = state["sla"].setdefault(f"{pol[0]}|{ch}", {"met": 0, "breached": 0})
        sla["breached"] += 1
        windows.add(state["win"], at, m.empty() | {"breached": 1}, self.spec, m.merge, wm)
        platform, account = split_account_key(key)
        breach = ReplyBreach(
            platform=platform, account_id=account, conversation_id=cid, waiting_since=iso(since),
            breached_at=iso(at), slo_seconds=pol[3] / 1000, policy=pol[0], target=pol[1], hours=pol[2], channel=ch,
            detail={"business_hours": pol[2] == "business"},
        )
        out.append(Record(BREACHES, f"{key}|{cid}|{breach.waiting_since}", breach.model_dump_json().encode()))
        out.append(Tally("socialpulse_reply_breaches_published", ()))

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

    # -- outreach ------------------------------------------------------------
    def _count_outreach(self, state: State, reach: dict[str, Any], wm: int) -> None:
        reach["counted"] = True
        reach["agent"] = self._agent(state, reach["agent"])
        cohorts.bump(state.setdefault("coh", {}), reach["ts"], STARTED, 1, 2)
        windows.add_bucket(state["win"], reach["ts"], m.empty() | {"ostart": 1}, self.spec, m.merge, wm)
        state.setdefault("outreach", {}).setdefault(reach["agent"], [0, 0])[0] += 1
        if reach["ans"] is not None:
            self._answered(state, reach, wm)

    def _answered(self, state: State, reach: dict[str, Any], wm: int, n: int = 1) -> None:
        """The prospect answered a counted outreach (``n = -1``: take it back)."""
        took = reach["ans"] - reach["ts"]
        if took > self.outreach_ms:
            return  # answered after the window: not a response to the outreach
        cohorts.bump(state.setdefault("coh", {}), reach["ts"], ANSWERED, n, 2)
        windows.add_bucket(state["win"], reach["ts"], m.empty() | {"oans": n}, self.spec, m.merge, wm)
        agent = reach["agent"] if reach["agent"] in state.get("outreach", {}) else "other"
        state.setdefault("outreach", {}).setdefault(agent, [0, 0])[1] += n
        if n > 0:
            m.hist_observe(state.setdefault("phist", m.hist_new(m.PROSPECT_BUCKETS)), took / 1000, m.PROSPECT_BUCKETS)

    def _not_outreach(self, state: State, conv: Conversation, reach: dict[str, Any], wm: int) -> None:
        """An older customer message turned up: the conversation was not outreach."""
        if reach["counted"]:  # (it came later than grace: take the counts back)
            if reach["ans"] is not None:
                self._answered(state, reach, wm, -1)
            cohorts.bump(state.setdefault("coh", {}), reach["ts"], STARTED, -1, 2)
            windows.add_bucket(state["win"], reach["ts"], m.empty() | {"ostart": -1}, self.spec, m.merge, wm)
            agent = reach["agent"] if reach["agent"] in state.get("outreach", {}) else "other"
            state.setdefault("outreach", {}).setdefault(agent, [0, 0])[0] -= 1
        del conv["out"]
        conv["answered"] = False

    # -- time --------------------------------------------------------------
    def close(self, key: str, state: State, watermark: int) -> tuple[list[Output], bool]:
        out: list[Output] = []
        changed = False
        convs = state["convs"]
        for cid, conv in list(convs.items()):
            deadline = conv["deadline"]
            if (conv["since"] is not None and not conv["breached"] and deadline is not None and deadline <= watermark
                    and conv.get("judge", 0) <= watermark):
                self._breach(key, state, conv, cid, deadline, watermark, out)
                changed = True
            reach = conv.get("out")
            if reach is not None and not reach["counted"] and reach["ts"] + self.spec.grace_ms <= watermark:
                self._count_outreach(state, reach, watermark)  # no older customer message came: outreach
                changed = True
            if conv["pending"]:
                kept = [p for p in conv["pending"] if p[0] >= watermark - self.keep_ms]
                if len(kept) != len(conv["pending"]):
                    conv["pending"], changed = kept, True
            idle = conv["last"] < watermark - self.keep_ms
            waiting_for_prospect = reach is not None and (
                not reach["counted"] or (reach["ans"] is None and reach["ts"] + self.outreach_ms > watermark))
            if (conv["since"] is None and idle and not conv["pending"] and not waiting_for_prospect) or (
                conv["since"] is not None and conv["since"] < watermark - self.ttl_ms
            ):
                del convs[cid]
                changed = True
        changed = windows.prune(state["win"], watermark, self.spec) or changed
        published, moved = cohorts.close(state, watermark, self.spec.grace_ms, self.outreach_ms + self.spec.lateness_ms,
                                         lambda day, c: self._cohort_results(key, day, c))
        return out + published, changed or moved

    @staticmethod
    def _cohort_results(key: str, day: int, c: cohorts.Cohort) -> list[Output]:
        started, answered = c[STARTED], max(min(c[ANSWERED], c[STARTED]), 0)
        out: list[Output] = [cohorts.result("replies", "outreach_started", key, day, c, float(started))]
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
        waiting = [c["since"] for c in state["convs"].values() if c["since"] is not None]
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
        waiting = [c["since"] for c in state["convs"].values() if c["since"] is not None]
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
                                 for day, c in sorted(state.get("coh", {}).items())},
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


def _new_conv() -> Conversation:
    return {"since": None, "deadline": None, "breached": False, "started": None, "answered": False,
            "last_reply": 0, "last": 0, "pending": []}


def _account_book(settings: Any) -> Callable[[str], AccountSettings | None]:
    """The account settings of the process (topic, file and environment: ``streams.accounts``)."""
    return book_for(settings).get
