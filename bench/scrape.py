"""One /metrics scrape of a worker that owns many accounts, without Kafka.

Builds the real account stage (every account family, default settings) holding ``--accounts``
accounts of every family's traffic, activity skewed as real brands' is (a few busy, most
quiet), then times one scrape: the families' samples, the series policy
(``streams.exporter.SeriesPolicy``: METRICS_TOP_ACCOUNTS most active keep their series,
the rest fold into ``account="other"``) and the text exposition; and, for comparison, the
exposition of every account's series (no policy, as before).

With ``--hot-keys N`` the stage keeps at most N accounts decoded, as a worker with RocksDB does
(HOT_KEYS, the cold tier of ``streams.keyed``): the others rest in a store and give their gauge
rows as of their last look.

    python bench/scrape.py [--accounts 10000] [--top 100] [--hot-keys 2000] [--no-compare]
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from streams.exporter import FamilyCollector, Metrics, SeriesPolicy  # noqa: E402
from streams.families import make_stages  # noqa: E402
from streams.ingest import partition_for  # noqa: E402
from streams.keyed import Forwarded, KeyedStage, StageOutput  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.windows import Mark, WindowSpec  # noqa: E402

MIN = 60_000
NL = b"\n"
PLATFORMS = ("instagram", "facebook", "x", "linkedin", "tiktok", "youtube")


def account_stage(accounts: int, seed: int = 7, hot_keys: int | None = None) -> tuple[KeyedStage, int]:
    """The account stage holding ``accounts`` accounts' last 20 minutes, watermark at the
    wall clock; and how many events it took."""
    settings = Settings()
    stage = make_stages(settings, WindowSpec.from_settings(settings))["account"]
    store: dict[bytes, bytes] = {}
    if hot_keys is not None:
        stage.cold, stage.hot_keys = True, hot_keys
        stage.load_pages = lambda p, prefix: [(k, v) for k, v in store.items() if k.startswith(prefix)]
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    t0 = now - 20 * MIN
    items: dict[int, list[Forwarded]] = defaultdict(list)
    n = 0

    def send(topic: str, key: str, fields: dict[str, Any], ts: int | None = None) -> None:
        nonlocal n
        n += 1
        platform, account = key.split("|")
        event = {"platform": platform, "account_id": account, "event_id": f"e{n}",
                 "ts": ts if ts is not None else t0 + rng.randrange(18 * MIN)} | fields
        items[partition_for(key, settings.partitions)].append(Forwarded(topic, topic, 0, n, key, event, True))

    for i in range(accounts):
        key = f"{PLATFORMS[i % len(PLATFORMS)]}|brand-{i}"
        busy = min(int(rng.paretovariate(1.2)), 200)  # most accounts quiet, a few busy
        for j in range(busy):
            send("likes", key, {"post_id": f"p{j % 3}", "actor_id": f"u{j}", "kind": rng.choice(("like", "comment"))})
            if j % 4 == 0:
                send("clicks", key, {"actor_id": f"u{j}", "post_id": f"p{j % 3}", "campaign_id": f"c{j % 3}",
                                     "paid": j % 8 == 0})
        send("impressions", key, {"post_id": "p0", "count": 20 * busy + rng.randrange(100)})
        send("audience", key, {"followers": rng.randrange(100, 100_000)})
        if rng.random() < 0.5:
            send("spend", key, {"campaign_id": "c0", "amount": "25.00", "currency": rng.choice(("USD", "EUR"))})
        if rng.random() < 0.3:
            send("leads", key, {"actor_id": "u1", "kind": "form"})
        for c in range(1 + busy // 10):
            t = t0 + rng.randrange(15 * MIN)
            send("messages", key, {"conversation_id": f"c{c}", "direction": "inbound", "author_id": f"u{c}"}, t)
            if rng.random() < 0.85:  # the rest still wait
                send("messages", key, {"conversation_id": f"c{c}", "direction": "outbound", "author_id": "me",
                                       "agent_id": f"agent-{rng.randrange(5)}"}, t + rng.randrange(30 * 60_000 // 10))
    out = StageOutput()
    for partition, batch in items.items():
        stage.process(partition, batch, out)
    for partition in range(settings.partitions):
        stage.mark(partition, {"likes/0": Mark(False, 0, True, int(time.time() * 1000))})
    stage.tick(StageOutput(), ["likes/0"])
    for records in stage.changelog_records(out).values():  # (with the cold tier: all but the hot keys rest)
        for key, value in records:
            if value is None:
                store.pop(key, None)
            else:
                store[key] = value
    return stage, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--top", type=int, default=Settings().metrics_top_accounts)
    ap.add_argument("--no-compare", action="store_true", help="skip the exposition of every account's series")
    ap.add_argument("--hot-keys", type=int, default=None, help="accounts kept decoded (HOT_KEYS); default: all")
    args = ap.parse_args()
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)  # as the worker (streams/cli.py)
    t = time.perf_counter()
    stage, events = account_stage(args.accounts, hot_keys=args.hot_keys)
    print(f"{args.accounts:,} accounts, {events:,} events, {len(stage):,} keys (built in {time.perf_counter() - t:.1f} s)")
    gauges = [g for fam in stage.families for g in fam.gauges]

    t = time.perf_counter()
    samples = list(stage.samples())
    sample_s = time.perf_counter() - t
    policy = SeriesPolicy(top=args.top)
    t = time.perf_counter()
    kept = policy.apply({g.name: g for g in gauges}, samples)
    policy_s = time.perf_counter() - t
    print(f"families' samples: {len(samples):,} in {sample_s * 1000:.0f} ms; "
          f"policy (top {args.top}): {len(kept):,} kept in {policy_s * 1000:.0f} ms")

    metrics = Metrics(SeriesPolicy(top=args.top))
    metrics.add_families(gauges, stage.samples)
    t = time.perf_counter()
    text = metrics.exposition()
    scrape_s = time.perf_counter() - t
    print(f"one /metrics exposition with the policy: {scrape_s * 1000:.0f} ms, {len(text) / 1e6:.2f} MB, "
          f"{text.count(NL):,} lines ({metrics.series.exported} accounts exported, {metrics.series.folded} folded)")
    if not args.no_compare:
        registry = CollectorRegistry()
        registry.register(FamilyCollector(gauges, stage.samples))
        t = time.perf_counter()
        every = generate_latest(registry)
        every_s = time.perf_counter() - t
        print(f"every account's series (no policy, as before): {every_s * 1000:.0f} ms, {len(every) / 1e6:.2f} MB, "
              f"{every.count(NL):,} lines")


if __name__ == "__main__":
    main()
