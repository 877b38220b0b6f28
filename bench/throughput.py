"""One worker's ingest throughput, next to the raw aiokafka limit, measured in one run.

Starts its own embedded broker, pre-produces N events with the generator's mix
(duplicates, late and malformed records included), then:
  1. raw: a bare aiokafka consumer with orjson counting events per account (the Python limit);
  2. socialpulse: one real worker (validation, de-duplication, windows, all families on).
Prints events/s and the ratio, and appends the table to bench/RESULTS.md.

    python bench/throughput.py [--events 200000] [--batch 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import orjson
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schemas.events import INPUT_TOPICS  # noqa: E402
from streams import clients  # noqa: E402
from streams.broker import start_broker  # noqa: E402
from streams.broker import stop_process as stop  # noqa: E402
from streams.generator import Traffic  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.topics import ensure_topics  # noqa: E402

PREFIX = "bench."


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def produce(bootstrap: str, n: int, batch: int, prefix: str = PREFIX) -> tuple[int, int]:
    """Pre-produce about ``n`` events; ``batch`` > 1 packs up to that many per message (JSON
    array). Returns (events, messages)."""
    await ensure_topics(Settings(broker=f"kafka://{bootstrap}", topic_prefix=prefix, partitions=4))
    traffic = Traffic(rate=5000, seed=42, start_ms=int(time.time() * 1000) - 3_600_000)
    producer = clients.producer(Settings(broker=f"kafka://{bootstrap}"), linger_ms=20, max_batch_size=1_048_576)
    await producer.start()
    sent, messages, pending = 0, 0, []
    packs: dict[str, list[bytes]] = {}
    try:
        while sent < n:
            # one second of event time at a time; with --batch, that second's events of a
            # topic are packed into arrays of at most ``batch`` (an array spans <= 1 s)
            for topic, value, _ in traffic.second():
                packs.setdefault(topic, []).append(value)
            for topic, values in packs.items():
                step = max(batch, 1)
                for i in range(0, len(values), step):
                    chunk = values[i:i + step]
                    value = chunk[0] if batch <= 1 else b"[" + b",".join(chunk) + b"]"
                    pending.append(await producer.send(prefix + topic, value))
                    sent += len(chunk)
                    messages += 1
                    if len(pending) > 5000:
                        await asyncio.gather(*pending)
                        pending.clear()
            packs.clear()
            print(f"\rproduced {sent:,}/{n:,}", end="", file=sys.stderr, flush=True)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    print(file=sys.stderr)
    return sent, messages


async def raw_baseline(bootstrap: str, n_messages: int, prefix: str = PREFIX) -> tuple[float, int]:
    consumer = clients.consumer(
        Settings(broker=f"kafka://{bootstrap}"), *[prefix + t for t in INPUT_TOPICS], group_id=f"raw-{time.time_ns()}",
        auto_offset_reset="earliest", enable_auto_commit=False, max_partition_fetch_bytes=4_194_304,
    )
    await consumer.start()
    counts: Counter[str] = Counter()
    seen, events, began = 0, 0, None
    try:
        while seen < n_messages:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if began is None and batches:
                began = time.perf_counter()
            for records in batches.values():
                for rec in records:
                    seen += 1
                    try:
                        obj = orjson.loads(rec.value)
                    except orjson.JSONDecodeError:
                        continue
                    for o in obj if isinstance(obj, list) else [obj]:
                        if isinstance(o, dict):
                            counts[o.get("account_id", o.get("actor_id", ""))] += 1
                            events += 1
        return events / (time.perf_counter() - (began or time.perf_counter())), events
    finally:
        await consumer.stop()


def scrape_outcomes(url: str) -> Counter[str]:
    """socialpulse_events_total summed by outcome (accepted, invalid, duplicate, late)."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out: Counter[str] = Counter()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "socialpulse_events_total":
                out[s.labels["outcome"]] += s.value
    return out


