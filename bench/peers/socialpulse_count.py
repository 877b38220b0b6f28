"""The count job on socialpulse's own machinery, beside the peers doing the same job.

Faust is the control plane (consumer group, offsets, a changelog-backed RocksDB table,
the web server), exactly as in a socialpulse worker; the data path is socialpulse's:
a lane (streams/transport.py) gets each fetched batch whole, counts it per (account,
10 s window) in a dict, and writes each changed count once per batch and partition
(streams/changelog.py). Counts are kept per input partition (a count is a sum: the
partials of an account's window add up), so no repartition topic is needed, where Quix
Streams repartitions through Kafka (group_by) and Bytewax exchanges between workers.
Late records (older than the partition's newest event time minus the grace) are
dropped and reported as late_dropped, like the frameworks' windows do.

    python bench/peers/socialpulse_count.py --bootstrap HOST:PORT --topics a,b --expected N
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]

from common import GRACE_S, WINDOW_MS, Clock, account_and_ts, progress, report  # noqa: E402

from bench.throughput import free_port  # noqa: E402
from streams.app import create_app  # noqa: E402
from streams.changelog import write_many  # noqa: E402
from streams.settings import Settings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topics", required=True, help="comma-separated")
    ap.add_argument("--expected", type=int, required=True)
    args = ap.parse_args()
    import faust

    loop = asyncio.new_event_loop()  # before the app: Faust's services bind to the current loop
    asyncio.set_event_loop(loop)
    settings = Settings(
        broker=f"kafka://{args.bootstrap}", app_id=f"peer-socialpulse-{time.time_ns()}",
        data_dir=tempfile.mkdtemp(prefix="sp-count-", dir=os.environ.get("PEER_STATE_DIR")),
        web_host="127.0.0.1", web_port=free_port(), log_level="warning",
    )
    app = create_app(settings)
    topics = args.topics.split(",")
    source = app.topic(*topics, key_type=bytes, value_type=bytes)
    app.topics.add(source)
    table = app.Table("counts", partitions=settings.partitions, key_type=bytes, value_type=bytes)
    counts: dict[int, dict[bytes, int]] = {}  # input partition -> b"account|window" -> count
    newest: dict[int, int] = {}  # input partition -> newest event time seen
    clock = Clock()
    n = {"records": 0, "malformed": 0, "late": 0}

    def lane(batch: dict[Any, list[Any]]) -> None:
        clock.start()
        for tp, records in batch.items():
            mine, top = counts.setdefault(tp.partition, {}), newest.get(tp.partition, 0)
            delta: Counter[bytes] = Counter()
            for rec in records:
                try:
                    found = account_and_ts(orjson.loads(rec.value))
                except ValueError:
                    found = None
                if found is None:
                    n["malformed"] += 1
                    continue
                account, ms = found
                if ms < top - GRACE_S * 1000:
                    n["late"] += 1
                    continue
                top = max(top, ms)
                delta[f"{account}|{ms - ms % WINDOW_MS}".encode()] += 1
            newest[tp.partition] = top
            n["records"] += len(records)
            for key, d in delta.items():
                mine[key] = mine.get(key, 0) + d
            write_many(table, tp.partition, [(key, str(mine[key]).encode()) for key in delta])
        progress("socialpulse-count", n["records"], args.expected)
        if n["records"] >= args.expected:
            clock.stop()
            windows = len(set().union(*counts.values()))  # (account, window) counters, as raw_count.py reports
            report(clock, n["records"], n["records"] - n["malformed"], n["malformed"], windows, late_dropped=n["late"])
            os._exit(0)  # the figures are out; nothing to flush for a benchmark

    for topic in topics:
        app.lanes[topic] = lane  # type: ignore[attr-defined]
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)  # as the socialpulse worker does
    worker = faust.Worker(app, loop=loop, loglevel=os.environ.get("SP_LOG", "warning"), quiet=True, redirect_stdouts=False)
    worker.spinner = None
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
