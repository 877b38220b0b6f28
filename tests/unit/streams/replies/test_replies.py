"""Replies family on a hand-made conversation set, values computed by hand."""

import time
from datetime import UTC, datetime

import pytest

from schemas.events import Message
from schemas.results import ReplyBreach
from streams import windows
from streams.family import Record
from streams.replies import Replies
from streams.replies import metrics as m
from streams.replies.hours import business_deadline, business_seconds, parse_hours, weekday_hour, zone
from streams.topics import BREACHES
from streams.windows import WindowSpec

MIN = 60_000
SPEC = WindowSpec(bucket_ms=MIN, trailing_ms=(60 * MIN,), closed_ms=(60 * MIN,), grace_ms=5 * MIN)
KEY = "instagram|acme"


def msg(eid, cid, ts, direction, agent=None, automated=False):
    return Message(event_id=eid, ts=ts, platform="instagram", account_id="acme", conversation_id=cid,
                   direction=direction, author_id=agent or "cust", agent_id=agent, automated=automated)


@pytest.fixture
def t0():
    now = int(time.time() * 1000)
    return now - now % (60 * MIN) - 3 * 60 * MIN  # an hour boundary, 3 h ago


def run_scenario(t0, **settings):
    fam = Replies(SPEC, slo_ms=15 * MIN, **settings)
    state = fam.new_state()
    s = 1000
    out = []
    wm = t0 + 120 * s

    def feed(*events, at):
        out.extend(fam.apply(KEY, state, list(events), at))

    feed(
        msg("a", "c1", t0, "inbound"), msg("b", "c1", t0 + 5 * s, "outbound", "bot", automated=True),
        msg("c", "c1", t0 + 60 * s, "inbound"), msg("d", "c1", t0 + 120 * s, "outbound", "ana"),
        msg("e", "c2", t0 + 10 * s, "inbound"),
        msg("f", "c3", t0 + 300 * s, "outbound", "ben"), msg("g", "c3", t0 + 100 * s, "inbound"),  # reply arrives first
        msg("h", "c4", t0 + 200 * s, "inbound"),
        msg("j", "c5", t0 + 500 * s, "outbound", "ana"), msg("i", "c5", t0 + 500 * s, "inbound"),  # same ms: answers it
        msg("k", "c6", t0 + 600 * s, "inbound"), msg("l", "c6", t0 + 660 * s, "outbound", "ben"),
        msg("n", "c6", t0 + 700 * s, "outbound", "ben"),  # a second reply: no latency
        at=wm,
    )
    closed, _ = fam.close(KEY, state, t0 + 1101 * s)  # past c4's deadline (t0+200s+900s), not c2's? c2: t0+910s
    out.extend(closed)
    feed(msg("o", "c4", t0 + 1400 * s, "outbound", "ana"), at=t0 + 1400 * s)
    return fam, state, out


def test_hand_made_conversations_give_hand_computed_metrics(t0):
    fam, state, out = run_scenario(t0)
    published = [ReplyBreach.model_validate_json(r.value) for r in out if isinstance(r, Record) and r.topic == BREACHES]
    breaches = sorted((b.conversation_id, b.breached_at) for b in published)
    from streams.windows import iso
    assert breaches == [("c2", iso(t0 + 910_000)), ("c4", iso(t0 + 1_100_000))]
    assert state["sla"] == {"default|dm": {"met": 4, "breached": 2}}
    assert state["clamped"] == 0  # by event time a reply never precedes the message it answers
    buckets, total = m.hist_value(state["hist"]["dm"]["lat"])
    assert total == 0 + 60 + 120 + 200 + 1200
    assert dict(buckets) == {"60.0": 2, "300.0": 4, "900.0": 4, "1800.0": 5, "3600.0": 5, "14400.0": 5, "86400.0": 5, "+Inf": 5}
    assert m.hist_value(state["hist"]["dm"]["first"])[1] == total  # each conversation's only latency is its first
    wm = t0 + 1400_000
    view = fam.view(KEY, state, wm)
    win = view["windows"]["1h"]
    assert win["reply_latency_seconds"] == {
        "count": 5, "mean": 316.0, "p50": 120.0, "p90": pytest.approx(800.0), "p99": pytest.approx(1160.0)}
    assert (win["conversations_started"], win["replied"]) == (6, 5)
    assert win["response_rate"] == pytest.approx(5 / 6)
    assert (win["sla_met"], win["sla_breached"]) == (4, 2)
    assert view["awaiting_reply"] == 1 and view["oldest_awaiting_since"] == iso(t0 + 10_000)
    samples = {(n, lv): v for n, lv, v in fam.samples(KEY, state, wm)}
    quantiles, count, total = samples[("socialpulse_reply_latency_window_seconds", ("instagram", "acme", "1h"))]
    assert dict(quantiles)["0.9"] == pytest.approx(800.0) and (count, total) == (5, 1580.0)
    assert samples[("socialpulse_awaiting_reply", ("instagram", "acme"))] == 1
    assert samples[("socialpulse_oldest_awaiting_reply_timestamp_seconds", ("instagram", "acme"))] == (t0 + 10_000) / 1000
    assert samples[("socialpulse_reply_sla_total", ("instagram", "acme", "dm", "default", "breached"))] == 2
    agents = {lv[2]: v[1] for (n, lv), v in samples.items() if n == "socialpulse_agent_reply_latency_seconds"}
    assert agents == {"ana": 0 + 120 + 1200, "ben": 200 + 60}