def scrape_busy(url: str) -> tuple[float, float]:
    """Seconds the worker spent inside its lanes and how many batches they processed
    (socialpulse_batch_seconds, all stages)."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    samples = [s for fam in text_string_to_metric_families(text) for s in fam.samples]
    return (sum(s.value for s in samples if s.name == "socialpulse_batch_seconds_sum"),
            sum(s.value for s in samples if s.name == "socialpulse_batch_seconds_count"))


def scrape_total(url: str) -> float:
    return sum(scrape_outcomes(url).values())


def worker_env(bootstrap: str, prefix: str, data_dir: str, store: str = "rocksdb://") -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SOCIALPULSE_")} | {
        "SOCIALPULSE_BROKER": f"kafka://{bootstrap}", "SOCIALPULSE_TOPIC_PREFIX": prefix,
        "SOCIALPULSE_APP_ID": f"bench-{time.time_ns()}", "SOCIALPULSE_DATA_DIR": data_dir,
        "SOCIALPULSE_LOG_LEVEL": "warning", "SOCIALPULSE_WEB_HOST": "127.0.0.1",
        "SOCIALPULSE_STORE": store,
    }


def run_worker(
    bootstrap: str, expected: int, data_dir: str, profile: str = "", prefix: str = PREFIX, store: str = "rocksdb://"
) -> tuple[float, float, float, float]:
    """(events/s, seconds, CPU seconds, peak RSS MiB) of one worker working through ``expected`` events."""
    port = free_port()
    env = worker_env(bootstrap, prefix, data_dir, store)
    log = open(Path(data_dir) / "worker.log", "wb")  # noqa: SIM115
    cmd = [sys.executable, "-m", "streams.cli", "worker", "--web-port", str(port)]
    if profile:  # py-spy samples the whole run; collapsed stacks for flame graphs or a top list
        cmd = [str(Path(sys.executable).parent / "py-spy"), "record", *os.environ.get("PYSPY_FLAGS", "--gil").split(), "-f", "raw", "-r", "200", "-o", profile, "--", *cmd]
    proc = subprocess.Popen(cmd,
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/metrics"
    first = done = zero_at = None
    total = at_first = 0.0
    deadline = time.monotonic() + 1800
    try:
        while time.monotonic() < deadline:
            time.sleep(1.0)  # a scrape costs the worker time (~25 ms with every account's series): not too often
            try:
                total = scrape_total(url)
            except OSError:
                continue
            if total == 0:
                zero_at = time.monotonic()
            elif first is None:
                first, at_first = time.monotonic(), total
            print(f"\rsocialpulse counted {total:,.0f}/{expected:,}", end="", file=sys.stderr, flush=True)
            if total >= expected:
                done = time.monotonic()
                outcomes = scrape_outcomes(url)
                print("\noutcomes: " + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(outcomes.items())), file=sys.stderr)
                busy, batches = scrape_busy(url)
                print(f"time in lanes: {busy:.1f} s in {batches:,.0f} batches ({busy / max(total, 1) * 1e6:.1f} us "
                      f"per event; {done - (zero_at or done):.1f} s since the last poll without counts)", file=sys.stderr)
                break
        print(file=sys.stderr)
        cpu, peak = _cpu_seconds(proc.pid), _peak_rss_mib(proc.pid)
        if first is None or done is None or zero_at is None:
            raise SystemExit(f"worker counted {total} of {expected}; see {log.name}")
        if done - first >= 2:  # the rate between the first and the last poll that saw progress
            return (expected - at_first) / (done - first), done - first, cpu, peak
        return expected / (done - zero_at), done - zero_at, cpu, peak  # a tiny run: an upper bound on time
    finally:
        if profile:  # py-spy writes its profile on SIGINT
            os.kill(proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        stop(proc)


def _peak_rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=1, help="events per Kafka message (JSON array)")
    ap.add_argument("--no-write", action="store_true", help="do not append to bench/RESULTS.md")
    ap.add_argument("--profile", default="", help="write py-spy collapsed stacks of the worker to this file")
    ap.add_argument("--store", default="rocksdb://", help="the worker's table store (rocksdb:// or memory://)")
    args = ap.parse_args()
    port = free_port()
    broker = start_broker(port)
    bootstrap = f"127.0.0.1:{port}"
    try:
        _, messages = asyncio.run(produce(bootstrap, args.events, args.batch))
        raw_rate, raw_events = asyncio.run(raw_baseline(bootstrap, messages))
        tmp = tempfile.mkdtemp(prefix="socialpulse-bench-")
        sp_rate, secs, cpu, peak = run_worker(bootstrap, raw_events, tmp, args.profile, store=args.store)
        print(f"worker log and data: {tmp}", file=sys.stderr)
    finally:
        stop(broker)
    rows = [
        ("raw aiokafka + orjson count (the Python limit)", raw_rate, 1.0),
        ("socialpulse worker, full pipeline", sp_rate, sp_rate / raw_rate),
    ]
    lines = [
        f"### {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {raw_events:,} events, {args.batch} per message",
        "",
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, broker Tansu (embedded)",
        "",
        "| approach | events/s | vs raw |",
        "|---|---:|---:|",
        *[f"| {name} | {rate:,.0f} | {ratio:.1%} |" for name, rate, ratio in rows],
        "",
        f"socialpulse: {secs:.1f} s wall, {cpu:.1f} CPU s, peak RSS {peak:,.0f} MiB",
        "",
    ]
    print("\n".join(lines))
    if not args.no_write:
        with open(ROOT / "bench" / "RESULTS.md", "a") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
