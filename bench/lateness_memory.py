"""Worker memory with a day of traffic for many accounts, at default settings.

Issue 12's target: 10,000 accounts with a day of traffic within 1 GiB of worker RSS,
with every closed window of the day kept for corrections (ALLOWED_LATENESS 1d).

Starts its own embedded broker, produces a day of events (event times spread over
the last 24 hours, every input topic, in event-time order, packed 10 per message) for ``--accounts``
accounts, then starts one ``socialpulse worker`` with default settings on that
history (a first start: the whole day is a backlog), waits until every event is
counted and the watermark has reached the wall clock, and prints the worker's RSS
(now and peak), the keys held, the de-duplication ids held (arrival rate x
DEDUP_HORIZON: here the whole day arrived within minutes) and the closed windows
kept. Then it waits ``--after`` seconds more and prints them again.

    python bench/lateness_memory.py [--accounts 10000] [--per-account 100] [--budget-mib 1024]

With ``--live`` it measures the state a worker holds after a day of *live* traffic instead,
in one process without Kafka: the same day, fed in event-time order through the keyed
stages with every family (as the worker's lanes do, marks saying every input is read to its
end, ticks each simulated second), every closed window of the day kept for corrections in
memory (with the default RocksDB store they would be on disk), de-duplication ids expiring
by arrival (the event's own time here, as it would arrive live). It prints the process RSS
and what the state holds.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.throughput import free_port, worker_env  # noqa: E402
from streams import clients  # noqa: E402
from streams.broker import start_broker, stop_process  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.topics import ensure_topics  # noqa: E402
from streams.windows import iso  # noqa: E402

PREFIX = "mem."
PLATFORMS = ("instagram", "tiktok", "facebook", "linkedin", "x")


def day_of_traffic(accounts: int, per_account: int, seed: int = 1) -> dict[str, list[bytes]]:
    """Events of every topic over the last 24 hours; each account about ``per_account``."""
    rng = random.Random(seed)
    now = int(time.time() * 1000) - 120_000
    start = now - 86_400_000
    out: dict[str, list[bytes]] = {t: [] for t in ("likes", "impressions", "audience", "clicks", "messages", "orders", "spend")}
    n = 0

    def add(topic: str, ts: int, **fields: object) -> None:
        nonlocal n
        n += 1
        out[topic].append(orjson.dumps({"event_id": f"m{n}", "ts": iso(ts)} | fields))

    for a in range(accounts):
        base = {"platform": PLATFORMS[a % len(PLATFORMS)], "account_id": f"acct-{a:05d}"}
        budget = per_account
        add("audience", start + rng.randint(0, 3_600_000), **base, followers=rng.randint(100, 100_000))
        add("spend", start + rng.randint(0, 86_000_000), **base, campaign_id=f"c{a % 7}", amount="25.00", currency="USD")
        budget -= 2
        while budget > 0:
            ts = rng.randint(start, now)
            r = rng.random()
            if r < 0.45:
                add("likes", ts, **base, post_id=f"p{rng.randint(0, 20)}", actor_id=f"f{rng.randint(0, 10**6)}")
                budget -= 1
            elif r < 0.65:
                add("impressions", ts, **base, post_id=f"p{rng.randint(0, 20)}", count=rng.randint(1, 500))
                budget -= 1
            elif r < 0.85:
                conv = f"cv{n}"
                add("messages", ts, **base, conversation_id=conv, direction="inbound", author_id="cust")
                if rng.random() < 0.9:  # one in ten is never answered (it stays waiting)
                    add("messages", min(ts + rng.randint(5_000, 3_600_000), now), **base, conversation_id=conv,
                        direction="outbound", author_id="ana", agent_id=f"agent{rng.randint(0, 5)}")
                budget -= 2
            else:
                shopper = f"s{n}"
                add("clicks", ts, **base, actor_id=shopper, click_id=f"k{n}", campaign_id=f"c{a % 7}")
                if rng.random() < 0.2:
                    add("orders", min(ts + rng.randint(1_000, 7_200_000), now), order_id=f"o{n}", actor_id=shopper,
                        amount=f"{rng.randint(5, 200)}.00", currency="USD", click_id=f"k{n}")
                budget -= 2
    return out


async def produce(bootstrap: str, traffic: dict[str, list[bytes]], pack: int = 10, rate: float = 0.0,
                  progress: Any = None) -> int:
    """Produce the day as it arrived: all topics interleaved in event-time order (each topic's
    events packed ``pack`` per message as they come). With ``rate``, at most that many events
    per second (the worker reads them as they come: live, compressed in time)."""
    await ensure_topics(Settings(broker=f"kafka://{bootstrap}", topic_prefix=PREFIX))
    producer = clients.producer(Settings(broker=f"kafka://{bootstrap}"), linger_ms=20, max_batch_size=1_048_576)
    await producer.start()
    merged = sorted(((orjson.loads(v)["ts"], topic, v) for topic, values in traffic.items() for v in values))
    sent, pending = 0, []
    packs: dict[str, list[bytes]] = {}

    async def flush(topic: str) -> None:
        nonlocal sent
        chunk = packs.pop(topic)
        pending.append(await producer.send(PREFIX + topic, b"[" + b",".join(chunk) + b"]"))
        sent += len(chunk)

    began = time.monotonic()
    try:
        for _, topic, value in merged:
            packs.setdefault(topic, []).append(value)
            if len(packs[topic]) >= pack:
                await flush(topic)
                if rate and sent % 1000 < pack:
                    await asyncio.gather(*pending)
                    pending.clear()
                    await asyncio.sleep(max(0.0, began + sent / rate - time.monotonic()))
                    if progress is not None:
                        progress(sent)
            if len(pending) > 2000:
                await asyncio.gather(*pending)
                pending.clear()
                print(f"\rproduced {sent:,}", end="", file=sys.stderr, flush=True)
        for topic in list(packs):
            await flush(topic)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    print(file=sys.stderr)
    return sent


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            name = s.name
            if name == "socialpulse_events_total":
                out[f"events_{s.labels['outcome']}"] = out.get(f"events_{s.labels['outcome']}", 0) + s.value
            elif name in ("socialpulse_state_keys", "socialpulse_dedup_ids", "socialpulse_closed_windows_kept",
                          "socialpulse_state_bytes"):
                out[f"{name}_{s.labels['stage' if 'stage' in s.labels else 'stream']}"] = s.value
            elif name in ("socialpulse_results_corrected_total", "socialpulse_results_published_total"):
                out[name] = out.get(name, 0) + s.value
            elif name == "socialpulse_watermark_timestamp_seconds":
                out["watermark_min"] = min(out.get("watermark_min", s.value), s.value)
    return out


def rss_mib(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _feed_day(conn: Any, accounts: int, per_account: int) -> None:
    """In its own process (its memory is not the stage's): the day in event-time order, in chunks."""
    traffic = day_of_traffic(accounts, per_account)
    merged = sorted(((orjson.loads(v)["ts"], topic, v) for topic, values in traffic.items() for v in values))
    del traffic
    for i in range(0, len(merged), 2000):
        conn.send([(topic, value) for _, topic, value in merged[i:i + 2000]])
    conn.send(None)
    conn.close()


def live_day(accounts: int, per_account: int, budget_mib: float) -> None:
    """The keyed stages of one worker after a day of live traffic, in this process: every
    family as the worker builds them (``pipeline.make_stages``), every input read to its
    end (events move the watermark; a tick every 2,000 events, about 40 simulated seconds), and every changelog
    record written to a local RocksDB as the worker's table store does, closed windows read
    back from it for corrections. The events come from another process, so this process
    holds only what a worker holds."""
    import datetime
    import gc
    import multiprocessing
    import os

    import rocksdict

    from schemas.events import TOPIC_MODELS
    from streams.families import make_stages, routes
    from streams.family import Forward
    from streams.ingest import partition_for
    from streams.keyed import CLOSED_KEY, COLD, Forwarded, StageOutput
    from streams.windows import Mark, WindowSpec

    def rss() -> float:
        with open(f"/proc/{os.getpid()}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["VmRSS"].split()[0]) / 1024

    s = Settings()
    stages = make_stages(s, WindowSpec.from_settings(s))
    account, actor = stages["account"], stages["actor"]
    folder = tempfile.mkdtemp(prefix="sp-live-")
    store = {name: rocksdict.Rdict(f"{folder}/{name}", options=rocksdict.Options(raw_mode=True)) for name in stages}
    def prefixed(db: Any, prefix: bytes) -> list[tuple[bytes, bytes]]:
        it, out = db.iter(), []
        it.seek(prefix)
        while it.valid() and bytes(it.key()).startswith(prefix):
            out.append((bytes(it.key()), bytes(it.value())))
            it.next()
        return out

    for name, stage in stages.items():
        stage.settle_s = 0
        db = store[name]
        stage.load_closed = lambda p, size, start, db=db: db.get(CLOSED_KEY.format(partition=p, size=size, start=start).encode())
        stage.load_pages = lambda p, prefix, db=db: prefixed(db, prefix)
        if not stage.compact:  # as the pipeline does with RocksDB (the cold tier)
            stage.cold, stage.hot_keys = True, s.hot_keys
    largest = 0

    def write(name: str, out: StageOutput) -> None:
        nonlocal largest
        db = store[name]
        for records in stages[name].changelog_records(out).values():  # a flush per chunk: a commit
            for key, value in records:
                if value is None:
                    db.delete(key)
                else:
                    db[key] = value
                    largest = max(largest, len(value))

    n, parts, expected = s.partitions, range(s.partitions), ["in/0"]
    for stage in stages.values():
        for p in parts:
            stage.mark(p, {"in/0": Mark(False, 0, False, 0)})
            stage.tick(StageOutput(), expected)
    gc.collect()
    before = rss()
    mine, theirs = multiprocessing.Pipe(duplex=False)
    feeder = multiprocessing.Process(target=_feed_day, args=(theirs, accounts, per_account), daemon=True)
    feeder.start()
    began = time.perf_counter()
    results = corrected = total = 0
    last_tick = 0
    peak = before
    while (chunk := mine.recv()) is not None:
        routed: dict[tuple[str, int], list[Forwarded]] = {}
        newest = 0
        for topic, value in chunk:
            event = TOPIC_MODELS[topic].model_validate_json(value)
            newest = max(newest, event.ts)
            for stream, key, primary in routes(topic, event):
                routed.setdefault((stream, partition_for(key, n)), []).append(
                    Forwarded(topic, topic, 0, total, key, event, primary, event.ts + 1000))
            total += 1
        out_actor, out_account = StageOutput(), StageOutput()
        for (stream, p), items in sorted(routed.items()):
            stages[stream].process(p, items, out_actor if stream == "actor" else out_account)
        write("actor", out_actor)
        credits: dict[int, list[Forwarded]] = {}
        for r in out_actor.results:
            if isinstance(r, Forward):
                credits.setdefault(partition_for(r.key, n), []).append(
                    Forwarded(r.topic, r.source, -1, -1, r.key, r.event, False, newest + 1000))
        for p, items in credits.items():
            account.process(p, items, out_account)
        write("account", out_account)
        results += len(out_account.results)
        corrected += out_account.corrected
        for stage in stages.values():
            for p in parts:
                stage.mark(p, {"in/0": Mark(False, newest, False, newest)})
        if newest - last_tick >= 10_000:  # a tick per chunk (about 40 simulated seconds)
            last_tick = newest
            for name, stage in stages.items():
                tick = StageOutput()
                stage.tick(tick, expected)
                results += len(tick.results)
                write(name, tick)
        peak = max(peak, rss())
        print(f"\rfed {total:,} events (to {datetime.datetime.fromtimestamp(newest / 1000, datetime.UTC):%H:%M} UTC)  "
              f"RSS {rss():,.0f} MiB", end="", file=sys.stderr, flush=True)
    feeder.join()
    print(file=sys.stderr)
    gc.collect()
    after = rss()
    closed = sum(len(kept) for kept in account.closed.values())
    on_disk = sum(len(v) for k, v in store["account"].items() if k.startswith(b'\x01["\\u0000closed'))
    decoded = sum(st is not COLD for part in account.parts.values() for st in part.values())
    print(f"\n{accounts:,} accounts, {total:,} events over 24 h, live in event-time order, default settings "
          f"(ALLOWED_LATENESS {s.allowed_lateness // 3_600_000} h, DEDUP_HORIZON {s.dedup_horizon // 60_000} min); "
          f"fed in {time.perf_counter() - began:.0f} s")
    print("| RSS MiB after the day | peak | before any event | account keys | shopper keys | their state (encoded) | "
          "closed windows kept (on disk) | dedup ids | results published |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {after:,.0f} | {peak:,.0f} | {before:,.0f} | {len(account):,} | {len(actor):,} | "
          f"{(account.size_bytes() + actor.size_bytes()) / 2**20:,.0f} MiB | {closed:,} ({on_disk / 2**20:,.0f} MiB) | "
          f"{sum(len(x) for x in account.seen.values()) + sum(len(x) for x in actor.seen.values()):,} | {results:,} |")
    print(f"account states decoded in memory: {decoded:,} (HOT_KEYS {s.hot_keys:,}); largest changelog record "
          f"{largest:,} bytes")
    verdict = "met" if peak <= budget_mib else "NOT met"
    print(f"peak RSS {peak:,.0f} MiB vs budget {budget_mib:,.0f} MiB: {verdict} (a worker adds Faust, aiokafka and "
          "its web server: measure an idle one with `socialpulse worker` and /proc/<pid>/status)")
    for db in store.values():
        db.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--live", action="store_true", help="the state after a day of live traffic, in one process")
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--per-account", type=int, default=100)
    ap.add_argument("--budget-mib", type=float, default=1024)
    ap.add_argument("--after", type=float, default=30, help="seconds to watch after catching up")
    ap.add_argument("--feed-rate", type=float, default=0,
                    help="start the worker first and feed the day at this many events/s (live, compressed in "
                         "time) instead of a first start on the whole day as history")
    args = ap.parse_args()
    if args.live:
        live_day(args.accounts, args.per_account, args.budget_mib)
        return
    traffic = day_of_traffic(args.accounts, args.per_account)
    total = sum(len(v) for v in traffic.values())
    port = free_port()
    broker = start_broker(port)
    bootstrap = f"127.0.0.1:{port}"
    tmp = tempfile.mkdtemp(prefix="sp-mem-")
    worker = None
    try:
        web = free_port()
        env = worker_env(bootstrap, PREFIX, tmp) | {"SOCIALPULSE_STORE": "rocksdb://"}
        env.pop("SOCIALPULSE_LOG_LEVEL", None)
        url = f"http://127.0.0.1:{web}/metrics"

        def start_worker() -> subprocess.Popen[bytes]:
            log = open(Path(tmp) / "worker.log", "wb")  # noqa: SIM115
            return subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--web-port", str(web)], env=env,
                                    cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

        if args.feed_rate:
            asyncio.run(ensure_topics(Settings(broker=f"kafka://{bootstrap}", topic_prefix=PREFIX)))
            worker = start_worker()
            ready = time.monotonic() + 90
            while time.monotonic() < ready:
                time.sleep(1)
                try:
                    with urllib.request.urlopen(url.replace("/metrics", "/readyz"), timeout=2) as resp:
                        if resp.status == 200:
                            break
                except Exception:
                    continue
            fed = time.monotonic()

            def fed_so_far(sent: int) -> None:
                if sent % 50_000 < 10:
                    rss, peak = rss_mib(worker.pid)  # type: ignore[union-attr]
                    print(f"\rfed {sent:,}/{total:,} in {time.monotonic() - fed:.0f} s  RSS {rss:,.0f} MiB (peak {peak:,.0f})   ",
                          end="", file=sys.stderr, flush=True)

            asyncio.run(produce(bootstrap, traffic, rate=args.feed_rate, progress=fed_so_far))
            del traffic
        else:
            asyncio.run(produce(bootstrap, traffic))
            del traffic
            worker = start_worker()
        began = time.monotonic()
        m: dict[str, float] = {}
        while True:
            time.sleep(5)  # a scrape of 10,000 accounts is itself work for the worker
            if worker.poll() is not None:
                raise SystemExit(f"worker exited {worker.returncode}; log in {tmp}/worker.log")
            try:
                m = scrape(url)
            except Exception:
                continue
            counted = sum(v for k, v in m.items() if k.startswith("events_"))
            rss, peak = rss_mib(worker.pid)
            print(f"\r{time.monotonic() - began:5.0f} s  counted {counted:,.0f}/{total:,}  RSS {rss:,.0f} MiB  "
                  f"watermark {time.time() - m.get('watermark_min', 0):,.0f} s behind  "
                  f"results {m.get('socialpulse_results_published_total', 0):,.0f} "
                  f"(corrections {m.get('socialpulse_results_corrected_total', 0):,.0f})   ",
                  end="", file=sys.stderr, flush=True)
            if counted >= total and m.get("watermark_min", 0) > time.time() - 60:
                break
        print(file=sys.stderr)
        caught_up = time.monotonic() - began
        rows = [("caught up", *rss_mib(worker.pid), m)]
        time.sleep(args.after)
        rows.append((f"+{args.after:.0f} s", *rss_mib(worker.pid), scrape(url)))
        how = (f"fed live at {args.feed_rate:,.0f} events/s" if args.feed_rate else "a first start on the whole day as history")
        print(f"\n{args.accounts:,} accounts, {total:,} events over 24 h (every topic), default settings, {how}; "
              f"read {caught_up:.0f} s after the last was sent")
        print("| when | RSS MiB | peak RSS MiB | account keys | shopper keys | dedup ids | closed windows kept | late |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for when, rss, peak, mm in rows:
            print(f"| {when} | {rss:,.0f} | {peak:,.0f} | {mm.get('socialpulse_state_keys_account', 0):,.0f} | "
                  f"{mm.get('socialpulse_state_keys_actor', 0):,.0f} | "
                  f"{mm.get('socialpulse_dedup_ids_account', 0) + mm.get('socialpulse_dedup_ids_actor', 0):,.0f} | "
                  f"{mm.get('socialpulse_closed_windows_kept_account', 0):,.0f} | {mm.get('events_late', 0):,.0f} |")
        peak = max(r[2] for r in rows)
        verdict = "met" if peak <= args.budget_mib else "NOT met"
        print(f"peak RSS {peak:,.0f} MiB vs budget {args.budget_mib:,.0f} MiB: {verdict}")
    finally:
        if worker is not None:
            stop_process(worker)
        stop_process(broker)


if __name__ == "__main__":
    main()
