"""Per-event cost of each metric family, without Kafka, measured in one run.

Generates traffic with the generator's mix (noise off), validates it once, then
times the keyed stage's ``process`` (dedup, lateness, the family's fold) with
one family at a time, and all of them together. Prints microseconds per event
and events/s of one core.

    python bench/family_cost.py [--events 200000]
"""

from __future__ import annotations

import argparse
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
from streams.sellers import Sellers  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.windows import WindowSpec  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=2000)
    args = ap.parse_args()
    s = Settings()
    spec = WindowSpec.from_settings(s)
    traffic = Traffic(rate=5000, seed=3, start_ms=int(time.time() * 1000) - 1_800_000, noise=False)
    raws: list[Raw] = []
    while len(raws) < args.events:
        raws.extend(Raw(t, 0, len(raws), v) for t, v, _ in traffic.second())
    t0 = time.perf_counter()
    good, bad = decode_batch(raws, TOPIC_MODELS, s.max_event_bytes)
    decode_s = time.perf_counter() - t0
    streams: dict[str, list[Forwarded]] = defaultdict(list)
    for raw, ev in good:
        dumped = ev.model_dump(mode="json")
        for stream, key, primary in routes(raw.topic, ev):
            streams[stream].append(Forwarded(raw.topic, raw.topic, 0, raw.offset, key, dumped, primary))
    configs = {
        "engagement": ("account", lambda: [Engagement(spec)]),
        "replies": ("account", lambda: [Replies(spec, s.reply_slo)]),
        "conversion (account side)": ("account", lambda: [Conversion(spec)]),
        "conversion (shopper side)": ("actor", lambda: [Shopper(s.attribution_lookback, s.attribution_half_life, s.grace)]),
        "sellers": ("account", lambda: [Sellers.from_settings(s, spec)]),
        "all account families": ("account", lambda: [Engagement(spec), Replies(spec, s.reply_slo), Conversion(spec)]),
        "all account families + sellers": ("account", lambda: [Engagement(spec), Replies(spec, s.reply_slo),
                                                                Conversion(spec), Sellers.from_settings(s, spec)]),
    }
    print(f"{len(raws):,} records -> {len(good):,} valid events; decode+validate {decode_s / len(raws) * 1e6:.1f} us/record "
          f"({len(raws) / decode_s:,.0f}/s)")
    print(f"{'family':32} {'events':>9} {'us/event':>9} {'events/s':>10}")
    for name, (stream, make) in configs.items():
        families = make()
        topics = set().union(*(f.topics for f in families))
        items = [f for f in streams[stream] if f.topic in topics]
        stage = KeyedStage(stream, spec, families, s.dedup_horizon, s.idle)
        by_part: dict[int, list[Forwarded]] = defaultdict(list)
        for f in items:
            by_part[partition_for(f.key, 4)].append(f)
        t0 = time.perf_counter()
        for p, its in by_part.items():
            for i in range(0, len(its), args.batch):
                stage.process(p, its[i:i + args.batch], StageOutput())
        dt = time.perf_counter() - t0
        print(f"{name:32} {len(items):>9,} {dt / max(len(items), 1) * 1e6:>9.2f} {len(items) / dt:>10,.0f}")


if __name__ == "__main__":
    main()
