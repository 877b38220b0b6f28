"""Health: the broker watch (a TCP probe with a timeout) and the data-loss check."""

import asyncio
import socket

import pytest
from faust.types import TP

from streams.health import BrokerLost, BrokerWatch, offsets_gone, shortened


def test_urls_are_parsed_with_the_default_port():
    watch = BrokerWatch.from_urls("kafka://a:9093, kafka://b", 5)
    assert watch.servers == [("a", 9093), ("b", 9092)] and watch.describe() == "a:9093,b:9092"


def test_a_broker_that_stays_away_past_the_timeout_stops_the_worker():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    watch = BrokerWatch([("127.0.0.1", port)], timeout_s=10)

    async def scenario():
        assert await watch.check(now=100.0) is False and watch.status(now=104.0) == "unreachable for 4 s"
        assert await watch.check(now=109.0) is False  # within the timeout: keep trying
        with pytest.raises(BrokerLost, match=r"for 11 s \(SOCIALPULSE_BROKER_TIMEOUT = 10 s\)"):
            await watch.check(now=111.0)

    asyncio.run(scenario())


def test_a_broker_that_answers_again_resets_the_clock():
    async def scenario():
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        watch = BrokerWatch([("127.0.0.1", port)], timeout_s=10)
        watch.down_since = 50.0
        assert await watch.check(now=100.0) is True and watch.down_since is None and watch.status() == "reachable"
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())


def test_a_log_that_ends_before_a_committed_offset_means_the_broker_lost_data():
    assert shortened("likes", 0, end=10, committed=10) is None
    assert shortened("likes", 0, end=None, committed=10) is None
    reason = shortened("likes", 3, end=4, committed=10)
    assert reason is not None and "likes[3] now ends at offset 4, before offset 10" in reason


def test_a_broker_without_the_groups_offsets_lost_data():
    a, b = TP("in", 0), TP("in", 1)
    reason = offsets_gone({a: None, b: None}, {a: 120, b: 7})
    assert reason is not None and "in[0] was committed at 120" in reason and "lost data" in reason
    assert offsets_gone({a: None, b: 7}, {a: 120, b: 7}) is None  # the group is still there
    assert offsets_gone({a: 90, b: None}, {a: 120, b: 7}) is None  # behind is not gone (shortened() judges ends)
    assert offsets_gone({}, {}) is None  # nothing committed yet: nothing to lose
    assert offsets_gone({a: None}, {a: 0}) is None


def test_brokers_that_answer_but_take_no_write_make_the_worker_unready():
    """Fewer in-sync replicas than min.insync.replicas, or no controller quorum: the brokers
    answer a TCP connect, but no changelog record is acknowledged."""
    watch = BrokerWatch.from_urls("kafka://a:9092", 120)
    watch.writes_stalled_s = 14.0  # leaders moving after one broker is lost: not yet
    assert watch.status() == "reachable"
    watch.writes_stalled_s = 22.4
    assert watch.status() == "writes not acknowledged for 22 s"


def test_the_write_stall_counts_from_the_last_acknowledgement(monkeypatch):
    from streams import changelog

    monkeypatch.setattr(changelog, "_pending", 0)
    assert changelog.write_stall(now=1e9) == 0.0  # nothing waits: nothing is stalled
    monkeypatch.setattr(changelog, "_pending", 3)
    monkeypatch.setattr(changelog, "_waiting_since", 100.0)
    assert changelog.write_stall(now=115.0) == 15.0
