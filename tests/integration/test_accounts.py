"""Account settings as data against the embedded broker: a worker started with an accounts
file reads ``socialpulse.accounts`` to its end before it is ready, applies a record published
while it runs without a restart, dead-letters a bad one (changing nothing) and falls back to
the file on a tombstone. A bad file stops start-up naming the account and the field."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from confluent_kafka import Producer

from streams.settings import load_settings
from streams.topics import ensure_topics

from ..helpers import ROOT, consume_all, metric_value, spawn_worker, stop_process, wait_until, worker_env

pytestmark = pytest.mark.integration
PREFIX = "accounts."
TOPIC = PREFIX + "socialpulse.accounts"
FILE = """
accounts:
  - platform: instagram
    account_id: shop
    timezone: Europe/Berlin
    business_hours: {mon: ["09:00-17:00"]}
    sla_policies: [{name: dm, channels: [dm], first_reply: 15m, hours: business}]
    currency: EUR
    benchmarks: {engagement_rate_by_followers: 0.01}
"""


def settings_of(worker, platform: str, account_id: str) -> tuple[int, dict]:
    status, body = worker.get(f"/api/v1/accounts/{platform}/{account_id}/settings")
    return status, json.loads(body)


def test_settings_from_the_topic_apply_while_the_worker_runs(broker, tmp_path):
    asyncio.run(ensure_topics(load_settings(broker=f"kafka://{broker}", topic_prefix=PREFIX, partitions=2)))
    p = Producer({"bootstrap.servers": broker, "linger.ms": 50})
    # before the worker starts: several records in one batch (Tansu's reported end is then too low)
    for zone in ("Asia/Tokyo", "Asia/Seoul", "Europe/Lisbon"):
        p.produce(TOPIC, json.dumps({"platform": "x", "account_id": "brand", "timezone": zone}).encode(), key=b"x|brand")
    p.flush(10)

    path = tmp_path / "accounts.yaml"
    path.write_text(FILE)
    env = worker_env(broker, PREFIX, tmp_path / "data", SOCIALPULSE_STORE="memory://",
                     SOCIALPULSE_ACCOUNTS_FILE=str(path))
    worker = spawn_worker(env, tmp_path)
    worker.wait_ready(45)
    # ready means read to the end: the last of the three is there at once
    status, brand = settings_of(worker, "x", "brand")
    assert status == 200 and brand["source"] == "topic" and brand["timezone"] == "Europe/Lisbon", brand
    status, shop = settings_of(worker, "instagram", "shop")
    assert status == 200 and shop["source"] == "file" and shop["timezone"] == "Europe/Berlin"
    assert shop["sla_policies"][0]["first_reply"] == 900_000 and shop["currency"] == "EUR"
    assert settings_of(worker, "tiktok", "nobody")[0] == 404

    # a change while it runs: no restart
    p.produce(TOPIC, json.dumps({"platform": "instagram", "account_id": "shop", "timezone": "America/Chicago",
                                 "benchmarks": {"engagement_rate_by_followers": 0.02}}).encode(), key=b"instagram|shop")
    p.flush(10)
    wait_until(lambda: settings_of(worker, "instagram", "shop")[1]["source"] == "topic", 15, what="the topic's settings")
    shop = settings_of(worker, "instagram", "shop")[1]
    assert shop["timezone"] == "America/Chicago" and shop["currency"] is None  # the topic's record wins whole
    text = worker.metrics()
    assert metric_value(text, "socialpulse_account_benchmark", platform="instagram", account="shop",
                        metric="engagement_rate_by_followers") == 0.02
    version = metric_value(text, "socialpulse_account_settings_version")

    # bad records: dead-lettered with a reason, counted, nothing changed
    p.produce(TOPIC, b"{not json", key=b"instagram|shop")
    p.produce(TOPIC, json.dumps({"platform": "x", "account_id": "brand"}).encode(), key=b"instagram|shop")
    p.produce(TOPIC, json.dumps({"platform": "instagram", "account_id": "shop", "timezone": "Mars/Olympus"}).encode(),
              key=b"instagram|shop")
    p.flush(10)
    wait_until(lambda: metric_value(worker.metrics(), "socialpulse_account_settings_total", outcome="invalid") == 3,
               15, what="3 invalid account records counted")
    dlq = [json.loads(m.value()) for m in consume_all(broker, PREFIX + "socialpulse.dlq", expect=3, timeout=20)]
    mine = sorted((d["reason"], d["detail"]) for d in dlq if d["source_topic"] == TOPIC)
    assert [r for r, _ in mine] == ["invalid", "invalid", "not_json"], mine
    assert any("names another account" in d for _, d in mine) and any("timezone" in d for _, d in mine)
    shop = settings_of(worker, "instagram", "shop")[1]
    assert shop["timezone"] == "America/Chicago" and shop["version"] == version
    assert metric_value(worker.metrics(), "socialpulse_dead_letters_total", topic="socialpulse.accounts",
                        reason="invalid") == 2

    # a tombstone: the file applies again
    p.produce(TOPIC, None, key=b"instagram|shop")
    p.flush(10)
    wait_until(lambda: settings_of(worker, "instagram", "shop")[1]["source"] == "file", 15, what="back to the file")
    assert settings_of(worker, "instagram", "shop")[1]["timezone"] == "Europe/Berlin"
    assert metric_value(worker.metrics(), "socialpulse_account_settings_total", outcome="removed") == 1
    stop_process(worker.proc)
    assert worker.proc.returncode == 0


def test_a_bad_accounts_file_stops_start_up_naming_the_account_and_the_field(broker, tmp_path):
    path = tmp_path / "accounts.yaml"
    path.write_text(FILE.replace("first_reply: 15m", "first_reply: soon"))
    env = worker_env(broker, PREFIX, tmp_path / "data", SOCIALPULSE_ACCOUNTS_FILE=str(path))
    worker = subprocess.run([sys.executable, "-m", "streams.cli", "worker"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert worker.returncode != 0
    assert "SOCIALPULSE_ACCOUNTS_FILE" in worker.stderr and "account instagram|shop" in worker.stderr
    assert "sla_policies.0.first_reply" in worker.stderr and "Traceback" not in worker.stderr, worker.stderr[-1500:]
