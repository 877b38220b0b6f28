"""Replies on a real broker and real worker processes: hand-made conversations,
a worker SIGKILLed mid-conversation and restarted, and a conversation nobody
answers, which must breach within seconds of its SLO with no other traffic."""

from __future__ import annotations

import signal
import time

import orjson
import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from streams.windows import iso

from ..helpers import consume_all, spawn_worker, stop_process, wait_until, worker_env

pytestmark = pytest.mark.integration
PREFIX = "rep."
SLO_S = 20


def samples(text: str, name: str) -> dict[tuple, float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float | None:
    for key, v in samples(text, name).items():
        if all((k, lv) in key for k, lv in labels.items()):
            return v
    return None


def produce(broker: str, events: list[dict]) -> None:
    p = Producer({"bootstrap.servers": broker})
    for e in events:
        p.produce(PREFIX + "messages", orjson.dumps(e))
    assert p.flush(15) == 0


def m(eid, cid, ts, direction, agent=None, automated=False):
    e = {"event_id": eid, "ts": iso(ts), "platform": "instagram", "account_id": "acme", "conversation_id": cid,
         "direction": direction, "author_id": agent or "customer", "automated": automated}
    return e | ({"agent_id": agent} if agent else {})


def accepted_messages(worker) -> float:
    return value(worker.metrics(), "socialpulse_events_total", topic="messages", outcome="accepted") or 0


@pytest.fixture(scope="module")
def run(broker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replies")
    env = worker_env(
        broker, PREFIX, tmp / "data", SOCIALPULSE_BUCKET="1s", SOCIALPULSE_TRAILING_WINDOWS="5m",
        SOCIALPULSE_CLOSED_WINDOWS="10s", SOCIALPULSE_GRACE="10s", SOCIALPULSE_IDLE="1s",
        SOCIALPULSE_REPLY_SLO=f"{SLO_S}s",
    )
    worker = spawn_worker(env, tmp, "first")
    worker.wait_ready(60)
    b = int(time.time() * 1000)
    s = 1000
    before = [
        m("a1", "c1", b, "inbound"), m("a2", "c1", b + 1 * s, "outbound", "bot", automated=True),
        m("a3", "c1", b + 3 * s, "outbound", "ana"),
        m("b1", "c3", b + 6 * s, "outbound", "ben"), m("b2", "c3", b + 2 * s, "inbound"),  # reply arrives first
        m("c1", "c4", b + 1 * s, "inbound"), m("c2", "c4", b + 2 * s, "inbound"), m("c3", "c4", b + 8 * s, "outbound", "chloe"),
        m("d1", "c5", b + 4 * s, "inbound"),  # the worker dies while c5 waits
    ]
    produce(broker, before)
    wait_until(lambda: accepted_messages(worker) == len(before), 30, what="first messages counted")
    # crash mid-conversation and restart: the waiting spell of c5 must survive
    time.sleep(2.5)  # past a commit interval and a flush: the state is in the changelog
    worker.proc.send_signal(signal.SIGKILL)
    worker.proc.wait(10)
    restarted = spawn_worker(env, tmp, "restarted")
    restarted.wait_ready(60)
    produce(broker, [m("d2", "c5", b + 9 * s, "outbound", "ana"), m("a3", "c1", b + 3 * s, "outbound", "ana")])  # + a retry
    wait_until(lambda: value(restarted.metrics(), "socialpulse_reply_latency_seconds_count", account="acme") == 4, 30,
               what="c5's reply after the restart")
    # now a conversation nobody answers, with no other traffic at all
    b2 = int(time.time() * 1000)
    produce(broker, [m("e1", "c2", b2, "inbound")])
    breached = wait_until(lambda: value(restarted.metrics(), "socialpulse_reply_sla_total", result="breached"), SLO_S + 30,
                          interval=0.2, what="the breach")
    breach_delay = time.time() - (b2 / 1000 + SLO_S)
    yield restarted, b, b2, breached, breach_delay, broker
    stop_process(restarted.proc)


def test_latencies_survive_a_crash_and_count_once(run):
    worker, *_ = run
    text = worker.metrics()
    assert value(text, "socialpulse_reply_latency_seconds_count", account="acme") == 4  # c1 3s, c3 4s, c4 7s, c5 5s
    assert value(text, "socialpulse_reply_latency_seconds_sum", account="acme") == 3 + 4 + 7 + 5
    assert value(text, "socialpulse_reply_latency_seconds_bucket", account="acme", le="60.0") == 4
    assert value(text, "socialpulse_first_response_seconds_count", account="acme") == 4
    assert value(text, "socialpulse_reply_sla_total", account="acme", result="met") == 4
    assert value(text, "socialpulse_agent_reply_latency_seconds_sum", agent="ana") == 3 + 5
    assert value(text, "socialpulse_events_total", topic="messages", outcome="duplicate") == 1


def test_an_unanswered_conversation_breaches_within_seconds_without_traffic(run):
    worker, _, b2, breached, delay, broker = run
    print(f"breach seen {delay:.1f}s after the SLO passed")
    assert breached == 1 and delay < 5
    text = worker.metrics()
    assert value(text, "socialpulse_awaiting_reply", account="acme") == 1
    assert value(text, "socialpulse_oldest_awaiting_reply_timestamp_seconds", account="acme") == b2 / 1000
    records = [orjson.loads(x.value()) for x in consume_all(broker, PREFIX + "socialpulse.reply-breaches", expect=1)]
    assert [(r["conversation_id"], r["waiting_since"], r["slo_seconds"]) for r in records] == [("c2", iso(b2), SLO_S)]


def test_api_and_window_gauges_agree(run):
    worker, *_ = run
    status, body = worker.get("/api/v1/accounts/instagram/acme")
    assert status == 200
    rep = orjson.loads(body)["replies"]
    win = rep["windows"]["5m"]
    assert win["reply_latency_seconds"]["count"] == 4 and win["reply_latency_seconds"]["mean"] == 19 / 4
    assert (win["conversations_started"], win["replied"]) == (5, 4) and win["response_rate"] == 0.8
    assert rep["awaiting_reply"] == 1 and rep["sla"] == {"met": 4, "breached": 1}
    text = worker.metrics()
    assert value(text, "socialpulse_response_rate", account="acme", window="5m") == 0.8
    assert value(text, "socialpulse_reply_latency_window_seconds", account="acme", window="5m", quantile="0.5") == 4.5