def test_closed_window_results_carry_the_same_numbers(t0):
    fam, state, _ = run_scenario(t0)
    at = t0 + 60 * MIN + SPEC.grace_ms
    fam.close(KEY, state, at)
    results = [r for cw in windows.close_due(state["win"], at, SPEC) for r in fam.results(KEY, cw, state, 0)]
    by = {(r.metric, getattr(r, "agent_id", None), getattr(r, "hour", None)): r for r in results}
    assert by[("reply_latency_seconds", None, None)].value == 316.0
    assert by[("response_rate", None, None)].value == pytest.approx(5 / 6)
    assert by[("reply_sla_breached", None, None)].value == 2
    hour = weekday_hour(t0, zone("UTC"))[1]
    ana = by[("agent_reply_seconds", "ana", hour)]
    assert ana.count == 3 and ana.value == 440.0 and ana.median == 120.0  # 120 s, 0 s and 1200 s, all in the first hour
    assert ana.key.endswith(f"|ana|{weekday_hour(t0, zone('UTC'))[0]}-{hour:02d}")


def test_the_agent_cap_keeps_the_most_recently_active_agents(t0):
    """Cap 2: a1, a2, a1 again, then a3 and a4 join: a1 (active after a2) outlives a2; the
    least recently active agent makes room for each newcomer and its history goes to other."""
    fam = Replies(SPEC, slo_ms=15 * MIN, max_agents=2)
    state = fam.new_state()
    for i, agent in enumerate(("a1", "a2", "a1", "a3", "a4")):
        fam.apply(KEY, state, [msg(f"i{i}", f"c{i}", t0 + i, "inbound"), msg(f"o{i}", f"c{i}", t0 + 1000 + i, "outbound", agent)], t0)
    assert state["agents"] == ["a3", "a4"]
    assert sorted(state["agent_hist"]) == ["a3", "a4", "other"]
    assert sum(state["agent_hist"]["other"]["c"]) == 3  # a2's one reply and a1's two
    assert sum(sum(h["c"]) for h in state["agent_hist"].values()) == 5  # nothing lost


def test_conversations_are_remembered_for_their_ttl_after_their_last_message(t0):
    fam, state, _ = run_scenario(t0, conversation_ttl_ms=60 * MIN)
    fam.close(KEY, state, t0 + 65 * MIN)  # last messages before t0 + 5 min are forgotten, waiting or not
    assert sorted(state["convs"]) == ["c3", "c4", "c5", "c6"]


