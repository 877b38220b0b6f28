"""Replies family: how fast customers get an answer, per platform account.

State per key (``platform|account``):

    {"win": windowed aggregates (replies.metrics),
     "convs": {conversation_id: conversation},
     "hist": {"lat": h, "first": h, "business": h}, "agent_hist": {agent: h},
     "sla": {"met": n, "breached": n}, "clamped": n, "agents": [agent, ...]}

A conversation: ``since`` (waiting_since of the open spell, or None), ``deadline``
(when the open spell breaches), ``breached`` (its breach is already counted),
``started`` (first inbound), ``answered`` (had its first reply), ``last_reply``,
``last`` (latest activity) and ``pending`` (recent outbound messages that found
no open spell: an inbound that arrives late but is older pairs with them).

Conversations live with their account, so one worker owns an account's
histograms and its breach counter (and ``sum`` across workers stays exact).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NotRequired, TypedDict, cast

from schemas.events import Direction, Event, Message, of_account, split_account_key
from schemas.results import ReplyBreach, Result, result_key

from .. import windows
from ..family import Gauge, Output, Record, Route, Sample, Tally
from ..settings import SettingsError
from ..topics import BREACHES
from ..windows import Windowed, WindowSpec, iso
from . import metrics as m
from .hours import BusinessHours, business_deadline, business_seconds, parse_hours, weekday_hour, zone

__all__ = ["Replies"]

_A = ("platform", "account")
_W = ("platform", "account", "window")
QUANTILES = (0.5, 0.9, 0.99)


class Conversation(TypedDict):
    """One conversation of a key (its changelog JSON has the same keys)."""

    since: int | None  # when the current wait began (the customer's first unanswered message)
    deadline: int | None  # when that wait breaches the SLO (business hours applied)
    breached: bool
    started: int | None  # its first inbound message
    answered: bool
    last_reply: int  # the latest outbound reply
    last: int  # the latest message either way
    pending: list[list[Any]]  # outbound replies seen before the message they answer: [ts, agent]
    judge: NotRequired[int]  # the watermark at which a due breach is judged
    closed: NotRequired[dict[str, Any]]  # the last measured reply (to correct it if late data moves it)


class State(TypedDict):
    """A key's replies slot (its changelog JSON has the same keys)."""

    win: Windowed  # aggregates of ``replies.metrics``
    convs: dict[str, Conversation]
    hist: dict[str, dict[str, Any]]  # lifetime histograms (``metrics.hist_new``): lat, first, business
    agent_hist: dict[str, dict[str, Any]]
    sla: dict[str, int]  # met, breached
    clamped: int  # replies stamped before the message they answer (latency clamped to 0)
    agents: list[str]  # the first MAX_AGENTS agents seen keep their own label


