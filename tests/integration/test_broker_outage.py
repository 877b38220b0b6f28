"""The broker goes away: a worker never hangs silently. While no broker answers,
/readyz says so (503, "unreachable for N s") and /healthz stays 200; a broker
that comes back without the data the worker built on (the embedded broker keeps
everything in memory) makes the worker stop with an error; a broker that stays
away past SOCIALPULSE_BROKER_TIMEOUT makes it stop with a message naming that
setting. A supervisor (Kubernetes, compose) then restarts it visibly."""

from __future__ import annotations

import json
import signal
import time

import orjson
import pytest
from confluent_kafka import Producer

from streams.broker import start_broker

from ..helpers import free_port, metric_value, spawn_worker, stop_process, wait_until, worker_env

pytestmark = pytest.mark.integration


def readyz(worker) -> tuple[int, dict]:
    status, body = worker.get("/readyz")
    return status, json.loads(body)


def likes(bootstrap: str, n: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    for i in range(n):
        p.produce("out.likes", orjson.dumps({"event_id": f"e{i}", "ts": int(time.time() * 1000), "platform": "x",
                                             "account_id": "a", "post_id": "p", "actor_id": "u"}))
    p.flush(10)


@pytest.fixture
def outage(tmp_path):
    port = free_port()
    broker = start_broker(port)
    bootstrap = f"127.0.0.1:{port}"
    env = worker_env(bootstrap, "out.", tmp_path / "data", SOCIALPULSE_BROKER_TIMEOUT="20s",
                     SOCIALPULSE_REBALANCE_TIMEOUT="20s", SOCIALPULSE_STORE="rocksdb://")
    worker = spawn_worker(env, tmp_path, "outage")
    worker.wait_ready(60)
    likes(bootstrap, 30)
    wait_until(lambda: metric_value(worker.metrics(), "socialpulse_engagements", account="a") == 30, 30, what="likes counted")
    time.sleep(2.5)  # committed and flushed
    broker.send_signal(signal.SIGKILL)
    broker.wait(10)
    yield worker, port
    stop_process(worker.proc)


def test_readyz_says_the_broker_is_gone_and_a_broker_without_our_data_stops_the_worker(outage):
    worker, port = outage
    status, body = wait_until(lambda: (s := readyz(worker))[0] == 503 and s, 15, what="/readyz 503")
    assert body["broker"].startswith("unreachable for") and body["ready"] is False
    assert worker.get("/healthz")[0] == 200
    broker = start_broker(port)  # an in-memory broker restarts empty
    try:
        began = time.monotonic()
        wait_until(lambda: worker.proc.poll() is not None, 60, what="the worker to stop")
        print(f"worker stopped {time.monotonic() - began:.1f} s after the empty broker came back")
        assert worker.proc.returncode != 0
        log = worker.log.read_text(errors="replace")
        # the restarted broker's changelog ends before what this worker wrote, or a topic now
        # ends before an offset this worker committed (the keyed topics carry watermark marks
        # every second, so they notice first), or the rebalance the outage began cannot finish
        # (its flush went to the broker that died)
        assert (("ConsistencyError" in log and "higher" in log) or "the broker lost data" in log
                or "SOCIALPULSE_REBALANCE_TIMEOUT" in log)
    finally:
        stop_process(broker)


def test_a_broker_away_past_the_timeout_stops_the_worker_naming_the_setting(outage):
    worker, _ = outage
    began = time.monotonic()
    wait_until(lambda: worker.proc.poll() is not None, 60, what="the worker to give up")
    print(f"worker stopped {time.monotonic() - began:.1f} s after the broker died (timeout 20 s)")
    assert worker.proc.returncode != 0
    assert "SOCIALPULSE_BROKER_TIMEOUT" in worker.log.read_text(errors="replace")
