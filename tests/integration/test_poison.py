"""Poison records where a worker does not expect them: on its internal keyed topic (dead-
lettered, counted, the rest goes on) and in its changelog (recovery stops, naming topic,
partition and offset, instead of dropping state)."""

from __future__ import annotations

import time

import orjson
import pytest
from confluent_kafka import Producer

from streams.keyed import FORMAT
from streams.windows import iso

from ..helpers import consume_all, metric_value, spawn_worker, stop_process, wait_until, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.kafka]
PREFIX = "poison."


def like(i: int, account: str = "acme") -> bytes:
    return orjson.dumps({"event_id": f"l{i}", "ts": iso(int(time.time() * 1000)), "platform": "instagram",
                         "account_id": account, "post_id": "p", "actor_id": f"u{i}"})


def engagements(worker) -> float:
    return metric_value(worker.metrics(), "socialpulse_engagements", platform="instagram", account="acme", window="5m") or 0.0


def test_poison_on_the_keyed_topic_is_dead_lettered_and_a_bad_changelog_record_stops_recovery(broker, tmp_path):
    env = worker_env(broker, PREFIX, tmp_path / "data", SOCIALPULSE_STORE="rocksdb://", SOCIALPULSE_IDLE="1s")
    worker = spawn_worker(env, tmp_path, "first")
    worker.wait_ready(60)
    p = Producer({"bootstrap.servers": broker, "linger.ms": 5})
    for i in range(5):
        p.produce(PREFIX + "likes", like(i))
    p.flush(10)
    wait_until(lambda: engagements(worker) == 5, 30, what="5 likes counted")

    keyed = PREFIX + "socialpulse.by-account"
    row = ["likes", PREFIX + "likes", 0, 99, "instagram|acme", {"event_id": "x", "ts": "never"}, True, 1]
    poison = [
        b"\xff\xfe not json",                                    # not JSON at all
        orjson.dumps({"hello": "world"}),                        # an object that is no marks record
        orjson.dumps([FORMAT + 1, row]),                        # a newer socialpulse's format
        orjson.dumps([FORMAT, row]),                            # a forwarded event that does not validate
    ]
    for value in poison:
        p.produce(keyed, value, partition=0)
        p.produce(keyed, value, partition=1)
    for i in range(5, 8):
        p.produce(PREFIX + "likes", like(i))
    p.flush(10)
    wait_until(lambda: engagements(worker) == 8, 30, what="the likes after the poison counted")
    dlq = consume_all(broker, PREFIX + "socialpulse.dlq", expect=8, timeout=30)
    reasons = sorted(orjson.loads(m.value())["reason"] for m in dlq)
    assert reasons == ["bad_internal"] * 6 + ["unknown_format"] * 2, reasons
    newer = next(orjson.loads(m.value()) for m in dlq if orjson.loads(m.value())["reason"] == "unknown_format")
    assert newer["source_topic"] == keyed and f"reads versions 0 to {FORMAT}" in newer["detail"]
    text = worker.metrics()
    assert metric_value(text, "socialpulse_events_total", topic="socialpulse.by-account", outcome="invalid") == 6
    assert metric_value(text, "socialpulse_dead_letters_total", topic="socialpulse.by-account", reason="unknown_format") == 2
    assert worker.proc.poll() is None

    stop_process(worker.proc)  # a clean stop: its local store is kept, recovery reads what is newer
    assert worker.proc.returncode == 0
    changelog = f"{PREFIX}socialpulse-account-state-changelog"
    for partition in (0, 1):
        p.produce(changelog, b'{"~v":1,"engagement": not json', key=b"instagram|acme", partition=partition)
    p.flush(10)
    restarted = spawn_worker(env, tmp_path, "restarted")
    assert restarted.proc.wait(90) != 0, "recovery must stop on a record it cannot read"
    log = restarted.log.read_text()
    assert f"changelog record {changelog}[" in log and "offset" in log and "cannot be read" in log, log[-3000:]
    assert "docs/operations.md" in log
