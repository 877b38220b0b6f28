"""Conversations as sellers have them (without Kafka): SLA policies per channel with first-
and next-reply targets, bots, follow-up reply time, outreach and its daily cohort; values
computed by hand."""

import time

import pytest

from schemas.accounts import AccountSettings
from schemas.events import Message
from schemas.results import ReplyBreach, Result
from streams.family import Record
from streams.replies import Replies
from streams.replies import metrics as m
from streams.windows import WindowSpec, iso

MIN = 60_000
DAY = 86_400_000
SPEC = WindowSpec(bucket_ms=MIN, trailing_ms=(60 * MIN,), closed_ms=(60 * MIN,), grace_ms=5 * MIN, allowed_ms=DAY)
KEY = "instagram|acme"
ACME = AccountSettings.model_validate({
    "platform": "instagram", "account_id": "acme",
    "sla_policies": [
        {"name": "dm-fast", "channels": ["dm"], "first_reply": "10m", "next_reply": "30m"},
        {"name": "comments", "channels": ["comment", "mention"], "first_reply": "2h"},
    ],
})


def msg(eid, cid, ts, direction, agent=None, channel="dm", bot=False, automated=False):
    return Message(event_id=eid, ts=ts, platform="instagram", account_id="acme", conversation_id=cid,
                   direction=direction, author_id=agent or "cust", agent_id=agent, channel=channel, bot=bot,
                   automated=automated)


@pytest.fixture
def t0():
    now = int(time.time() * 1000)
    return now - now % DAY - 3 * DAY  # a UTC midnight, 3 days ago


def family(accounts=None):
    return Replies(SPEC, slo_ms=15 * MIN, accounts=accounts if accounts is not None else {KEY: ACME}.get)


def breaches(out):
    return [ReplyBreach.model_validate_json(r.value) for r in out if isinstance(r, Record)]


def test_policies_hold_first_and_next_replies_to_their_channels_targets(t0):
    """dm: first reply after 8 min (target 10 m: met), next after 20 min (30 m: met), a third
    wait answered after 40 min (breached, next-reply target, breach names policy and target).
    comment: answered after 90 min (2 h: met). Without the account's settings: default 15 m."""
    fam = family()
    state = fam.new_state()
    out = []
    out += fam.apply(KEY, state, [msg("1", "d", t0, "inbound"), msg("2", "d", t0 + 8 * MIN, "outbound", "ana"),
                                  msg("3", "d", t0 + 10 * MIN, "inbound"), msg("4", "d", t0 + 30 * MIN, "outbound", "ana"),
                                  msg("5", "d", t0 + 40 * MIN, "inbound")], t0)
    out += fam.close(KEY, state, t0 + 70 * MIN)[0]  # the third wait passed 30 min at t0 + 70 min
    out += fam.apply(KEY, state, [msg("6", "d", t0 + 80 * MIN, "outbound", "ana")], t0 + 70 * MIN)
    out += fam.apply(KEY, state, [msg("7", "c", t0, "inbound", channel="comment"),
                                  msg("8", "c", t0 + 90 * MIN, "outbound", "ben")], t0 + 70 * MIN)
    assert state["sla"] == {"dm-fast|dm": {"met": 2, "breached": 1}, "comments|comment": {"met": 1, "breached": 0}}
    [b] = breaches(out)
    assert (b.policy, b.target, b.slo_seconds, b.channel, b.breached_at) == (
        "dm-fast", "next_reply", 1800.0, "dm", iso(t0 + 70 * MIN))
    dm = state["hist"]["dm"]
    assert m.hist_value(dm["first"])[1] == 8 * 60 and m.hist_value(dm["next"])[1] == (20 + 40) * 60
    assert m.hist_value(dm["lat"])[1] == (8 + 20 + 40) * 60
    assert m.hist_value(state["hist"]["comment"]["first"])[1] == 90 * 60
    samples = {(n, lv): v for n, lv, v in fam.samples(KEY, state, t0 + 90 * MIN)}
    assert samples[("socialpulse_reply_sla_total", ("instagram", "acme", "dm", "dm-fast", "breached"))] == 1
    assert samples[("socialpulse_followup_reply_seconds", ("instagram", "acme", "dm"))][1] == 3600.0
    # no settings for the account: the default policy, REPLY_SLO for both targets
    plain = family(accounts={})
    st = plain.new_state()
    plain.apply(KEY, st, [msg("1", "d", t0, "inbound"), msg("2", "d", t0 + 12 * MIN, "outbound", "ana")], t0)
    assert st["sla"] == {"default|dm": {"met": 1, "breached": 0}}