class Replies:
    name = "replies"
    topics = frozenset({"messages"})
    routes = (Route("messages", of_account),)
    counters: tuple[Gauge, ...] = (
        Gauge("socialpulse_reply_breaches_published", "Reply-SLA breach records published.", (), "counter"),
    )
    SLO = Gauge("socialpulse_reply_slo_seconds", "The reply SLO (SOCIALPULSE_REPLY_SLO).", ())
    gauges: tuple[Gauge, ...] = (
        Gauge("socialpulse_reply_latency_seconds", "Reply latency: reply ts minus waiting_since.", _A, "histogram"),
        Gauge("socialpulse_first_response_seconds", "First response time of conversations.", _A, "histogram"),
        Gauge(
            "socialpulse_agent_reply_latency_seconds", "Reply latency per agent (capped; the rest as 'other').",
            ("platform", "account", "agent"), "histogram",
        ),
        Gauge(
            "socialpulse_reply_business_latency_seconds",
            "Reply latency in business seconds (accounts with business hours only).", _A, "histogram",
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
        Gauge("socialpulse_reply_sla_total", "Waiting spells by SLA result (met, breached).", ("platform", "account", "result"), "counter"),
        Gauge("socialpulse_reply_clamped_total", "Negative reply latencies (clock skew) clamped to 0.", _A, "counter"),
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
    ) -> None:
        self.spec = spec
        self.slo_ms = slo_ms
        self.zones = {k: zone(v) for k, v in (timezones or {}).items()}
        self.hours = hours or {}
        self.max_agents = max_agents
        self.ttl_ms = conversation_ttl_ms
        # a replied conversation is kept while a late message could still change it
        self.keep_ms = spec.grace_ms + spec.bucket_ms

    @classmethod
    def from_settings(cls, settings: Any, spec: WindowSpec) -> Replies:
        zones = settings.account_timezones
        try:
            hours = {k: parse_hours(v, zones.get(k, "UTC")) for k, v in settings.business_hours.items()}
        except ValueError as exc:
            raise SettingsError(f"bad setting:\n  SOCIALPULSE_BUSINESS_HOURS: {exc}") from None
        return cls(spec, settings.reply_slo, zones, hours, settings.max_agents, settings.conversation_ttl)

    def constants(self) -> Iterable[tuple[Gauge, float]]:
        return ((self.SLO, self.slo_ms / 1000),)

    # -- state -------------------------------------------------------------
    def new_state(self) -> State:
        return {
            "win": windows.new_windowed(), "convs": {}, "hist": {"lat": m.hist_new(), "first": m.hist_new(),
            "business": m.hist_new()}, "agent_hist": {}, "sla": {"met": 0, "breached": 0}, "clamped": 0, "agents": [],
        }

    def decode_state(self, raw: dict[str, Any]) -> State:
        return cast(State, raw | {"win": windows.decode_windowed(raw["win"])})

    def windowed(self, state: State) -> Windowed:
        return state["win"]  # type: ignore[no-any-return]

    def is_empty(self, state: State) -> bool:
        # cumulative histograms and counters must survive: keep a key that ever replied
        return windows.is_empty(state["win"]) and not state["convs"] and not state["hist"]["lat"]["sum"] and not any(state["sla"].values())

    # -- events ------------------------------------------------------------
    def apply(self, key: str, state: State, events: list[Event], watermark: int) -> list[Output]:
        out: list[Output] = []
        for event in events:
            assert isinstance(event, Message)
            conv = state["convs"].setdefault(event.conversation_id, _new_conv())
            conv["last"] = max(conv["last"], event.ts)
            if event.direction == Direction.inbound:
                self._inbound(key, state, conv, event, watermark, out)
            elif not event.automated:  # bots and auto-acknowledgements never stop the clock
                agent = event.agent_id or "unassigned"
                if conv["since"] is not None:
                    self._reply(key, state, conv, event.conversation_id, event.ts, agent, watermark, out)
                else:  # proactive outreach or a second reply: no latency (unless an older inbound turns up)
                    conv["pending"].append([event.ts, agent])
        return out

    def _inbound(self, key: str, state: State, conv: Conversation, event: Message, wm: int, out: list[Output]) -> None:
        ts = event.ts
        if conv["started"] is None or ts < conv["started"]:
            if conv["started"] is None:
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
            self._reply(key, state, conv, event.conversation_id, reply_ts, agent, wm, out)
            return
        since = conv["since"]
        if since is None:
            since, conv["breached"] = ts, False
            conv.pop("judge", None)
        elif ts < since:
            since = ts  # a late, older inbound moves the start of the spell back
        conv["since"] = since
        deadline = conv["deadline"] = self._deadline(key, since)
        if deadline <= wm and "judge" not in conv:
            # a spell that arrives already past its deadline (a late source) is judged only
            # after a grace of its own, so the reply that comes with it can still count as met
            conv["judge"] = wm + self.spec.grace_ms

    def _deadline(self, key: str, since: int) -> int:
        hours = self.hours.get(key)
        return business_deadline(since, self.slo_ms / 1000, hours) if hours else since + self.slo_ms

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
        m.hist_observe(state["hist"]["lat"], latency)
        m.hist_observe(state["agent_hist"].setdefault(agent, m.hist_new()), latency)
        hours = self.hours.get(key)
        judged = latency
        if hours:
            judged = business_seconds(since, max(reply_ts, since), hours)
            m.hist_observe(state["hist"]["business"], judged)
        wd, hr = weekday_hour(reply_ts, self.zones.get(key) or (hours.tz if hours else zone("UTC")))
        part = m.empty() | {"lat": [latency], "agents": {agent: {f"{wd}-{hr:02d}": [latency]}}}
        if not conv["answered"]:
            conv["answered"] = True
            m.hist_observe(state["hist"]["first"], latency)
            part["first"] = [latency]
            windows.add(state["win"], conv["started"] or since, m.empty() | {"replied": 1}, self.spec, m.merge, wm)
        if not conv["breached"]:
            if judged * 1000 <= self.slo_ms:
                state["sla"]["met"] += 1
                part["met"] = 1
            else:  # replied too late, before the watermark had noticed: the breach is now
                self._breach(key, state, conv, cid, conv["deadline"] or since + self.slo_ms, wm, out)
        windows.add(state["win"], reply_ts, part, self.spec, m.merge, wm)
        conv["closed"] = {"since": since, "reply": reply_ts, "latency": latency, "agent": agent,
                          "prev": conv["last_reply"], "first": bool(part["first"]), "slot": f"{wd}-{hr:02d}"}
        conv["since"], conv["deadline"], conv["breached"] = None, None, False
        conv.pop("judge", None)
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
        hists = [state["hist"]["lat"], state["agent_hist"][closed["agent"]]]
        if closed["first"]:
            hists.append(state["hist"]["first"])
        for h in hists:
            m.hist_move(h, old, new)
        replace = {"lat": True, "first": closed["first"]}
        for agg in windows.containing(state["win"], closed["reply"], self.spec, wm):
            for name, wanted in replace.items():
                if wanted and old in agg[name]:
                    agg[name][agg[name].index(old)] = new
            slot = agg["agents"].get(closed["agent"], {}).get(closed["slot"])
            if slot and old in slot:
                slot[slot.index(old)] = new
        closed["since"], closed["latency"] = ts, new

    def _breach(self, key: str, state: State, conv: Conversation, cid: str, at: int, wm: int, out: list[Output]) -> None:
        since = conv["since"]
        assert since is not None  # only a wait breaches
        conv["breached"] = True
        state["sla"]["breached"] += 1
        windows.add(state["win"], at, m.empty() | {"breached": 1}, self.spec, m.merge, wm)
        platform, account = split_account_key(key)
        breach = ReplyBreach(
            platform=platform, account_id=account, conversation_id=cid, waiting_since=iso(since),
            breached_at=iso(at), slo_seconds=self.slo_ms / 1000,
            detail={"business_hours": key in self.hours},
        )
        out.append(Record(BREACHES, f"{key}|{cid}|{breach.waiting_since}", breach.model_dump_json().encode()))
        out.append(Tally("socialpulse_reply_breaches_published", ()))

    def _agent(self, state: State, agent: str) -> str:
        known = state["agents"]
        if agent in known:
            return agent
        if len(known) < self.max_agents:
            known.append(agent)
            return agent
        return "other"

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
            if conv["pending"]:
                kept = [p for p in conv["pending"] if p[0] >= watermark - self.keep_ms]
                if len(kept) != len(conv["pending"]):
                    conv["pending"], changed = kept, True
            idle = conv["last"] < watermark - self.keep_ms
            if (conv["since"] is None and idle and not conv["pending"]) or (
                conv["since"] is not None and conv["since"] < watermark - self.ttl_ms
            ):
                del convs[cid]
                changed = True
        changed = windows.prune(state["win"], watermark, self.spec) or changed
        return out, changed

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
        if agg["started"]:
            add("conversations_started", agg["started"])
            add("response_rate", agg["replied"] / agg["started"], replied=agg["replied"], started=agg["started"])
        if agg["met"] or agg["breached"]:
            add("reply_sla_met", agg["met"])
            add("reply_sla_breached", agg["breached"])
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
        a = (platform, account)
        hist = state["hist"]
        if hist["lat"]["sum"] or any(hist["lat"]["c"]):
            yield "socialpulse_reply_latency_seconds", a, m.hist_value(hist["lat"])
        if any(hist["first"]["c"]):
            yield "socialpulse_first_response_seconds", a, m.hist_value(hist["first"])
        if key in self.hours:
            yield "socialpulse_reply_business_latency_seconds", a, m.hist_value(hist["business"])
        for agent, h in state["agent_hist"].items():
            yield "socialpulse_agent_reply_latency_seconds", (platform, account, agent), m.hist_value(h)
        for result in ("met", "breached"):
            yield "socialpulse_reply_sla_total", (platform, account, result), float(state["sla"][result])
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

    def view(self, key: str, state: State, watermark: int) -> dict[str, Any]:
        waiting = [c["since"] for c in state["convs"].values() if c["since"] is not None]
        out: dict[str, Any] = {
            "awaiting_reply": len(waiting),
            "oldest_awaiting_since": iso(min(waiting)) if waiting else None,
            "sla": dict(state["sla"]),
            "clamped_negative_latencies": state["clamped"],
            "slo_seconds": self.slo_ms / 1000,
            "business_hours": key in self.hours,
            "windows": {},
        }
        for size in self.spec.trailing_ms:
            agg = self._trailing(state, watermark, size)
            out["windows"][self.spec.label(size)] = {
                "reply_latency_seconds": m.summary(agg["lat"]),
                "first_response_seconds": m.summary(agg["first"]),
                "conversations_started": agg["started"],
                "replied": agg["replied"],
                "response_rate": agg["replied"] / agg["started"] if agg["started"] else None,
                "sla_met": agg["met"],
                "sla_breached": agg["breached"],
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
