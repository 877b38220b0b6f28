"""The ingest hot path without Kafka, measured in one process: how much of it is the families?

Generates the generator's mix (noise on: duplicates, late and malformed records), packs it one
event per record or ``--batch`` per record (JSON arrays), then runs what a worker's ingest lane
does with it (validate, route to keyed partitions, de-duplicate, watermark, every family,
encode each changed key once per batch of ``--fetch`` events), twice: with all families and with
none. Prints the best of ``--reps`` runs of each, in CPU microseconds per event, alternating
the two so that a noisy machine slows both alike.

    python bench/hotpath.py [--events 100000] [--batch 100] [--reps 4]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schemas.events import TOPIC_MODELS  # noqa: E402
from streams.conversion import Conversion, Shopper  # noqa: E402
from streams.engagement import Engagement  # noqa: E402
from streams.families import routes  # noqa: E402
from streams.generator import Traffic  # noqa: E402
from streams.ingest import Raw, decode_batch, partition_for  # noqa: E402
from streams.keyed import Forwarded, KeyedStage, StageOutput  # noqa: E402
from streams.replies import Replies  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.windows import WindowSpec  # noqa: E402


def records(events: int, batch: int) -> tuple[list[Raw], int]:
    traffic = Traffic(rate=5000, seed=3, start_ms=int(time.time() * 1000) - 1_800_000, noise=True)
    per_topic: dict[str, list[bytes]] = defaultdict(list)
    n = 0
    while n < events:
        for topic, value, _ in traffic.second():
            per_topic[topic].append(value)
            n += 1
    raws: list[Raw] = []
    for topic, values in per_topic.items():
        for i in range(0, len(values), batch):
            chunk = values[i:i + batch]
            raws.append(Raw(topic, 0, len(raws), chunk[0] if batch == 1 else b"[" + b",".join(chunk) + b"]"))
    return raws, n


def run(raws: list[Raw], s: Settings, spec: WindowSpec, families: bool, per_fetch: int) -> float:
    """CPU seconds for the whole input, fresh state."""
    stages = {
        "account": KeyedStage("account", spec, [Engagement(spec, s.top_posts), Replies(spec, s.reply_slo), Conversion(spec)]
                              if families else [], s.dedup_horizon, s.idle),
        "actor": KeyedStage("actor", spec, [Shopper(s.attribution_lookback, s.attribution_half_life, s.grace)]
                            if families else [], s.dedup_horizon, s.idle, compact=True),
    }
    started = time.process_time()
    for i in range(0, len(raws), per_fetch):
        good, _bad = decode_batch(raws[i:i + per_fetch], TOPIC_MODELS, s.max_event_bytes)
        local: dict[str, dict[int, list[Forwarded]]] = defaultdict(lambda: defaultdict(list))
        for raw, event in good:
            for stream, key, primary in routes(raw.topic, event):
                local[stream][partition_for(key, s.partitions)].append(
                    Forwarded(raw.topic, raw.topic, raw.partition, raw.offset, key, event, primary))
        for stream, parts in local.items():
            out, stage = StageOutput(), stages[stream]
            for p, items in parts.items():
                stage.process(p, items, out)
            for p, keys in out.dirty.items():
                for key in keys:
                    stage.encoded(p, key)
            stage.cool()
    return time.process_time() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=100, help="events per record (1: one JSON object each)")
    ap.add_argument("--fetch", type=int, default=20_000, help="events per lane call")
    ap.add_argument("--reps", type=int, default=4)
    args = ap.parse_args()
    s = Settings()
    spec = WindowSpec.from_settings(s)
    raws, n = records(args.events, args.batch)
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)  # as the worker (streams/cli.py)
    best = {True: float("inf"), False: float("inf")}
    for rep in range(args.reps):
        for families in (True, False):
            best[families] = min(best[families], run(raws, s, spec, families, max(1, args.fetch // args.batch)))
        print(f"\rrun {rep + 1}/{args.reps}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print(f"{n:,} events, {args.batch} per record, best of {args.reps} (CPU time)")
    for families, label in ((True, "all families"), (False, "no families (validate, route, dedup, windows)")):
        print(f"  {label:48} {best[families] / n * 1e6:6.2f} us/event  {n / best[families]:9,.0f} events/s")
    print(f"  families' share of the in-process hot path: {1 - best[False] / best[True]:.0%}")


if __name__ == "__main__":
    main()