def test_a_policy_change_applies_to_waits_that_start_after_it(t0):
    book = {KEY: ACME}
    fam = family(book.get)
    state = fam.new_state()
    fam.apply(KEY, state, [msg("1", "a", t0, "inbound")], t0)  # held to 10 min
    book[KEY] = ACME.model_copy(update={"sla_policies": []})  # published while the wait is open
    fam.apply(KEY, state, [msg("2", "b", t0 + MIN, "inbound")], t0)  # held to the default 15 min
    out = fam.close(KEY, state, t0 + 12 * MIN)[0]
    assert [(b.conversation_id, b.policy) for b in breaches(out)] == [("a", "dm-fast")]
    out = fam.close(KEY, state, t0 + 17 * MIN)[0]
    assert [(b.conversation_id, b.policy, b.slo_seconds) for b in breaches(out)] == [("b", "default", 900.0)]


def test_a_bot_ends_the_wait_without_a_human_reply_time_and_a_hand_off_starts_a_new_one(t0):
    """The docstring's example: customer 10:00, bot 10:01, customer 10:20, agent 10:35."""
    fam = family(accounts={})
    state = fam.new_state()
    h = 10 * 60 * MIN
    fam.apply(KEY, state, [msg("1", "c", t0 + h, "inbound"), msg("2", "c", t0 + h + MIN, "outbound", bot=True)], t0)
    assert fam.view(KEY, state, t0 + h + MIN)["awaiting_reply"] == 0
    fam.apply(KEY, state, [msg("3", "c", t0 + h + 20 * MIN, "inbound"),
                           msg("4", "c", t0 + h + 35 * MIN, "outbound", "ana")], t0)
    assert state["bots"] == {"dm": 1}
    assert m.hist_value(state["hist"]["dm"]["first"])[1] == 15 * 60  # the first human reply: 10:20 -> 10:35
    assert m.hist_value(state["hist"]["dm"]["lat"])[1] == 15 * 60  # the bot's minute is no human latency
    assert state["sla"] == {"default|dm": {"met": 1, "breached": 0}}  # the bot's spell: neither met nor breached
    # an automated acknowledgement does not stop the clock
    fam.apply(KEY, state, [msg("5", "x", t0, "inbound"), msg("6", "x", t0 + MIN, "outbound", automated=True)], t0)
    assert fam.view(KEY, state, t0 + 2 * MIN)["awaiting_reply"] == 1


def test_outreach_is_counted_after_grace_and_its_cohort_is_corrected_as_answers_come(t0):
    """Day 0: ana writes first to p1, p2 and p3 (outreach); p1 answers 2 h later, p3 answers
    three days later (after the day's first publication and beyond the allowed lateness of a
    window, within OUTREACH_WINDOW 7 d). c4's customer message older than ana's turns up
    within grace: not outreach."""
    fam = family(accounts={})
    state = fam.new_state()
    fam.apply(KEY, state, [msg(f"o{i}", f"p{i}", t0 + i * MIN, "outbound", "ana") for i in (1, 2, 3)]
              + [msg("o4", "c4", t0 + 4 * MIN, "outbound", "ana"), msg("i4", "c4", t0 + 3 * MIN, "inbound")], t0)
    fam.apply(KEY, state, [msg("a1", "p1", t0 + MIN + 2 * 60 * MIN, "inbound")], t0)
    assert "outreach" not in state  # not before its grace
    fam.close(KEY, state, t0 + 10 * MIN)
    assert state["outreach"] == {"ana": [3, 1]}
    out, _ = fam.close(KEY, state, t0 + DAY + 5 * MIN)
    by = {r.metric: r for r in out if isinstance(r, Result)}
    assert (by["outreach_started"].value, by["prospect_response_rate"].value) == (3, pytest.approx(1 / 3))
    assert by["prospect_response_rate"].revision == 0 and by["prospect_response_rate"].window == "1d"
    fam.apply(KEY, state, [msg("a3", "p3", t0 + 3 * DAY, "inbound")], t0 + 3 * DAY)
    out, _ = fam.close(KEY, state, t0 + 3 * DAY)
    by = {r.metric: r for r in out if isinstance(r, Result)}
    assert (by["prospect_response_rate"].value, by["prospect_response_rate"].revision) == (pytest.approx(2 / 3), 1)
    assert by["prospect_response_rate"].key.endswith(f"|1d|{iso(t0)}")
    assert state["outreach"] == {"ana": [3, 2]}
    _, total = m.hist_value(state["phist"], m.PROSPECT_BUCKETS)
    assert total == (2 * 60 * MIN + 3 * DAY - 3 * MIN) / 1000
    # the prospect's answer opens a wait: the seller's reply is a follow-up (next-reply target)
    fam.apply(KEY, state, [msg("r1", "p1", t0 + MIN + 2 * 60 * MIN + 5 * MIN, "outbound", "ana")], t0 + 3 * DAY)
    assert m.hist_value(state["hist"]["dm"]["next"])[1] == 300.0
    assert m.hist_value(state["hist"]["dm"]["first"])[1] == 60.0  # only c4's: an ordinary conversation
    assert fam.close(KEY, state, t0 + DAY + 8 * DAY)[1]  # the window plus lateness after the day: dropped
    assert "coh" not in state
