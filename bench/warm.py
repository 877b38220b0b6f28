"""One worker's throughput on a fresh state (cold) and after half an hour of live traffic (warm).

Issue 23: state that scales. A worker's cost per event should not grow with the state it
already holds (conversations, posts, agents, shoppers built by earlier traffic). One embedded
broker; then, one after the other:

  * cold: the benchmark input (the generator's mix, ``--events`` events, rate 5,000/s, seed 42,
    event time from T) under the prefix ``cold.``; one fresh worker reads it all;
  * warm: under the prefix ``warm.``, first a warm-up of ``--warm-minutes`` simulated minutes of
    the generator at a live rate (``--warm-rate`` events/s, seed 7, event time T - warm-up .. T),
    then the same benchmark input as cold; one fresh worker reads everything. Only the
    benchmark part is timed: from the poll at which the worker's counted total
    (``socialpulse_events_total``, all outcomes) reaches the warm-up's message count to the
    poll at which it reaches warm-up + benchmark.

Each message holds one event, and each message is counted once (accepted, invalid, duplicate or
late), so the thresholds are message counts. Prints events/s cold and warm and their ratio, the
worker's ``socialpulse_state_bytes`` at the end (and, where the code has them,
``socialpulse_changelog_records_total``, ``..._bytes_total`` and ``..._record_max_bytes``), and,
for both runs, the stages' changelog topics read back from the earliest offset: records, bytes,
the largest record and bytes written per event (the same figure whatever the code exports).

Uses only the worker's CLI, ``streams.generator.Traffic`` and bench/throughput.py's helpers, so
the same file runs against older trees.

    python bench/warm.py [--events 200000] [--warm-rate 200] [--warm-minutes 30] [--skip-cold]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.throughput import _cpu_seconds, _peak_rss_mib, free_port, scrape_outcomes, scrape_total, worker_env  # noqa: E402
from streams import clients  # noqa: E402
from streams.broker import start_broker  # noqa: E402
from streams.broker import stop_process as stop  # noqa: E402
from streams.generator import Traffic  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.topics import ensure_topics  # noqa: E402

COLD, WARM = "cold.", "warm."
STATE_METRICS = ("socialpulse_state_keys", "socialpulse_state_bytes", "socialpulse_changelog_records_total", "socialpulse_changelog_bytes_total",
                 "socialpulse_changelog_record_max_bytes")


def log(msg: str) -> None:
    print(f"[warm {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


async def produce(bootstrap: str, prefix: str, traffic: Traffic, events: int | None = None,
                  seconds: int | None = None) -> int:
    """Send ``traffic`` one simulated second at a time, one event per message, until ``events``
    events or ``seconds`` simulated seconds; the number of messages sent."""
    settings = Settings(broker=f"kafka://{bootstrap}", topic_prefix=prefix, partitions=4)
    await ensure_topics(settings)
    producer = clients.producer(Settings(broker=f"kafka://{bootstrap}"), linger_ms=20, max_batch_size=1_048_576)
    await producer.start()
    sent, done_s, pending = 0, 0, []
    try:
        while (events is None or sent < events) and (seconds is None or done_s < seconds):
            for topic, value, _ in traffic.second():
                pending.append(await producer.send(prefix + topic, value))
                sent += 1
                if len(pending) > 5000:
                    await asyncio.gather(*pending)
                    pending.clear()
            done_s += 1
            if done_s % 20 == 0:
                print(f"\r{prefix} produced {sent:,} ({done_s} simulated s)", end="", file=sys.stderr, flush=True)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    print(file=sys.stderr)
    return sent


def scrape_state(url: str) -> dict[str, float]:
    """The state and changelog metrics, summed over stages (``name{stage=...}`` for each too)."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name in STATE_METRICS:
                agg = max if s.name.endswith("max_bytes") else (lambda a, b: a + b)
                out[s.name] = agg(out.get(s.name, 0.0), s.value)
                out[f"{s.name}{{stage={s.labels.get('stage', '')}}}"] = s.value
    return out


