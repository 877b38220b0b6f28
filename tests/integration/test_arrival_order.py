"""Order never matters, end to end (METRICS.md, "Time"): one mixed scenario of every input
topic (``tests/fixtures/mixed_scenario.py``) is sent to three fresh stacks (a fresh embedded
broker and a fresh ``socialpulse worker`` each) in three arrival orders:

1. ``keyed``: event-time order, each record keyed by its conversation, shopper or account;
2. ``random``: event-time order, no key, each record on a random partition;
3. ``blocks``: shuffled within 10-minute blocks of event time, on random partitions.

Each stack is read once its end state is stable (every window closed: the events lie in the
past, the inputs go quiet, the watermark follows the wall clock; then nothing changes for a
while). The three end states must be equal: the results topic upserted by key (``revision``
aside), the breaches topic upserted by key, the ``socialpulse_`` samples on ``/metrics``
(pipeline health aside: ``IGNORED_SERIES``) and the account API of every account
(``IGNORED_API_FIELDS`` aside). A few absolute values computed from the scenario make sure
three equally empty runs cannot pass.

Records are produced before the worker starts (a first start on history, like a replay), into
topics with the README's default ``PARTITIONS`` (4). Settings beyond the deployment ones, as a
user would choose them:

- ``ALLOWED_LATENESS=2d``: the scenario lies in the previous UTC day (so the 1d windows close
  and every checkout's 1 h timeout has passed before the first run), up to 26 h old;
- ``TRAILING_WINDOWS=5m,1h,7d``: a weekly board's window; with the 5m and 1h windows alone the
  live gauges and the API's trailing blocks of a day-old scenario would all be empty.

``SOCIALPULSE_ARRIVAL_ORDERS=keyed,keyed`` (any list of the three names) runs other orders,
e.g. the same order twice to check that the comparison itself is deterministic;
``SOCIALPULSE_ARRIVAL_DUMP=DIR`` writes each end state there as JSON.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from schemas.events import INPUT_TOPICS
from streams.broker import start_broker

from ..fixtures.mixed_scenario import ACCOUNTS, DAY, MIN, SPAN, Event, Scenario, build, scenario_start
from ..helpers import free_port, http_get, spawn_worker, stop_process, wait_until, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]

PARTITIONS = 4  # the README's default
ORDERS = ("keyed", "random", "blocks")
BLOCK = 10 * MIN
SETTINGS = {"SOCIALPULSE_PARTITIONS": str(PARTITIONS), "SOCIALPULSE_ALLOWED_LATENESS": "2d",
            "SOCIALPULSE_TRAILING_WINDOWS": "5m,1h,7d"}
#: how long nothing may change before an end state counts as stable (IDLE is 5 s)
QUIET_S = 8.0

#: /metrics series that legitimately depend on arrival (or on the wall clock), not on the events
IGNORED_SERIES: dict[str, str] = {
    "socialpulse_batch_seconds": "processing time per batch: how the records were fetched and batched",
    "socialpulse_event_time_lag_seconds": "arrival time minus event time: wall clock at arrival",
    "socialpulse_watermark_timestamp_seconds": "follows the wall clock once the inputs are quiet",
    "socialpulse_consumer_lag_messages": "per input partition: how the records were spread over partitions",
    "socialpulse_inputs_behind": "transient reading state",
    "socialpulse_rebalances": "group membership history",
    "socialpulse_ready": "process state",
    "socialpulse_broker_up": "process state",
    "socialpulse_state_bytes": "encoded state size: sampled every 10 s, and maps keep arrival order",
    "socialpulse_dedup_ids": "ids held for de-duplication expire by arrival time (DEDUP_HORIZON)",
    "socialpulse_closed_windows_kept": "kept for corrections per keyed partition: a storage detail",
    "socialpulse_results_published_total": "how many publications (first ones plus corrections) depends on how "
                                           "late data came; the upserted results topic is compared instead",
    "socialpulse_results_corrected_total": "same: counts re-publications, which out-of-order arrival causes",
    "socialpulse_reply_breaches_published_total": "counts breach records sent, a withdrawn one (tombstone) too; the "
                                                  "upserted breaches topic and reply_sla_total are compared instead",
    "socialpulse_state_keys": "keys held in state: a storage detail (expiry, internal keys), not a metric",
    "socialpulse_publish_errors_total": "broker health; a lost record shows as a missing result anyway",
    "socialpulse_changelog_records_total": "changelog writes: a storage detail; each flush's marker records the "
                                           "watermark, which follows the wall clock once the inputs are quiet",
    "socialpulse_changelog_bytes_total": "same: bytes of those writes (pages, markers, ids)",
    "socialpulse_changelog_record_max_bytes": "the largest record written: pages depend on how state grew",
    "socialpulse_record_max_bytes": "the largest record written per topic: a result re-published by a "
                                    "correction (how late data came) may be larger than its first version",
}
#: name prefixes excluded as process metrics (prometheus_client's default collectors, if registered)
IGNORED_PREFIXES = ("socialpulse_process_", "socialpulse_python_")
#: account API fields that depend on arrival or on the wall clock, not on the events. (Its trailing windows are
#: relative to the watermark, which follows the wall clock: the 5m and 1h blocks are empty and
#: the 1w block holds the whole scenario for days, so they are compared as they are.)
IGNORED_API_FIELDS: dict[str, str] = {
    "watermark": "the key's partition watermark: it follows the wall clock once the inputs are quiet",
    "revision": "how many corrections a daily cohort needed depends on how late its data came "
                "(the results topic is compared without revision too)",
}


# -- the stack ---------------------------------------------------------------------------------

@dataclass
class EndState:
    order: str
    results: dict[str, dict[str, Any]]  # key -> last record, without revision
    breaches: dict[str, dict[str, Any]]  # key -> last record (tombstones removed)
    metrics: dict[str, float]  # "name{labels}" -> value
    api: dict[str, Any]  # "platform/account" -> body (ignored fields removed)
    revisions: int = 0  # how many records had revision > 0 (informational)
    seconds: float = 0.0  # the stack's whole life: broker, produce, worker, settling


def arrival(scenario: Scenario, order: str, seed: int = 7) -> list[tuple[Event, int | None]]:
    """The records in the order they are produced, each with its explicit partition (None:
    the producer's partitioner on the record's key)."""
    rng = random.Random(seed)
    if order == "keyed":
        return [(e, None) for e in scenario.events]
    if order == "random":
        return [(e, rng.randrange(PARTITIONS)) for e in scenario.events]
    if order == "blocks":
        shuffled = sorted(scenario.events, key=lambda e: ((e.ts - scenario.start) // BLOCK, rng.random()))
        return [(e, rng.randrange(PARTITIONS)) for e in shuffled]
    raise ValueError(order)


def produce(bootstrap: str, records: list[tuple[Event, int | None]]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in INPUT_TOPICS]).values():
        f.result(15)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for event, partition in records:
        value = orjson.dumps(event.value)
        if partition is None:
            producer.produce(event.topic, value, key=event.key.encode())
        else:
            producer.produce(event.topic, value, partition=partition)
    assert producer.flush(30) == 0


class Tail:
    """Reads an output topic from its start, without a consumer group, and upserts by key."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"tail-{time.monotonic_ns()}",
                           "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        self.c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        self.latest: dict[str, dict[str, Any] | None] = {}
        self.revised = 0

    def poll(self, seconds: float) -> int:
        got = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            msg = self.c.poll(0.1)
            if msg is None or msg.error():
                continue
            got += 1
            key, value = (msg.key() or b"").decode(), msg.value()
            if value is None:  # a tombstone
                self.latest[key] = None
                continue
            rec = orjson.loads(value)
            self.revised += bool(rec.get("revision"))
            self.latest[key] = rec
        return got

    def upserted(self, drop: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
        return {k: {f: v for f, v in rec.items() if f not in drop} for k, rec in self.latest.items() if rec is not None}

    def close(self) -> None:
        self.c.close()


def series(text: str) -> dict[str, float]:
    """The socialpulse_ samples of a /metrics text, ``name{label="value",...}`` -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if not s.name.startswith("socialpulse_") or s.name.startswith(IGNORED_PREFIXES):
                continue
            if any(s.name == n or s.name.startswith(n + "_") for n in IGNORED_SERIES):
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = float(s.value)
    return out


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in IGNORED_API_FIELDS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def api_views(worker_url: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for platform, account in [*ACCOUNTS, ("all", "all"), ("direct", "direct")]:
        status, body = http_get(f"{worker_url}/api/v1/accounts/{platform}/{account}", timeout=10)
        out[f"{platform}/{account}"] = _strip(orjson.loads(body)) if status == 200 else {"status": status}
    return out


def closes_at(scenario: Scenario) -> int:
    """The watermark (ms) past which nothing of the scenario is open: its day's window (and
    every checkout's timeout, well before) plus the grace."""
    last = scenario.start + SPAN
    return last - last % DAY + DAY + 5 * MIN


@contextmanager
def stack(tmp: Path, order: str, scenario: Scenario) -> Iterator[EndState]:
    """A fresh broker, the scenario produced in ``order``, a fresh worker; yields the stable end state."""
    began = time.monotonic()
    port = free_port()
    broker = start_broker(port)
    bootstrap = f"127.0.0.1:{port}"
    worker = None
    tails: list[Tail] = []
    try:
        produce(bootstrap, arrival(scenario, order))
        env = worker_env(bootstrap, "", tmp / "data", **SETTINGS)
        worker = spawn_worker(env, tmp, f"worker-{order}")
        worker.wait_ready(90)
        w = worker
        total = len(scenario.events)
        wait_until(lambda: sum(v for k, v in series(w.metrics()).items() if k.startswith("socialpulse_events_total"))
                   == total, 90, interval=0.5, what=f"all {total} events counted ({order})")

        def closed() -> bool:
            from prometheus_client.parser import text_string_to_metric_families

            marks = [s.value for fam in text_string_to_metric_families(w.metrics()) for s in fam.samples
                     if s.name == "socialpulse_watermark_timestamp_seconds"]
            return bool(marks) and min(marks) * 1000 >= closes_at(scenario)

        wait_until(closed, 60, interval=0.5, what=f"every keyed partition's watermark past the scenario's day ({order})")
        tails = [Tail(bootstrap, "socialpulse.results"), Tail(bootstrap, "socialpulse.reply-breaches")]
        quiet_since = time.monotonic()
        last: tuple[dict[str, float], dict[str, Any]] | None = None
        changes: list[str] = []
        deadline = time.monotonic() + 90
        while True:
            changed = sum(t.poll(1.0) for t in tails)
            now = (series(w.metrics()), api_views(w.url))
            if changed or now != last:
                if last is not None:  # what still moves, should it never settle
                    changes = [f"{changed} output records"] + [
                        f"{p}: {_short(x)} -> {_short(y)}"
                        for p, x, y in [*_walk(last[0], now[0], "metrics"), *_walk(last[1], now[1], "api")]]
                quiet_since, last = time.monotonic(), now
            elif time.monotonic() - quiet_since >= QUIET_S:
                break
            assert time.monotonic() < deadline, (
                f"{order}: the end state did not settle within 90 s; last change: " + "; ".join(changes[:10]))
        assert last is not None
        results, breaches = tails
        yield EndState(order, results.upserted(drop=("revision",)), breaches.upserted(), last[0], last[1],
                       revisions=results.revised, seconds=time.monotonic() - began)
    finally:
        for t in tails:
            t.close()
        if worker is not None:
            stop_process(worker.proc)
        stop_process(broker)


# -- comparing ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Diff:
    surface: str  # results, breaches, metrics, api
    family: str  # engagement, replies, conversion, funnel, pipeline
    where: str  # the key (and the path inside a record or an API body)
    a: Any
    b: Any

    def line(self, names: tuple[str, str]) -> str:
        return f"{self.surface}/{self.family}: {self.where}: {names[0]}={_short(self.a)} {names[1]}={_short(self.b)}"


ABSENT = "<absent>"


def _norm(value: Any) -> Any:
    """Floats to 9 significant digits (a sum in another order may differ in its last bits)."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_norm(v) for v in value]
    return value


def _walk(a: Any, b: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    """(path, a, b) of each difference; a subtree present on one side only is one difference."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(a.keys() | b.keys(), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k not in a or k not in b:
                yield sub, a.get(k, ABSENT), b.get(k, ABSENT)
            else:
                yield from _walk(a[k], b[k], sub)
    elif a != b:
        yield path, a, b


def _short(v: Any) -> str:
    if isinstance(v, dict) and "value" in v and "metric" in v:  # a result record: what counts of it
        v = {k: v[k] for k in ("value", "count", "converted", "total", "started", "completed", "abandoned") if k in v}
    text = v if isinstance(v, str) else orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode()
    return text if len(text) <= 90 else text[:87] + "..."


def _metric_family(sample: str, families: dict[str, str]) -> str:
    name = sample.split("{", 1)[0].removeprefix("socialpulse_")
    for suffix in ("_bucket", "_count", "_sum", "_total", ""):
        base = name.removesuffix(suffix)
        if base in families:
            return families[base]
    for hint, fam in (("reply", "replies"), ("response", "replies"), ("outreach", "replies"), ("awaiting", "replies"),
                      ("sla", "replies"), ("bot", "replies"), ("prospect", "replies"), ("checkout", "funnel"),
                      ("lead", "funnel"), ("session", "funnel"), ("revenue", "conversion"), ("order", "conversion"),
                      ("customer", "conversion"), ("currency", "conversion"), ("follower", "engagement"), ("engagement", "engagement"),
                      ("impression", "engagement"), ("click", "engagement"), ("spend", "conversion")):
        if hint in name:
            return fam
    return "pipeline"


def compare(a: EndState, b: EndState) -> list[Diff]:
    families = {r["metric"]: r["family"] for r in (*a.results.values(), *b.results.values())}
    out: list[Diff] = []
    for key in sorted(a.results.keys() | b.results.keys()):
        ra, rb = _norm(a.results.get(key, ABSENT)), _norm(b.results.get(key, ABSENT))
        fam = (ra if ra != ABSENT else rb)["family"]
        if ra == ABSENT or rb == ABSENT:
            out.append(Diff("results", fam, key, ra, rb))
        else:
            out += [Diff("results", fam, f"{key} {p}", x, y) for p, x, y in _walk(ra, rb, "")]
    out += [Diff("breaches", "replies", p, x, y) for p, x, y in _walk(_norm(a.breaches), _norm(b.breaches), "")]
    out += [Diff("metrics", _metric_family(p, families), p, x, y)
            for p, x, y in _walk(_norm(a.metrics), _norm(b.metrics), "")]
    for p, x, y in _walk(_norm(a.api), _norm(b.api), ""):
        parts = p.split(".")
        out.append(Diff("api", parts[1] if len(parts) > 1 else "-", p, x, y))
    return out


def summary(diffs: list[Diff], names: tuple[str, str], limit: int = 30) -> str:
    """Counts by family (and within it by surface and metric), then the first ``limit`` differences."""
    counts: dict[str, dict[str, int]] = {}
    for d in diffs:
        metric = d.where.split("|", 1)[0] if d.surface == "results" else d.where.split("{", 1)[0].split(".")[0]
        what = d.surface + (f"/{metric}" if d.surface in ("results", "metrics") else "")
        per = counts.setdefault(d.family, {})
        per[what] = per.get(what, 0) + 1
    parts = []
    for fam, per in sorted(counts.items(), key=lambda kv: -sum(kv[1].values())):
        top = sorted(per.items(), key=lambda kv: (-kv[1], kv[0]))
        more = f", +{len(top) - 6} more" if len(top) > 6 else ""
        parts.append(f"{fam} {sum(per.values())} ({', '.join(f'{k} {n}' for k, n in top[:6])}{more})")
    # the first differences of each family in turn, so that every family shows some
    queues = [[d for d in diffs if d.family == fam] for fam in sorted({d.family for d in diffs})]
    picked: list[Diff] = []
    while len(picked) < min(limit, len(diffs)):
        for q in queues:
            if q and len(picked) < limit:
                picked.append(q.pop(0))
    shown = "\n  ".join(d.line(names) for d in picked)
    return f"{len(diffs)} differences; {'; '.join(parts)}; first {len(picked)}:\n  {shown}"


# -- the test ----------------------------------------------------------------------------------

def _absolute(state: EndState, scenario: Scenario) -> list[str]:
    """Values computed from the scenario, so three equally empty runs cannot pass."""
    m = state.metrics
    problems = []

    def total(name: str, **labels: str) -> float:
        want = [f'{k}="{v}"' for k, v in labels.items()]
        return sum(v for k, v in m.items() if k.startswith(name + "{") and all(w in k for w in want))

    checks = {
        "accepted events": (total("socialpulse_events_total", outcome="accepted"), scenario.unique_events),
        "duplicates": (total("socialpulse_events_total", outcome="duplicate"), scenario.duplicates),
        "late events": (total("socialpulse_events_total", outcome="late"), 0),
        "engagements (1w)": (total("socialpulse_engagements", window="1w"), scenario.per_topic()["likes"] - 1),
        "conversations started (1w)": (total("socialpulse_conversations_started", window="1w"),
                                       scenario.conversations_started),
        "outreach conversations": (total("socialpulse_outreach_conversations_total"), scenario.outreach),
        "SLA breached": (total("socialpulse_reply_sla_total", result="breached"), scenario.breaches),
        "revenue of all orders USD (1w)": (total("socialpulse_order_revenue", window="1w", currency="USD"),
                                           float(scenario.revenue["USD"])),
        "revenue of all orders EUR (1w)": (total("socialpulse_order_revenue", window="1w", currency="EUR"),
                                           float(scenario.revenue["EUR"])),
        "seller posts (28d)": (total("socialpulse_seller_posts", window="28d"), scenario.seller_posts),
        "referral revenue USD (28d)": (total("socialpulse_seller_referral_revenue", window="28d", currency="USD"),
                                       float(scenario.referral_revenue)),
    }
    day = [r for r in state.results.values() if r["window"] == "1d"]
    checks |= {
        "conversations started (results, 1d)": (
            sum(r["value"] for r in day if r["metric"] == "conversations_started"), scenario.conversations_started),
        "revenue of all orders USD (results, 1d)": (
            sum(r["value"] for r in day if r["metric"] == "order_revenue" and r.get("currency") == "USD"),
            float(scenario.revenue["USD"])),
        "breach records": (len(state.breaches), scenario.breaches),
    }
    for what, (got, want) in checks.items():
        if abs(got - want) > 1e-6:
            problems.append(f"{state.order}: {what}: {got}, want {want}")
    return problems


def test_every_arrival_order_gives_the_same_results_metrics_and_api(tmp_path):
    orders = tuple(os.environ.get("SOCIALPULSE_ARRIVAL_ORDERS", ",".join(ORDERS)).split(","))
    scenario = build(scenario_start(int(time.time() * 1000)))
    states: list[EndState] = []
    for i, order in enumerate(orders):
        run_dir = tmp_path / f"{i}-{order}"
        run_dir.mkdir()
        with stack(run_dir, order, scenario) as state:
            if orders.count(order) > 1:  # the same order twice: tell the runs apart
                state.order = f"{order}#{i + 1}"
            states.append(state)
        if dump := os.environ.get("SOCIALPULSE_ARRIVAL_DUMP"):  # the end states, to study a failure
            Path(dump).mkdir(parents=True, exist_ok=True)
            (Path(dump) / f"{i}-{order}.json").write_bytes(orjson.dumps(
                {"results": state.results, "breaches": state.breaches, "metrics": state.metrics, "api": state.api},
                option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    problems = [p for s in states for p in _absolute(s, scenario)]
    first = states[0]
    report = []
    for other in states[1:]:
        diffs = compare(first, other)
        if diffs:
            report.append(f"{first.order} vs {other.order} ({first.order}: {first.revisions} corrections, "
                          f"{other.order}: {other.revisions}): "
                          + summary(diffs, (first.order, other.order)))
    assert not problems and not report, "\n".join(problems + report)