def test_a_customer_writing_again_an_hour_after_the_answer_gets_a_follow_up_not_a_first_response(t0):
    fam = Replies(SPEC, slo_ms=15 * MIN)  # CONVERSATION_TTL 7 d by default
    state = fam.new_state()
    fam.apply(KEY, state, [msg("a", "c", t0, "inbound"), msg("b", "c", t0 + MIN, "outbound", "ana")], t0)
    out = []
    for at in range(t0, t0 + 70 * MIN, MIN):
        out += fam.close(KEY, state, at)[0]
    out += fam.apply(KEY, state, [msg("c", "c", t0 + 70 * MIN, "inbound"),
                                  msg("d", "c", t0 + 90 * MIN, "outbound", "ana")], t0 + 70 * MIN)
    out += fam.close(KEY, state, t0 + 120 * MIN)[0]
    dm = state["hist"]["dm"]
    assert (sum(dm["first"]["c"]), sum(dm["next"]["c"])) == (1, 1)
    assert m.hist_value(dm["next"])[1] == 20 * 60
    assert state["sla"] == {"default|dm": {"met": 1, "breached": 1}}  # the follow-up took 20 min
    [b] = [ReplyBreach.model_validate_json(r.value) for r in out if isinstance(r, Record)]
    assert b.target == "next_reply"
    win = fam.view(KEY, state, t0 + 120 * MIN)["windows"]["1h"]
    assert win["conversations_started"] == 0  # it started at t0, outside the last hour


def test_business_seconds_skip_nights_and_weekends():
    hours = parse_hours("mon-fri 09:00-17:00", "Europe/Paris")
    fri_1630 = int(datetime(2026, 11, 20, 15, 30, tzinfo=UTC).timestamp() * 1000)  # 16:30 in Paris
    mon_0915 = int(datetime(2026, 11, 23, 8, 15, tzinfo=UTC).timestamp() * 1000)  # 09:15 in Paris
    assert business_seconds(fri_1630, mon_0915, hours) == 30 * 60 + 15 * 60
    assert business_deadline(fri_1630, 15 * 60, hours) == fri_1630 + 15 * 60 * 1000
    assert business_deadline(fri_1630, 45 * 60, hours) == mon_0915  # 30 min on Friday, 15 on Monday
    assert weekday_hour(fri_1630, hours.tz) == (4, 16)


def test_sla_is_judged_in_business_seconds_when_configured(t0):
    # a desk that is closed all day long except one minute: nearly nothing counts
    start = datetime.fromtimestamp(t0 / 1000, UTC)
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[start.weekday()]
    hours = {KEY: parse_hours(f"{day} {start.hour:02d}:00-{start.hour:02d}:01", "UTC")}
    fam = Replies(SPEC, slo_ms=15 * MIN, hours=hours)
    state = fam.new_state()
    fam.apply(KEY, state, [msg("i", "c", t0, "inbound"), msg("o", "c", t0 + 40 * MIN, "outbound", "ana")], t0)
    assert state["sla"] == {"default|dm": {"met": 1, "breached": 0}}  # 40 wall minutes, 60 business seconds
    assert m.hist_value(state["hist"]["dm"]["business"])[1] == 60.0


def test_quantile_interpolates_between_ranks():
    assert m.quantile([1, 2, 3, 4], 0.5) == 2.5
    assert m.quantile([5], 0.99) == 5
    assert m.quantile([], 0.5) is None


def test_an_older_inbound_arriving_after_the_reply_lengthens_that_spell(t0):
    fam = Replies(SPEC, slo_ms=15 * MIN)
    state = fam.new_state()
    s = 1000
    # event time: in(1s), in(2s), reply(8s) -> latency 7 s, whatever order they arrive in
    fam.apply(KEY, state, [msg("b", "c", t0 + 2 * s, "inbound"), msg("r", "c", t0 + 8 * s, "outbound", "ana")], t0)
    fam.apply(KEY, state, [msg("a", "c", t0 + 1 * s, "inbound")], t0)
    assert m.hist_value(state["hist"]["dm"]["lat"])[1] == 7.0
    assert m.hist_value(state["hist"]["dm"]["first"])[1] == 7.0
    assert m.hist_value(state["agent_hist"]["ana"])[1] == 7.0
    assert fam.view(KEY, state, t0 + 10 * s)["windows"]["1h"]["reply_latency_seconds"]["mean"] == 7.0
    fam.apply(KEY, state, [msg("z", "c", t0 + 500, "inbound")], t0)  # older still: 7.5 s
    assert m.hist_value(state["hist"]["dm"]["lat"])[1] == 7.5 and sum(state["hist"]["dm"]["lat"]["c"]) == 1
