"""One worker's state across a graceful stop, a restart with its data dir wiped (full
restore from the changelog), and an upstream producer re-sending everything: the totals
of every family stay exact."""

from __future__ import annotations

import shutil
import signal
import time

import pytest

from ..helpers import spawn_worker, stop_process, wait_until, worker_env
from .test_scale_out import Feed, summed

pytestmark = [pytest.mark.integration, pytest.mark.kafka]
PREFIX = "rs."


def totals(worker) -> tuple[float, float, float, float]:
    texts = [worker.metrics()]
    return (
        sum(summed(texts, "socialpulse_engagements", window="5m").values()),
        sum(summed(texts, "socialpulse_attributed_orders", window="5m").values()),
        sum(summed(texts, "socialpulse_reply_latency_seconds_count").values()),
        round(sum(summed(texts, "socialpulse_reply_latency_seconds_sum").values()), 6),
    )


def test_graceful_stop_wiped_restart_and_a_full_resend_keep_every_total_exact(broker, tmp_path):
    data = tmp_path / "data"
    env = worker_env(broker, PREFIX, data, SOCIALPULSE_BUCKET="1s", SOCIALPULSE_TRAILING_WINDOWS="5m",
                     SOCIALPULSE_CLOSED_WINDOWS="10s", SOCIALPULSE_GRACE="2m", SOCIALPULSE_IDLE="2s",
                     SOCIALPULSE_STORE="rocksdb://")
    worker = spawn_worker(env, tmp_path, "first")
    worker.wait_ready(60)
    feed = Feed(broker, seed=21, prefix=PREFIX, record=True)
    feed.burst(400)
    feed.answer_and_buy()
    t = feed.t
    want = (sum(t.eng.values()), sum(t.orders.values()), sum(t.replies.values()), round(sum(t.latency_sum.values()), 6))
    wait_until(lambda: totals(worker) == want, 60, what=f"every family counted: {want}")
    time.sleep(2.5)  # a commit interval

    began = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)  # graceful: finish, flush, commit, leave the group
    assert worker.proc.wait(30) == 0
    print(f"graceful stop took {time.monotonic() - began:.1f} s")

    restarted = spawn_worker(env, tmp_path, "restarted")  # same data dir
    print(f"restart with its data dir ready in {restarted.wait_ready(60):.1f} s")
    wait_until(lambda: totals(restarted) == want, 30, what="the same totals after a graceful restart")
    stop_process(restarted.proc)

    shutil.rmtree(data)  # nothing local left: everything comes back from the changelog
    wiped = spawn_worker(env, tmp_path, "wiped")
    print(f"restart with a wiped data dir ready in {wiped.wait_ready(60):.1f} s")
    wait_until(lambda: totals(wiped) == want, 30, what="the same totals after a full restore")

    feed.resend_all()  # an upstream producer retries everything it ever sent
    # the wiped worker's own counters start at zero: it sees the resend only
    wait_until(lambda: wiped_outcomes(wiped).get("duplicate", 0) >= len(feed.sent or []), 60, what="the resend read")
    time.sleep(2)
    assert totals(wiped) == want
    assert wiped_outcomes(wiped).get("accepted", 0) == 0  # every resent event was recognised
    stop_process(wiped.proc)


def wiped_outcomes(worker) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(worker.metrics()):
        for s in fam.samples:
            if s.name == "socialpulse_events_total":
                out[s.labels["outcome"]] = out.get(s.labels["outcome"], 0) + s.value
    return out


def test_a_rolling_restart_of_two_workers_under_live_traffic_keeps_every_family_exact(broker, tmp_path):
    """The way an upgrade rolls: stop one worker, start the new one on its data dir, wait
    until it is ready, then the other; traffic never stops."""
    from .test_scale_out import cluster_env, scrape_all

    env = lambda d: cluster_env(broker, "roll.", tmp_path / d)  # noqa: E731
    a, b = spawn_worker(env("a"), tmp_path, "a"), spawn_worker(env("b"), tmp_path, "b")
    a.wait_ready(60)
    b.wait_ready(60)
    feed = Feed(broker, seed=33, prefix="roll.")
    live = {}
    with feed.flowing(30):
        time.sleep(3)
        for name, old in (("a", a), ("b", b)):
            old.proc.send_signal(signal.SIGTERM)
            assert old.proc.wait(60) == 0, f"worker {name} did not stop cleanly"
            new = spawn_worker(env(name), tmp_path, f"{name}-upgraded")
            new.wait_ready(90)
            live[name] = new
            time.sleep(2)
    feed.answer_and_buy()
    workers = [live["a"], live["b"]]
    tr = feed.t
    want = (sum(tr.eng.values()), sum(tr.orders.values()), sum(tr.replies.values()), round(sum(tr.latency_sum.values()), 3))

    def got():
        texts = scrape_all(workers)
        return (
            sum(summed(texts, "socialpulse_engagements", window="5m").values()),
            sum(summed(texts, "socialpulse_attributed_orders", window="5m").values()),
            sum(summed(texts, "socialpulse_reply_latency_seconds_count").values()),
            round(sum(summed(texts, "socialpulse_reply_latency_seconds_sum").values()), 3),
        )

    last = []
    try:
        wait_until(lambda: last.append(got()) or last[-1] == want, 120, interval=2, what="every family exact")
    except AssertionError:
        raise AssertionError(f"(engagements, orders, replies, latency sum) {last[-1]}, truth {want}") from None
    for w in workers:
        stop_process(w.proc)
