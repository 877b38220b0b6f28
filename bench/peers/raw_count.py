"""The count job on a bare aiokafka consumer with a dict counter (the Python limit).

python bench/peers/raw_count.py --bootstrap HOST:PORT --topics a,b --expected N [--json orjson|json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter

from aiokafka import AIOKafkaConsumer
from common import WINDOW_MS, Clock, account_and_ts, progress, report


async def count(bootstrap: str, topics: list[str], expected: int, loads) -> None:  # noqa: ANN001
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=f"peer-raw-{time.time_ns()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4_194_304,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    await consumer.start()
    counts: Counter[tuple[str, int]] = Counter()
    clock = Clock()
    records = malformed = 0
    try:
        while records < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if batches:
                clock.start()
            for batch in batches.values():
                for rec in batch:
                    records += 1
                    try:
                        found = account_and_ts(loads(rec.value))
                    except ValueError:  # JSONDecodeError, UnicodeDecodeError, orjson's error
                        found = None
                    if found is None:
                        malformed += 1
                        continue
                    account, ms = found
                    counts[account, ms - ms % WINDOW_MS] += 1
            if batches and records % 50_000 < 10_000:
                progress("raw", records, expected)
        clock.stop()
    finally:
        await consumer.stop()
    report(clock, records, records - malformed, malformed, len(counts))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topics", required=True, help="comma-separated")
    ap.add_argument("--expected", type=int, required=True)
    ap.add_argument("--json", choices=("orjson", "json"), default="orjson")
    args = ap.parse_args()
    if args.json == "orjson":
        import orjson

        loads = orjson.loads
    else:
        loads = json.loads
    asyncio.run(count(args.bootstrap, args.topics.split(","), args.expected, loads))


if __name__ == "__main__":
    main()
