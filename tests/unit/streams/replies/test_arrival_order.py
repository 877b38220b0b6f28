"""Replies by event time: the same messages give the same numbers whatever order they arrive
in (within the allowed lateness), however they are split into batches and whenever the
watermark moves. The stage's closed-window corrections are played as ``streams.keyed`` does:
windows close at ``end + grace``; late parts correct the published window."""

from __future__ import annotations

import random
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.accounts import AccountSettings
from schemas.events import Message
from schemas.results import Result
from streams import windows
from streams.family import Record
from streams.replies import Replies
from streams.replies import metrics as m
from streams.topics import RESULTS
from streams.windows import WindowSpec

MIN = 60_000
DAY = 86_400_000
SPEC = WindowSpec(bucket_ms=MIN, trailing_ms=(5 * MIN, 60 * MIN), closed_ms=(MIN, 60 * MIN), grace_ms=5 * MIN,
                  allowed_ms=DAY)
KEY = "instagram|acme"
ACME = AccountSettings.model_validate({
    "platform": "instagram", "account_id": "acme",
    "sla_policies": [
        {"name": "dm-fast", "channels": ["dm"], "first_reply": "10m", "next_reply": "30m"},
        {"name": "comments", "channels": ["comment"], "first_reply": "2h"},
    ],
})
NOW = int(time.time() * 1000)
T0 = NOW - NOW % DAY - 3 * DAY  # a UTC midnight three days ago


def message(eid: str, cid: str, ts: int, kind: str, agent: str = "ana", channel: str = "dm") -> Message:
    inbound = kind == "in"
    return Message(event_id=eid, ts=ts, platform="instagram", account_id="acme", conversation_id=cid,
                   direction="inbound" if inbound else "outbound", author_id="cust" if inbound else agent,
                   agent_id=None if inbound else agent, channel=channel, bot=kind == "bot", automated=kind == "auto")


class Run:
    """A family fed as the keyed stage feeds it, keeping what consumers would hold."""

    def __init__(self) -> None:
        self.fam = Replies(SPEC, slo_ms=15 * MIN, accounts={KEY: ACME}.get)
        self.state = self.fam.new_state()
        self.closed: dict[tuple[int, int], Any] = {}
        self.results: dict[str, Any] = {}  # by message key, last wins
        self.breaches: dict[str, bytes | None] = {}
        self.wm = 0

    def out(self, outputs: list[Any]) -> None:
        for o in outputs:
            if isinstance(o, Record) and o.topic == RESULTS:
                self.results.pop(o.key, None)  # a tombstone
            elif isinstance(o, Record):
                self.breaches[o.key] = o.value
            elif isinstance(o, Result):
                self.results[o.key] = o.value

    def feed(self, events: list[Message], wm: int) -> None:
        self.wm = max(self.wm, wm)
        self.out(self.fam.apply(KEY, self.state, events, self.wm))
        self.tick()

    def tick(self, wm: int | None = None) -> None:
        if wm is not None:
            self.wm = max(self.wm, wm)
        win = self.state["win"]
        self.late()
        self.out(self.fam.close(KEY, self.state, self.wm)[0])
        self.late()
        for cw in windows.close_due(win, self.wm, SPEC):
            self.closed[(cw.size, cw.start)] = cw

    def late(self) -> None:
        """Late parts correct their published window (or publish it: it had nothing of the key)."""
        for size, start, part in windows.take_late(self.state["win"]):
            kept = self.closed.get((size, start))
            if kept is None:
                self.closed[(size, start)] = windows.ClosedWindow(size, SPEC.label(size), start, start + size, part)
            else:
                m.merge(kept.agg, part)

    def final(self) -> dict[str, Any]:
        for at in range(self.wm, T0 + 10 * DAY, 30 * MIN):
            self.tick(at)
        results = dict(self.results)
        for cw in self.closed.values():
            assert not cw.agg.get("neg"), f"a retraction found nothing to take back: {cw.agg}"
            for r in self.fam.results(KEY, cw, self.state, 0):
                results[r.key] = _norm(r.model_dump(exclude={"revision"}))
        s = self.state
        return {
            "results": results,
            "breaches": {k: v for k, v in self.breaches.items() if v is not None},
            "hist": s["hist"], "agent_hist": s["agent_hist"],
            "sla": {k: v for k, v in s["sla"].items() if any(v.values())},
            "bots": {k: v for k, v in s.get("bots", {}).items() if v},
            "outreach": s.get("outreach", {}), "phist": s.get("phist"),
        }

    def live(self, wm: int) -> dict[str, Any]:
        """The gauges and the API view at one watermark (before everything is final)."""
        samples = sorted((n, lv, repr(v)) for n, lv, v in self.fam.samples(KEY, self.state, wm))
        return {"samples": samples, "view": self.fam.view(KEY, self.state, wm)}


