"""Nothing lost: history, outages and late sources, through real broker and worker processes.

Each scenario starts ``socialpulse worker`` the way the README does, with default
settings (only the deployment ones: broker, topic prefix, data dir), and drives it
through the topics alone. Every family is checked: engagement, replies, conversion.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import orjson
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from schemas.events import INPUT_TOPICS
from streams.windows import iso

from ..helpers import spawn_worker, stop_process, wait_until, worker_env
from .test_scale_out import Feed, scrape_all, summed, total

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

MIN = 60_000
HOUR = 60 * MIN
ACCOUNTS = [("instagram", "ig-0"), ("instagram", "ig-1"), ("tiktok", "tt-0"), ("linkedin", "li-0")]
#: input topics with differing partition counts, as a real cluster has them
PARTITIONS = {"likes": 3, "impressions": 2, "audience": 1, "clicks": 3, "messages": 2, "orders": 2, "spend": 1,
              "leads": 1, "sessions": 2, "checkouts": 1, "posts": 2, "connections": 1}


def create_topics(broker: str, prefix: str) -> None:
    admin = AdminClient({"bootstrap.servers": broker})
    futures = admin.create_topics([NewTopic(prefix + t, PARTITIONS[t], 1) for t in INPUT_TOPICS])
    for f in futures.values():
        f.result(15)


@dataclass
class History:
    """Deterministic traffic of every input topic, minute by minute, with its truth."""

    records: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    likes: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    likes_per_minute: dict[tuple[str, str, int], int] = field(default_factory=lambda: defaultdict(int))
    impressions: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    clicks: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    replies: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    latency: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    orders: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    revenue: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    n: int = 0

    def add(self, topic: str, ts: int, **fields: object) -> None:
        self.n += 1
        self.records[topic].append(orjson.dumps({"event_id": f"h{self.n}", "ts": iso(ts)} | fields))

    @classmethod
    def of(cls, start: int, minutes: int) -> History:
        h = cls()
        for m in range(minutes):
            t = start + m * MIN
            for i, acct in enumerate(ACCOUNTS):
                base = {"platform": acct[0], "account_id": acct[1]}
                for k in range(2 + (m + i) % 4):
                    h.add("likes", t + 1_000 * k, **base, post_id=f"p{k % 2}", actor_id=f"fan{k}")
                    h.likes[acct] += 1
                    h.likes_per_minute[(*acct, t)] += 1
                h.add("impressions", t + 5_000, **base, post_id="p0", count=100 + m)
                h.impressions[acct] += 100 + m
                if m % 5 == 0:
                    h.add("audience", t + 6_000, **base, followers=1_000 + m)
                    h.add("spend", t + 7_000, **base, campaign_id="spring", amount="12.50", currency="USD")
                conv = f"c-{acct[1]}-{m}"
                h.add("messages", t + 10_000, **base, conversation_id=conv, direction="inbound", author_id="cust")
                latency = 20 + 3 * i + m % 7
                h.add("messages", t + 10_000 + latency * 1_000, **base, conversation_id=conv, direction="outbound",
                      author_id="ana", agent_id="ana")
                h.replies[acct] += 1
                h.latency[acct] += latency
                for j in range(2):
                    shopper = f"s-{acct[1]}-{m}-{j}"
                    h.add("clicks", t + 12_000 + j, **base, actor_id=shopper, click_id=f"k-{shopper}", campaign_id="spring")
                    h.clicks[acct] += 1
                shopper = f"s-{acct[1]}-{m}-0"
                h.add("orders", t + 50_000, order_id=f"o-{shopper}", actor_id=shopper, amount=f"{10 + m}.00",
                      currency="USD", click_id=f"k-{shopper}")
                h.orders[acct] += 1
                h.revenue[acct] += 10 + m
        return h

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.records.values())


class Results:
    """Reads socialpulse.results as a downstream consumer would: upsert by key, highest revision wins."""

    def __init__(self, broker: str, topic: str) -> None:
        self.c = Consumer({
            "bootstrap.servers": broker, "group.id": f"results-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
        })
        self.c.subscribe([topic])
        self.latest: dict[bytes, dict] = {}
        self.all: list[dict] = []

    def poll(self, seconds: float = 1.0) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            msg = self.c.poll(0.2)
            if msg is None or msg.error():
                continue
            rec = orjson.loads(msg.value())
            self.all.append(rec)
            old = self.latest.get(msg.key())
            if old is None or rec["revision"] >= old["revision"]:
                self.latest[msg.key()] = rec

    def find(self, metric: str, platform: str, account: str, window: str, start: int, poll: bool = True) -> dict | None:
        if poll:
            self.poll(0.5)
        for rec in self.latest.values():
            if (rec["metric"], rec["platform"], rec["account_id"], rec["window"], rec["window_start"]) == (
                    metric, platform, account, window, iso(start)):
                return rec
        return None

    def close(self) -> None:
        self.c.close()


def by_account(texts: list[str], name: str, **match: str) -> dict[tuple[str, str], float]:
    return {a: v for a, v in summed(texts, name, **match).items() if v}


def start(broker: str, tmp_path, prefix: str) -> tuple:
    """Topics, a worker started as the README does (default settings), and a results reader."""
    create_topics(broker, prefix)
    worker = spawn_worker(worker_env(broker, prefix, tmp_path / "data"), tmp_path)
    worker.wait_ready(90)
    return worker, Results(broker, prefix + "socialpulse.results")


# -- first start on history ------------------------------------------------------------

@pytest.fixture(scope="module")
def history_run(broker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("history")
    prefix = "hist."
    create_topics(broker, prefix)
    now = int(time.time() * 1000)
    start = now - now % MIN - 25 * MIN
    hist = History.of(start, 24)  # 24 minutes of every topic, the newest a minute old
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 20})
    for topic in reversed(INPUT_TOPICS):  # topic after topic: the broker holds them unevenly
        for value in hist.records[topic]:
            producer.produce(prefix + topic, value)
        assert producer.flush(30) == 0
    worker = spawn_worker(worker_env(broker, prefix, tmp / "data"), tmp)
    worker.wait_ready(90)
    wait_until(lambda: total(scrape_all([worker]), "socialpulse_events_total") == hist.total, 120,
               what=f"all {hist.total} history records counted")
    results = Results(broker, prefix + "socialpulse.results")
    yield worker, hist, start, results
    results.close()
    stop_process(worker.proc)


def test_first_start_on_history_loses_nothing_to_lateness(history_run):
    worker, hist, *_ = history_run
    texts = scrape_all([worker])
    assert total(texts, "socialpulse_events_total", outcome="late") == 0
    assert total(texts, "socialpulse_events_total", outcome="accepted") == hist.total


def test_first_start_on_history_counts_engagement_exactly(history_run):
    worker, hist, *_ = history_run
    texts = scrape_all([worker])
    assert by_account(texts, "socialpulse_engagements", window="1h") == {a: float(n) for a, n in hist.likes.items()}
    assert by_account(texts, "socialpulse_impressions", window="1h") == {a: float(n) for a, n in hist.impressions.items()}
    assert by_account(texts, "socialpulse_clicks", window="1h") == {a: float(n) for a, n in hist.clicks.items()}


def test_first_start_on_history_counts_replies_exactly(history_run):
    worker, hist, *_ = history_run
    texts = scrape_all([worker])
    assert by_account(texts, "socialpulse_reply_latency_seconds_count") == {a: float(n) for a, n in hist.replies.items()}
    sums = by_account(texts, "socialpulse_reply_latency_seconds_sum")
    assert sums == {a: pytest.approx(v) for a, v in hist.latency.items()}
    assert by_account(texts, "socialpulse_conversations_started", window="1h") == {
        a: float(n) for a, n in hist.replies.items()}
    assert total(texts, "socialpulse_awaiting_reply") == 0


def test_first_start_on_history_counts_conversion_exactly(history_run):
    worker, hist, *_ = history_run
    texts = scrape_all([worker])
    assert by_account(texts, "socialpulse_attributed_orders", window="1h") == {a: float(n) for a, n in hist.orders.items()}
    revenue = by_account(texts, "socialpulse_attributed_revenue", window="1h", model="last_touch", currency="USD")
    assert revenue == {a: float(v) for a, v in hist.revenue.items()}


def test_first_start_on_history_publishes_each_closed_minute_once_and_exactly(history_run):
    worker, hist, start, results = history_run
    # minutes whose end + grace (5 min) the wall clock has passed are published
    due = [(p, a, t) for (p, a, t) in hist.likes_per_minute if t + MIN + 5 * MIN <= time.time() * 1000 - 2_000]
    assert len(due) >= 4 * 15

    def all_published() -> bool:
        results.poll(1.0)
        return all(results.find("engagements", p, a, "1m", t, poll=False) is not None for p, a, t in due)

    wait_until(all_published, 60, interval=1, what="every closed minute published")
    for p, a, t in due:
        rec = results.find("engagements", p, a, "1m", t, poll=False)
        assert rec is not None and (rec["value"], rec["revision"]) == (hist.likes_per_minute[(p, a, t)], 0)
    assert total(scrape_all([worker]), "socialpulse_results_corrected_total") == 0  # nothing had to be corrected


# -- an outage longer than the grace ---------------------------------------------------------------

def test_an_outage_longer_than_the_grace_loses_nothing(broker, tmp_path):
    prefix = "outage."
    create_topics(broker, prefix)
    # GRACE shortened (a user's choice) so the outage is several times the grace within a test
    env = worker_env(broker, prefix, tmp_path / "data", SOCIALPULSE_GRACE="10s")
    worker = spawn_worker(env, tmp_path, "before")
    worker.wait_ready(90)
    feed = Feed(broker, seed=4, prefix=prefix)
    feed.burst(300)
    time.sleep(2)
    worker.proc.send_signal(signal.SIGKILL)  # a crash, then a long outage while traffic goes on
    worker.proc.wait(10)
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            feed.burst(30)
            time.sleep(0.5)

    t = threading.Thread(target=traffic)
    t.start()
    time.sleep(35)  # 3.5 x the grace
    stop.set()
    t.join()
    feed.answer_and_buy()
    after = spawn_worker(env, tmp_path, "after")
    try:
        after.wait_ready(90)
        want = (sum(feed.t.eng.values()), sum(feed.t.imp.values()), sum(feed.t.replies.values()), sum(feed.t.orders.values()))
        last: list[object] = []

        def exact() -> bool:
            texts = scrape_all([after])
            got = (sum(summed(texts, "socialpulse_engagements", window="5m").values()),
                   sum(summed(texts, "socialpulse_impressions", window="5m").values()),
                   sum(summed(texts, "socialpulse_reply_latency_seconds_count").values()),
                   sum(summed(texts, "socialpulse_attributed_orders", window="5m").values()))
            last[:] = [got]
            return got == want

        try:
            wait_until(exact, 90, interval=2, what="every event of the outage counted")
        except AssertionError:
            raise AssertionError(f"(engagements, impressions, replies, orders) {last[0]}, truth {want}") from None
        time.sleep(3)
        texts = scrape_all([after])
        assert total(texts, "socialpulse_events_total", outcome="late") == 0
        assert by_account(texts, "socialpulse_engagements", window="5m") == {a: float(n) for a, n in feed.t.eng.items()}
        revenue = by_account(texts, "socialpulse_attributed_revenue", window="5m", model="last_touch", currency="USD")
        assert revenue == {a: float(v) for a, v in feed.t.revenue.items()}
        sums = by_account(texts, "socialpulse_reply_latency_seconds_sum")
        assert sums == {a: pytest.approx(v, abs=1e-6) for a, v in feed.t.latency_sum.items()}
    finally:
        stop_process(after.proc)


# -- a late source ---------------------------------------------------------------------------------

def test_a_source_two_hours_late_corrects_published_windows_and_three_days_is_late(broker, tmp_path):
    prefix = "latesrc."
    worker, results = start(broker, tmp_path, prefix)
    producer = Producer({"bootstrap.servers": broker})
    n = iter(range(10**6))

    def send(topic: str, ts: int, **fields: object) -> None:
        producer.produce(prefix + topic, orjson.dumps({"event_id": f"x{next(n)}", "ts": iso(ts)} | fields))

    ig = {"platform": "instagram", "account_id": "late-brand"}
    try:
        now = int(time.time() * 1000)
        send("likes", now, **ig, post_id="p", actor_id="u")  # live traffic: the watermark is now
        old = now - 2 * HOUR
        hour = old - old % HOUR
        send("likes", old, **ig, post_id="p", actor_id="u1")
        producer.flush(10)
        # the first late like: its hour closed long ago, so it is published at once, revision 0
        first = wait_until(lambda: results.find("engagements", "instagram", "late-brand", "1h", hour), 30,
                           what="the late hour published")
        assert (first["value"], first["revision"]) == (1, 0)

        # two hours late, every family: a like, a conversation answered in 90 s, a click and its order
        send("likes", old + 1_000, **ig, post_id="p", actor_id="u2")
        send("messages", old + 2_000, **ig, conversation_id="c1", direction="inbound", author_id="cust")
        send("messages", old + 92_000, **ig, conversation_id="c1", direction="outbound", author_id="ana", agent_id="ana")
        send("clicks", old + 3_000, **ig, actor_id="shopper", click_id="k1")
        send("orders", old + 60_000, order_id="o1", actor_id="shopper", amount="42.00", currency="USD", click_id="k1")
        producer.flush(10)

        def corrected() -> dict | None:
            rec = results.find("engagements", "instagram", "late-brand", "1h", hour)
            return rec if rec and rec["revision"] >= 1 else None

        def both() -> dict | None:  # the like and the click (engagement counts clicks too) are in
            rec = corrected()
            clicks = results.find("clicks", "instagram", "late-brand", "1h", hour, poll=False)
            return rec if rec and rec["value"] == 2 and clicks and clicks["value"] == 1 else None

        second = wait_until(both, 30, what="the hour re-published")
        # the same key, a higher revision (one per batch that changed it: the like's and the click's)
        assert second["key"] == first["key"] and second["revision"] >= 1
        revisions = [r["revision"] for r in results.all if r["key"] == first["key"]]
        assert revisions == sorted(revisions) and revisions[0] == 0
        latency = wait_until(lambda: results.find("reply_latency_seconds", "instagram", "late-brand", "1h", hour), 60,
                             what="the late reply published")
        assert latency["value"] == 90.0 and latency["count"] == 1
        orders = wait_until(lambda: results.find("attributed_orders", "instagram", "late-brand", "1h", hour), 60,
                            what="the late order published")
        assert orders["value"] == 1
        revenue = wait_until(
            lambda: results.find("attributed_revenue", "instagram", "late-brand", "1h", hour), 60, what="revenue")
        assert revenue["value"] == 42.0

        # a second late conversation and order: replies and conversion are corrected too
        send("messages", old + 5_000, **ig, conversation_id="c2", direction="inbound", author_id="cust")
        send("messages", old + 35_000, **ig, conversation_id="c2", direction="outbound", author_id="ana", agent_id="ana")
        send("clicks", old + 6_000, **ig, actor_id="shopper2", click_id="k2")
        send("orders", old + 70_000, order_id="o2", actor_id="shopper2", amount="8.00", currency="USD", click_id="k2")
        producer.flush(10)

        def revised(metric: str) -> dict | None:
            rec = results.find(metric, "instagram", "late-brand", "1h", hour)
            return rec if rec and rec["revision"] >= 1 else None

        lat2 = wait_until(lambda: revised("reply_latency_seconds"), 30, what="replies corrected")
        assert (lat2["count"], lat2["value"]) == (2, 60.0)  # mean of 90 s and 30 s
        ord2 = wait_until(lambda: revised("attributed_orders"), 30, what="orders corrected")
        assert ord2["value"] == 2
        # a 30-minute-late like lies in the trailing hour: the live gauge has it
        send("likes", now - 30 * MIN, **ig, post_id="p", actor_id="u3")
        # three days old: beyond the allowed lateness (1 d), so late
        send("likes", now - 3 * 24 * HOUR, **ig, post_id="p", actor_id="u4")
        producer.flush(10)
        wait_until(lambda: total(scrape_all([worker]), "socialpulse_events_total", topic="likes", outcome="late") == 1,
                   30, what="the 3-day-old like counted late")
        texts = scrape_all([worker])
        assert summed(texts, "socialpulse_engagements", window="1h")[("instagram", "late-brand")] == 2  # now, and 30 min ago
        assert total(texts, "socialpulse_events_total", topic="likes", outcome="accepted") == 4
        assert total(texts, "socialpulse_results_corrected_total") >= 3
    finally:
        results.close()
        stop_process(worker.proc)


def test_random_delays_within_the_allowed_lateness_sum_to_the_truth_on_the_results_topic(broker, tmp_path):
    """Likes stamped up to 3 hours back, in random order: the upserted hourly results hold every one."""
    prefix = "shuffle."
    worker, results = start(broker, tmp_path, prefix)
    rng = random.Random(7)
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 5})
    now = int(time.time() * 1000)
    truth: dict[int, int] = defaultdict(int)
    try:
        for i in range(400):
            ts = now - rng.randint(0, 3 * HOUR)
            if ts - ts % HOUR + HOUR > now - 10 * MIN:  # only hours already closed
                continue
            truth[ts - ts % HOUR] += 1
            producer.produce(prefix + "likes", orjson.dumps({"event_id": f"r{i}", "ts": iso(ts), "platform": "x",
                                                             "account_id": "shuffled", "post_id": "p", "actor_id": "u"}))
            if i % 50 == 0:
                producer.flush(10)
                time.sleep(0.5)  # batches in several ticks: some hours are published, then corrected
        producer.flush(10)

        def exact() -> bool:
            results.poll(1.0)
            return all((r := results.find("engagements", "x", "shuffled", "1h", h, poll=False)) is not None
                       and r["value"] == n for h, n in truth.items())

        wait_until(exact, 60, interval=1, what="upserted hourly results equal the truth")
        assert total(scrape_all([worker]), "socialpulse_events_total", outcome="late") == 0
    finally:
        results.close()
        stop_process(worker.proc)
