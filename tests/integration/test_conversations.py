"""Conversations as sellers have them, end to end on the embedded broker: two accounts with
different SLA policies and schedules from an accounts file, one in Europe/Berlin with a
weekend and a holiday between a Friday message and its Tuesday answer; DMs, a public
comment, a bot and a hand-off, outreach a prospect answers; a policy published on
``socialpulse.accounts`` while the worker runs applies to the next wait without a restart.
Every number is computed here and read back from /metrics, the API and the output topics."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest
from confluent_kafka import Producer

from streams.windows import iso

from ..helpers import consume_all, metric_value, spawn_worker, stop_process, wait_until, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.kafka]
PREFIX = "conv."
MIN = 60_000
BERLIN = ZoneInfo("Europe/Berlin")


def last_friday_before(now: datetime) -> datetime:
    """The latest Friday (Berlin midnight) whose next Tuesday noon has passed."""
    day = now.astimezone(BERLIN).replace(hour=0, minute=0, second=0, microsecond=0)
    while not (day.weekday() == 4 and day + timedelta(days=4, hours=12) < now):
        day -= timedelta(days=1)
    return day


def at(day: datetime, days: int, hh: int, mm: int) -> int:
    """Epoch ms of local wall time ``hh:mm``, ``days`` after ``day`` (a Berlin midnight)."""
    local = (day + timedelta(days=days)).replace(hour=hh, minute=mm)
    return int(local.replace(tzinfo=BERLIN).timestamp() * 1000)


@pytest.fixture(scope="module")
def run(broker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conversations")
    now_dt = datetime.now(UTC)
    friday = last_friday_before(now_dt)
    monday = (friday + timedelta(days=3)).date()
    (tmp / "accounts.yaml").write_text(f"""
accounts:
  - platform: instagram
    account_id: shop
    timezone: Europe/Berlin
    business_hours: {{mon: ["09:00-17:00"], tue: ["09:00-17:00"], wed: ["09:00-17:00"], thu: ["09:00-17:00"],
                     fri: ["09:00-17:00"], holidays: ["{monday.isoformat()}"]}}
    sla_policies: [{{name: dm-business, channels: [dm], first_reply: 2h, hours: business}}]
  - platform: facebook
    account_id: store
    sla_policies:
      - {{name: dm, channels: [dm], first_reply: 10m, next_reply: 30m}}
      - {{name: comments, channels: [comment], first_reply: 1h}}
