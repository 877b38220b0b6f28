"""The count job on Quix Streams: concat the input topics, parse, group_by account,
10 s tumbling count over event time (``ts``), changelog on. Runs in bench/.venvs/quix.

    python bench/peers/quix_count.py --bootstrap HOST:PORT --topics a,b --expected N

Stops (app.stop) once it has read ``expected`` input records and every valid one has come
back through the repartition topic into the window.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import tempfile
import time
from datetime import timedelta

import orjson
from common import GRACE_S, WINDOW_MS, Clock, account_and_ts, progress, report
from quixstreams import Application


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topics", required=True, help="comma-separated")
    ap.add_argument("--expected", type=int, required=True)
    ap.add_argument(
        "--poll-timeout", type=float, default=1.0, help="Application(consumer_poll_timeout=), 1.0 is Quix's default"
    )
    args = ap.parse_args()
    expected = args.expected
    state_dir = tempfile.mkdtemp(prefix="quix-state-", dir=os.environ.get("PEER_STATE_DIR"))

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=f"peer-quix-{time.time_ns()}",
        auto_offset_reset="earliest",
        state_dir=state_dir,
        loglevel="WARNING",
        consumer_poll_timeout=args.poll_timeout,
        consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
        producer_extra_config={"enable.idempotence": False},  # Tansu has no idempotent producers
    )
    logging.getLogger("quixstreams").setLevel(logging.WARNING)
    clock = Clock()
    n = {"records": 0, "malformed": 0, "arrived": 0, "late": 0, "windows": 0}

    def parse(raw: bytes) -> dict | None:
        clock.start()
        n["records"] += 1
        try:
            found = account_and_ts(orjson.loads(raw))
        except ValueError:
            found = None
        if found is None:
            n["malformed"] += 1
            return None
        return {"account": found[0], "ms": found[1]}

    def arrived(_value: dict) -> None:
        n["arrived"] += 1
        if n["arrived"] % 20_000 == 0:
            progress("quix", n["records"], expected)
        if n["records"] >= expected and n["arrived"] >= n["records"] - n["malformed"]:
            clock.stop()
            app.stop()

    def on_late(*_args, **_kwargs) -> bool:
        n["late"] += 1
        return False  # counted here; don't log each one

    def closed(_window: dict) -> None:
        n["windows"] += 1

    topics = [app.topic(t, value_deserializer="bytes") for t in args.topics.split(",")]
    for topic in topics:  # Tansu describes no retention.ms, which group_by copies to its repartition topic
        topic.broker_config.extra_config.setdefault("retention.ms", "-1")
    sdfs = [app.dataframe(topic) for topic in topics]
    sdf = functools.reduce(lambda a, b: a.concat(b), sdfs)
    sdf = sdf.apply(parse).filter(lambda v: v is not None)
    sdf = sdf.set_timestamp(lambda value, _key, _ts, _headers: value["ms"])
    sdf = sdf.group_by("account")
    sdf = sdf.update(arrived)
    sdf = (
        sdf.tumbling_window(timedelta(milliseconds=WINDOW_MS), grace_ms=timedelta(seconds=GRACE_S), on_late=on_late)
        .count()
        .final()
    )
    sdf = sdf.update(closed)
    app.run()
    if not clock.last:  # stopped for another reason (signal, error)
        clock.stop()
    report(clock, n["records"], n["records"] - n["malformed"], n["malformed"], n["windows"], late_dropped=n["late"])


if __name__ == "__main__":
    main()
