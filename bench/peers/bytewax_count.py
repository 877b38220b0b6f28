"""The count job on Bytewax 0.21: KafkaSource over the input topics (read to their end),
parse, count_window keyed by account, 10 s tumbling windows over event time (``ts``).
Runs in bench/.venvs/bytewax, one worker.

    python bench/peers/bytewax_count.py --bootstrap HOST:PORT --topics a,b --expected N

The source reads every partition to its end (tail=False), so the dataflow ends by itself;
the measured span still ends at the ``expected``-th record.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
import orjson
from bytewax.connectors.kafka import KafkaSource
from bytewax.dataflow import Dataflow
from bytewax.operators.windowing import EventClock, TumblingWindower, count_window
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.run import cli_main
from common import GRACE_S, WINDOW_S, Clock, account_and_ts, progress, report

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class CountingSink(DynamicSink):
    """Discards what it gets, counting the items and summing the window counts in them."""

    def __init__(self) -> None:
        self.n = self.total = 0

    def build(self, step_id: str, worker_index: int, worker_count: int) -> StatelessSinkPartition:
        sink = self

        class Part(StatelessSinkPartition):
            def write_batch(self, items: list) -> None:
                sink.n += len(items)
                sink.total += sum(c for _key, (_window, c) in items if isinstance(c, int))

        return Part()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topics", required=True, help="comma-separated")
    ap.add_argument("--expected", type=int, required=True)
    args = ap.parse_args()
    expected = args.expected
    clock = Clock()
    n = {"records": 0, "malformed": 0}

    def parse(msg) -> tuple[str, datetime] | None:  # noqa: ANN001 - a KafkaSourceMessage
        clock.start()
        n["records"] += 1
        if n["records"] % 50_000 == 0:
            progress("bytewax", n["records"], expected)
        if n["records"] == expected:
            clock.stop()
        try:
            found = account_and_ts(orjson.loads(msg.value))
        except ValueError:
            found = None
        if found is None:
            n["malformed"] += 1
            return None
        return found[0], EPOCH + timedelta(milliseconds=found[1])

    source = KafkaSource(
        [args.bootstrap],
        args.topics.split(","),
        tail=False,
        # assign() without a group: group.id is unused, but fresh all the same
        add_config={"group.id": f"peer-bytewax-{time.time_ns()}"},
    )
    windows, late = CountingSink(), CountingSink()
    flow = Dataflow("count_job")
    events = op.filter_map("parse", op.input("kafka", flow, source), parse)
    counted = count_window(
        "count",
        events,
        EventClock(lambda e: e[1], wait_for_system_duration=timedelta(seconds=GRACE_S)),
        TumblingWindower(length=timedelta(seconds=WINDOW_S), align_to=EPOCH),
        key=lambda e: e[0],
    )
    op.output("windows", counted.down, windows)
    op.output("late", counted.late, late)
    cli_main(flow, workers_per_process=1)
    if not clock.last:
        clock.stop()
    report(
        clock,
        n["records"],
        n["records"] - n["malformed"],
        n["malformed"],
        windows.n,
        late_dropped=late.n,
        counted_in_windows=windows.total,
    )


if __name__ == "__main__":
    main()