def run(bootstrap: str, prefix: str, skip: int, count: int, data_dir: str) -> dict[str, Any]:
    """One fresh worker on ``prefix``; the events/s between counted totals ``skip`` and ``skip + count``."""
    port = free_port()
    env = worker_env(bootstrap, prefix, data_dir)
    app_id = env["SOCIALPULSE_APP_ID"]
    out = open(Path(data_dir) / "worker.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--web-port", str(port)], cwd=ROOT,
                            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/metrics"
    target = skip + count
    start = began = done = None
    at_start = total = cpu_start = cpu_done = 0.0
    last_progress, last_total = time.monotonic(), -1.0
    deadline = time.monotonic() + 2400
    try:
        while time.monotonic() < deadline:
            time.sleep(1.0)  # a scrape costs the worker time: not more often (as bench/throughput.py)
            try:
                total = scrape_total(url)
            except OSError:
                continue
            now = time.monotonic()
            if total != last_total:
                last_total, last_progress = total, now
            elif total > 0 and now - last_progress > 180:
                raise SystemExit(f"{prefix} worker stalled at {total:,.0f} of {target:,}; see {out.name}")
            if began is None and total > 0:
                began = now
            # the first poll at or past the threshold (for cold, the first poll with any count)
            if start is None and total > 0 and total >= skip:
                start, at_start, cpu_start = now, total, _cpu_seconds(proc.pid)
            print(f"\r{prefix} worker counted {total:,.0f}/{target:,}", end="", file=sys.stderr, flush=True)
            if total >= target:
                done, cpu_done = now, _cpu_seconds(proc.pid)
                break
        print(file=sys.stderr)
        if start is None or done is None:
            raise SystemExit(f"{prefix} worker counted {total:,.0f} of {target:,}; see {out.name}")
        outcomes = scrape_outcomes(url)
        # the worker sets socialpulse_state_bytes every 10 ticks (a full encode): let it see the end state
        time.sleep(12)
        state = scrape_state(url)
        cpu, peak = _cpu_seconds(proc.pid), _peak_rss_mib(proc.pid)
    finally:
        stop(proc)
    secs = done - start
    eps = (total - at_start) / secs if secs > 0 else float("nan")
    log(f"{prefix} outcomes: " + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(outcomes.items())))
    # the worker's CPU seconds in the timed part: less sensitive than events/s to other load on the machine
    timed_cpu = cpu_done - cpu_start
    return {"eps": eps, "secs": secs, "from": at_start, "to": total, "all_secs": done - (began or done),
            "cpu": cpu, "timed_cpu": timed_cpu, "cpu_us": timed_cpu / max(total - at_start, 1) * 1e6, "peak": peak, "state": state, "app_id": app_id, "counted": total}