""")
    env = worker_env(broker, PREFIX, tmp / "data", SOCIALPULSE_ACCOUNTS_FILE=str(tmp / "accounts.yaml"),
                     SOCIALPULSE_ALLOWED_LATENESS="14d",  # the Friday message is up to 11 days old
                     SOCIALPULSE_IDLE="1s")
    worker = spawn_worker(env, tmp)
    worker.wait_ready(60)
    now = int(time.time() * 1000)
    t = now - now % MIN - 3 * 60 * MIN
    d = now - now % 86_400_000 - 2 * 86_400_000 + 12 * 60 * MIN  # noon UTC, two days ago
    n = 0

    def m(account: str, cid: str, ts: int, direction: str, agent: str | None = None, **extra):
        nonlocal n
        n += 1
        platform = "instagram" if account == "shop" else "facebook"
        return {"event_id": f"m{n}", "ts": iso(ts), "platform": platform, "account_id": account,
                "conversation_id": cid, "direction": direction, "author_id": agent or "customer",
                **({"agent_id": agent} if agent else {}), **extra}

    shop = [  # Friday 16:30 -> Tuesday 09:30: 30 business minutes each side of a weekend and a holiday
        m("shop", "fri", at(friday, 0, 16, 30), "inbound"), m("shop", "fri", at(friday, 4, 9, 30), "outbound", "eva"),
        # Friday 16:45 -> Tuesday 11:00: 15 min + 2 h > 2 h: breached at Tuesday 10:45
        m("shop", "late", at(friday, 0, 16, 45), "inbound"), m("shop", "late", at(friday, 4, 11, 0), "outbound", "eva")]
    store = [
        m("store", "c1", t, "inbound"), m("store", "c1", t + 5 * MIN, "outbound", "ana"),  # first: 5 min, met
        m("store", "c1", t + 10 * MIN, "inbound"), m("store", "c1", t + 50 * MIN, "outbound", "ana"),  # next: 40 > 30
        m("store", "c2", t, "inbound", channel="comment"), m("store", "c2", t + 45 * MIN, "outbound", "ben",
                                                              channel="comment"),
        m("store", "c3", t, "inbound"), m("store", "c3", t + MIN, "outbound", bot=True),  # the bot answers
        m("store", "c3", t + 20 * MIN, "inbound"), m("store", "c3", t + 28 * MIN, "outbound", "ana"),  # hand-off: 8 min
        m("store", "o1", d, "outbound", "ana"), m("store", "o1", d + 180 * MIN, "inbound"),  # outreach, answered in 3 h
        m("store", "o1", d + 185 * MIN, "outbound", "ana"),  # a follow-up reply: 5 min
        m("store", "o2", d + MIN, "outbound", "ana")]  # outreach nobody answers
    producer = Producer({"bootstrap.servers": broker})
    for value in shop + store:
        producer.produce(PREFIX + "messages", orjson.dumps(value), key=value["conversation_id"].encode())
    assert producer.flush(15) == 0
    expect = {"friday": friday, "d": d, "t": t, "breach_at": at(friday, 4, 10, 45),
              "calendar_fri": (at(friday, 4, 9, 30) - at(friday, 0, 16, 30)) / 1000}
    yield worker, broker, producer, expect, m
    stop_process(worker.proc)


STORE = {"platform": "facebook", "account": "store"}
SHOP = {"platform": "instagram", "account": "shop"}


def test_sla_by_policy_and_channel_bots_and_reply_times_on_metrics(run):
    worker, *_ = run
    wait_until(lambda: metric_value(worker.metrics(), "socialpulse_reply_sla_total", **STORE, channel="dm", policy="dm",
                                    result="met") == 3, 60, what="the store's dm replies")
    text = worker.metrics()

    def sla(labels, channel, policy, result):
        return metric_value(text, "socialpulse_reply_sla_total", **labels, channel=channel, policy=policy, result=result)

    # c1 first (5 min) and c3 after the hand-off (8 min) within 10 min, the prospect's follow-up within 30 min
    assert sla(STORE, "dm", "dm", "met") == 3 and sla(STORE, "dm", "dm", "breached") == 1  # c1's 40 min next reply
    assert sla(STORE, "comment", "comments", "met") == 1  # 45 min within the comments policy's 1 h
    assert metric_value(text, "socialpulse_bot_resolved_total", **STORE, channel="dm") == 1
    first = {"channel": "dm"}
    assert metric_value(text, "socialpulse_first_response_seconds_sum", **STORE, **first) == 300 + 480
    assert metric_value(text, "socialpulse_followup_reply_seconds_sum", **STORE, **first) == 2400 + 300
    assert metric_value(text, "socialpulse_first_response_seconds_sum", **STORE, channel="comment") == 2700
    # the Berlin shop: business seconds across the weekend and the holiday
    assert sla(SHOP, "dm", "dm-business", "met") == 1 and sla(SHOP, "dm", "dm-business", "breached") == 1
    assert metric_value(text, "socialpulse_first_response_business_seconds_sum", **SHOP, channel="dm") == 3600 + 8100
    assert metric_value(text, "socialpulse_first_response_business_seconds_count", **SHOP, channel="dm") == 2
    _, _, _, expect, _ = run
    assert metric_value(text, "socialpulse_first_response_seconds_sum", **SHOP, channel="dm") == pytest.approx(
        expect["calendar_fri"] * 2 + (90 - 15) * 60)  # the second starts 15 min later, ends 90 min later


def test_outreach_on_metrics_api_and_its_cohort_on_the_results_topic(run):
    worker, broker, _, expect, _ = run
    wait_until(lambda: metric_value(worker.metrics(), "socialpulse_outreach_conversations_total", **STORE,
                                    agent="ana") == 2, 60, what="two outreach conversations")
    text = worker.metrics()
    assert metric_value(text, "socialpulse_outreach_answered_total", **STORE, agent="ana") == 1
    assert metric_value(text, "socialpulse_prospect_response_seconds_sum", **STORE) == 3 * 3600
    assert metric_value(text, "socialpulse_prospect_response_seconds_count", **STORE) == 1
    body = orjson.loads(worker.get("/api/v1/accounts/facebook/store")[1])["replies"]
    assert body["outreach"] == {"ana": {"started": 2, "answered": 1}}
    assert body["bot_resolved"] == {"dm": 1}
    assert body["sla_by_policy"]["dm"] == {"met": 3, "breached": 1}
    day = iso(expect["d"] - expect["d"] % 86_400_000)

    def cohort():
        records = [orjson.loads(r.value()) for r in consume_all(broker, PREFIX + "socialpulse.results", 10**6, 6)]
        return {r["metric"]: r for r in records if r["account_id"] == "store" and r["window_start"] == day
                and r["metric"] in ("outreach_started", "prospect_response_rate")}

    got = wait_until(lambda: len(cohort()) == 2 and cohort(), 60, what="the outreach cohort")
    assert got["outreach_started"]["value"] == 2 and got["prospect_response_rate"]["value"] == 0.5
    assert got["prospect_response_rate"]["window"] == "1d"


def test_breaches_carry_their_policy_target_and_business_deadline(run):
    worker, broker, _, expect, _ = run

    def breaches():
        return {b["conversation_id"]: b for b in (orjson.loads(r.value()) for r in consume_all(
            broker, PREFIX + "socialpulse.reply-breaches", 10**6, 6))}

    got = wait_until(lambda: {"c1", "late"} <= set(breaches()) and breaches(), 60, what="the breaches")
    c1, late = got["c1"], got["late"]
    assert (c1["policy"], c1["target"], c1["slo_seconds"], c1["hours"]) == ("dm", "next_reply", 1800.0, "calendar")
    assert (late["policy"], late["target"], late["hours"]) == ("dm-business", "first_reply", "business")
    assert late["breached_at"] == iso(expect["breach_at"])  # Tuesday 10:45 Berlin: 2 business hours on


def test_a_policy_published_while_the_worker_runs_applies_to_the_next_wait(run):
    worker, broker, producer, _, m = run
    record = {"platform": "facebook", "account_id": "store",
              "sla_policies": [{"name": "dm-strict", "channels": ["dm"], "first_reply": "2m"}]}
    producer.produce(PREFIX + "socialpulse.accounts", orjson.dumps(record), key=b"facebook|store")
    assert producer.flush(15) == 0
    wait_until(lambda: orjson.loads(worker.get("/api/v1/accounts/facebook/store/settings")[1])["source"] == "topic",
               30, what="the published policy")
    now = int(time.time() * 1000)
    for value in (m("store", "c4", now - 8 * MIN, "inbound"), m("store", "c4", now - 3 * MIN, "outbound", "ana")):
        producer.produce(PREFIX + "messages", orjson.dumps(value), key=b"c4")
    assert producer.flush(15) == 0
    wait_until(lambda: metric_value(worker.metrics(), "socialpulse_reply_sla_total", **STORE, channel="dm",
                                    policy="dm-strict", result="breached") == 1, 60, what="the strict policy's breach")
    text = worker.metrics()
    assert metric_value(text, "socialpulse_reply_sla_total", **STORE, channel="dm", policy="dm", result="met") == 3
