"""Broker loss at length: the cases of ``tests/integration/test_kafka_cluster.py`` (three KRaft
brokers, replication factor 3, ``min.insync.replicas=2``, two workers under steady traffic) with
``--scale`` times the traffic per burst and ``--scale`` times as long before, between and during
the outages (one broker lost and restarted; two brokers lost, writes refused; compaction and a
restore from the compacted changelogs).

The test module runs them at scale 1 in ``make test`` (3-4 minutes on 2 cores); this runs
them longer, for CI or by hand, and prints the same figures: events sent and counted (accepted,
duplicate, late), seconds until ``/readyz`` answered 200 again on both workers, what it said
meanwhile, and the compaction evidence (records readable from the beginning, offsets written,
gaps). Every assertion of the test applies (exact totals, nothing late, nothing doubled).

Keep ``--scale`` at 8 or below: the two-broker outage lasts 30 s x scale, and the feed's
producer gives a record up after librdkafka's ``message.timeout.ms`` (5 min).

    python bench/broker_loss.py [--scale 4] [-k two_brokers]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=4.0, help="traffic and durations x this (default 4)")
    ap.add_argument("-k", default="", help="only the cases whose name matches (as pytest -k)")
    args = ap.parse_args()
    if not 0 < args.scale <= 8:
        ap.error("--scale must be in (0, 8]")
    cmd = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
           "tests/integration/test_kafka_cluster.py", *(["-k", args.k] if args.k else [])]
    began = time.monotonic()
    rc = subprocess.call(cmd, cwd=ROOT, env=os.environ | {"SOCIALPULSE_BENCH_SCALE": str(args.scale)})
    print(f"broker loss at scale {args.scale:g}: exit {rc} after {time.monotonic() - began:.0f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
