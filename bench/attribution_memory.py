"""Memory of attribution state for many distinct shoppers (default one million).

Feeds each shopper one click (and every 20th an order) through the keyed stage
with the shopper family, then reports resident memory per tracked actor and
the size of the state as written to the changelog.

    python bench/attribution_memory.py [--actors 1000000] [--budget-mib 1024]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.conversion import Shopper  # noqa: E402
from streams.keyed import Forwarded, KeyedStage, StageOutput  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.windows import WindowSpec  # noqa: E402


def rss_mib() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--actors", type=int, default=1_000_000)
    ap.add_argument("--budget-mib", type=float, default=1024)
    args = ap.parse_args()
    s = Settings()
    spec = WindowSpec.from_settings(s)
    stage = KeyedStage("actor", spec, [Shopper(s.attribution_lookback, s.attribution_half_life, s.grace)],
                       s.dedup_horizon, s.idle, compact=True)  # as the worker runs it
    now = int(time.time() * 1000) - 60_000
    gc.collect()
    before = rss_mib()
    batch: list[Forwarded] = []
    began = time.perf_counter()
    for i in range(args.actors):
        actor = f"u{i:08d}"
        batch.append(Forwarded("clicks", "clicks", 0, i, actor, {
            "event_id": f"cl-{i:09d}", "ts": now + i % 1000, "platform": "instagram", "account_id": "brand-1",
            "actor_id": actor, "campaign_id": "spring", "click_id": f"ck-{i:09d}"}, False))
        if i % 20 == 0:
            batch.append(Forwarded("orders", "orders", 0, i, actor, {
                "event_id": f"o-{i:09d}", "ts": now + 1000, "order_id": f"ord-{i}", "actor_id": actor,
                "amount": "42.50", "currency": "USD"}, True))
        if len(batch) >= 5000:
            stage.process(0, batch, StageOutput())
            stage.cool()
            batch.clear()
        if i and i % 200_000 == 0:
            print(f"\r{i:,} actors, {rss_mib() - before:,.0f} MiB", end="", file=sys.stderr, flush=True)
    stage.process(0, batch, StageOutput())
    stage.cool()
    gc.collect()
    used = rss_mib() - before
    sample = list(stage.parts[0].values())[:10_000]
    per_state = sum(map(len, sample)) / len(sample)
    tracked = len(stage)
    print(file=sys.stderr)
    print(f"actors tracked: {tracked:,} in {time.perf_counter() - began:.1f}s")
    print(f"resident memory for their state: {used:,.0f} MiB = {used * 2**20 / tracked:,.0f} bytes per actor")
    print(f"changelog value: {per_state:,.0f} bytes per actor (JSON)")
    verdict = "within" if used <= args.budget_mib else "OVER"
    print(f"budget {args.budget_mib:,.0f} MiB for {args.actors:,} actors: {verdict} ({used / args.budget_mib:.0%} of it)")


if __name__ == "__main__":
    main()