def _norm(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    return value


@st.composite
def conversations(draw: Any) -> list[Message]:
    """A handful of conversations over two hours: customer messages, human replies, bots,
    automated acknowledgements, outreach, a comment thread; several spells each."""
    events: list[Message] = []
    n = 0
    for c in range(draw(st.integers(2, 6))):
        cid = f"c{c}"
        channel = "comment" if c == 3 else "dm"
        start = T0 + 10 * MIN + draw(st.integers(0, 90)) * MIN
        ts = start
        for _ in range(draw(st.integers(1, 7))):
            ts += draw(st.sampled_from([0, 1_000, 30_000, 4 * MIN, 12 * MIN, 40 * MIN]))
            kind = draw(st.sampled_from(["in", "in", "in", "out", "out", "bot", "auto"]))
            agent = draw(st.sampled_from(["ana", "ben"]))
            events.append(message(f"e{n}", cid, ts, kind, agent, channel))
            n += 1
    return events


def play(events: list[Message], rng: random.Random, shuffle: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    order = list(events)
    if shuffle:
        rng.shuffle(order)
    else:
        order.sort(key=lambda e: (e.ts, e.event_id))
    run = Run()
    i = 0
    wm = T0
    while i < len(order):
        size = rng.randint(1, 5)
        batch = order[i:i + size]
        i += size
        # the watermark never passes what has been read when in order; shuffled, it wanders
        newest = max(e.ts for e in order[:i])
        wm = max(wm, newest - rng.choice([0, MIN, 20 * MIN]))
        run.feed(batch, wm)
        if rng.random() < 0.3:
            run.tick(wm + rng.choice([MIN, 10 * MIN]))
    return run.final(), run.live(T0 + 10 * DAY)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(events=conversations(), seed=st.integers(0, 2**16))
def test_any_arrival_order_gives_the_same_replies(events: list[Message], seed: int) -> None:
    rng = random.Random(seed)
    reference, live = play(events, rng, shuffle=False)
    for _ in range(3):
        other, other_live = play(events, rng, shuffle=True)
        assert other == reference
        assert other_live == live


def test_a_reply_read_before_the_message_it_answers_is_its_reply_and_the_conversation_is_started() -> None:
    late_question = Run()
    late_question.feed([message("r", "c", T0 + 5 * MIN, "out")], T0 + 5 * MIN)
    late_question.feed([message("q", "c", T0 + 2 * MIN, "in")], T0 + 5 * MIN)
    in_order = Run()
    in_order.feed([message("q", "c", T0 + 2 * MIN, "in"), message("r", "c", T0 + 5 * MIN, "out")], T0 + 5 * MIN)
    for run in (late_question, in_order):
        view = run.fam.view(KEY, run.state, T0 + 10 * MIN)["windows"]["1h"]
        assert (view["conversations_started"], view["replied"], view["outreach_started"]) == (1, 1, 0)
        assert view["first_response_seconds"]["mean"] == 180.0
    assert late_question.final() == in_order.final()


def test_an_outreach_opener_read_while_a_later_spell_is_open_is_not_its_reply() -> None:
    """Seller 10:00, prospect 10:30, seller 10:35: read as 10:30, 10:35, 10:00. The 10:00
    message is the opener (outreach), never a reply with a negative latency."""
    run = Run()
    h = 10 * 60 * MIN
    run.feed([message("p", "c", T0 + h + 30 * MIN, "in")], T0 + h + 30 * MIN)
    run.feed([message("r", "c", T0 + h + 35 * MIN, "out")], T0 + h + 35 * MIN)
    run.feed([message("o", "c", T0 + h, "out")], T0 + h + 36 * MIN)
    final = run.final()
    assert final["outreach"] == {"ana": [1, 1]}
    assert sum(final["hist"]["dm"]["first"]["c"]) == 0 and m.hist_value(final["hist"]["dm"]["next"])[1] == 300.0
    assert run.state["clamped"] == 0


def test_a_breach_withdrawn_when_the_reply_turns_up_within_the_target() -> None:
    """The wait breaches at its deadline (no reply read yet); the reply, stamped within the
    target, arrives later: the breach is withdrawn (tombstone) and the reply counts as met."""
    run = Run()
    run.feed([message("q", "c", T0, "in")], T0)
    run.tick(T0 + 11 * MIN)  # dm-fast: first reply within 10 min
    assert run.state["sla"] == {"dm-fast|dm": {"met": 0, "breached": 1}}
    [key] = run.breaches
    run.feed([message("r", "c", T0 + 9 * MIN, "out")], T0 + 11 * MIN)
    assert run.breaches == {key: None}
    assert run.state["sla"] == {"dm-fast|dm": {"met": 1, "breached": 0}}


def test_two_replies_to_one_wait_read_newest_first_measure_the_earliest() -> None:
    run = Run()
    run.feed([message("q", "c", T0, "in"), message("r2", "c", T0 + 8 * MIN, "out", "ben")], T0 + 8 * MIN)
    run.feed([message("r1", "c", T0 + 2 * MIN, "out", "ana")], T0 + 8 * MIN)
    assert m.hist_value(run.state["agent_hist"]["ana"])[1] == 120.0
    assert "ben" not in run.state["agent_hist"]  # ben's second reply measures nothing: his series goes