async def changelogs(bootstrap: str, app_id: str) -> dict[str, dict[str, float]]:
    """Every changelog topic of ``app_id``, read from its earliest offset: records, value bytes,
    the largest value (tombstones count as records of 0 bytes)."""
    settings = Settings(broker=f"kafka://{bootstrap}")
    reader = clients.reader(settings, max_partition_fetch_bytes=64 * 1024 * 1024, fetch_max_bytes=128 * 1024 * 1024)
    await reader.start()
    from aiokafka import TopicPartition

    try:
        topics = sorted(t for t in await reader.topics() if t.startswith(app_id) and t.endswith("-changelog"))
        tps = [TopicPartition(t, p) for t in topics for p in sorted(reader.partitions_for_topic(t) or ())]
        stats = {t: {"records": 0.0, "bytes": 0.0, "max": 0.0} for t in topics}
        if not tps:
            return stats
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        idle = 0
        while idle < 4:  # no record in 4 polls of 1 s, or every partition read to its (fetched) end
            batches = await reader.getmany(timeout_ms=1000, max_records=20_000)
            if not batches:
                idle += 1
            for tp, records in batches.items():
                s = stats[tp.topic]
                for rec in records:
                    n = len(rec.value) if rec.value is not None else 0
                    s["records"] += 1
                    s["bytes"] += n
                    s["max"] = max(s["max"], n)
            behind = 0
            for tp in tps:
                high = reader.highwater(tp)
                if high is None or await reader.position(tp) < high:
                    behind += 1
            if not behind:
                break
        return stats
    finally:
        await reader.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000, help="benchmark events (rate 5,000/s, seed 42)")
    ap.add_argument("--warm-rate", type=float, default=200, help="warm-up events/s (seed 7)")
    ap.add_argument("--warm-minutes", type=float, default=30, help="warm-up length in simulated minutes")
    ap.add_argument("--skip-cold", action="store_true")
    args = ap.parse_args()
    warm_s = int(args.warm_minutes * 60)
    t0 = (int(time.time()) - 600) * 1000  # the benchmark's event time starts 10 min ago; the warm-up ends there
    port = free_port()
    broker = start_broker(port)
    bootstrap = f"127.0.0.1:{port}"
    base = tempfile.mkdtemp(prefix="sp-warm-", dir=os.environ.get("TMPDIR"))
    res: dict[str, dict[str, Any]] = {}
    logs: dict[str, dict[str, dict[str, float]]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    try:
        if not args.skip_cold:
            log(f"broker on {bootstrap}; cold: producing {args.events:,} benchmark events under {COLD}")
            n = asyncio.run(produce(bootstrap, COLD, Traffic(rate=5000, seed=42, start_ms=t0), events=args.events))
            sizes["cold"] = (0, n)
            log(f"cold: one fresh worker on {n:,} messages")
            res["cold"] = run(bootstrap, COLD, 0, n, tempfile.mkdtemp(prefix="cold-", dir=base))
            logs["cold"] = asyncio.run(changelogs(bootstrap, res["cold"]["app_id"]))
        log(f"warm: producing a warm-up of {warm_s} simulated s at {args.warm_rate:,.0f} events/s under {WARM}")
        w = asyncio.run(produce(bootstrap, WARM, Traffic(rate=args.warm_rate, seed=7, start_ms=t0 - warm_s * 1000),
                                seconds=warm_s))
        log(f"warm: warm-up {w:,} messages; producing the {args.events:,} benchmark events after it")
        n = asyncio.run(produce(bootstrap, WARM, Traffic(rate=5000, seed=42, start_ms=t0), events=args.events))
        sizes["warm"] = (w, n)
        log(f"warm: one fresh worker on {w + n:,} messages (timed from {w:,})")
        res["warm"] = run(bootstrap, WARM, w, n, tempfile.mkdtemp(prefix="warm-", dir=base))
        logs["warm"] = asyncio.run(changelogs(bootstrap, res["warm"]["app_id"]))
    finally:
        stop(broker)
    print(render(res, logs, sizes, args))
    print(f"worker logs and data: {base}", file=sys.stderr)


def render(res: dict[str, dict[str, Any]], logs: dict[str, dict[str, dict[str, float]]],
           sizes: dict[str, tuple[int, int]], args: argparse.Namespace) -> str:
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [
        f"### {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: warm vs cold state at {head or '?'} "
        f"(`python bench/warm.py --events {args.events} --warm-rate {args.warm_rate:g} --warm-minutes {args.warm_minutes:g}`)",
        "",
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, broker Tansu (embedded)",
        "",
        "| run | messages before the timed part | timed messages | events/s | timed s | CPU s timed (us/event) | "
        "worker CPU s, whole run | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k, r in res.items():
        w, n = sizes[k]
        lines.append(f"| {k} | {w:,} | {n:,} | {r['eps']:,.0f} | {r['secs']:.1f} | {r['timed_cpu']:.1f} ({r['cpu_us']:.0f}) | "
                     f"{r['cpu']:.1f} | {r['peak']:,.0f} |")
    if "cold" in res and "warm" in res:
        ratio = res["warm"]["eps"] / res["cold"]["eps"]
        cpu_ratio = res["cold"]["cpu_us"] / res["warm"]["cpu_us"]
        lines += ["", f"warm / cold: {ratio:.2f} (target >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'}); "
                  f"by CPU per event (cold us / warm us): {cpu_ratio:.2f}"]
    lines += ["", "| run | metric (end of run) | value |", "|---|---|---:|"]
    for k, r in res.items():
        for name, v in sorted(r["state"].items()):
            lines.append(f"| {k} | {name} | {v:,.0f} |")
        if "socialpulse_changelog_bytes_total" in r["state"]:
            lines.append(f"| {k} | changelog bytes per counted event (metrics) | "
                         f"{r['state']['socialpulse_changelog_bytes_total'] / max(r['counted'], 1):,.0f} |")
    lines += ["", "changelog topics read back from the earliest offset:", "",
              "| run | topic | records | MiB | largest record (bytes) | bytes per counted event |", "|---|---|---:|---:|---:|---:|"]
    for k, topics in logs.items():
        counted = max(res[k]["counted"], 1)
        for t, s in topics.items():
            lines.append(f"| {k} | {t.split('-', 2)[-1]} | {s['records']:,.0f} | {s['bytes'] / 2**20:,.1f} | "
                         f"{s['max']:,.0f} | {s['bytes'] / counted:,.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
