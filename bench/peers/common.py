"""What every peer shares: the job's rules and the one JSON line a peer prints at its end.

Standard library only: the peers import this from their own venvs.

The count job: every record of the input topics is read once; a record counts when it is
a JSON object with an ``event_id``, a known ``platform`` (when it has one), an account
(``account_id``; orders carry none, so their ``actor_id`` stands in, as in bench/throughput.py)
and an event time ``ts`` (RFC 3339 with an offset, or epoch ms). Anything else is malformed:
counted and skipped. Valid events are counted per account in 10 s tumbling windows of ``ts``.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime

WINDOW_MS = 10_000
WINDOW_S = 10
#: How long a window stays open for out-of-order events (Quix grace, Bytewax wait_for_system_duration).
#: Reading a backlog interleaves partitions, so event time jumps back by seconds in Quix and by
#: far more in Bytewax (no cross-partition time alignment: a sparse topic's partition races ahead).
#: Records later than this are dropped by the frameworks and reported as late_dropped; the raw
#: peers count every record. 60 s keeps the drops to the generator's own late records (10-60 min) at 100k events.
GRACE_S = 60
PLATFORMS = frozenset({"linkedin", "x", "facebook", "instagram", "tiktok", "youtube", "pinterest", "other"})


def event_ms(ts: object) -> int | None:
    """``ts`` as epoch milliseconds, or None when it is not a valid event time."""
    if isinstance(ts, str):
        try:
            parsed = datetime.fromisoformat(ts)  # 3.11+: accepts a trailing Z
        except ValueError:
            return None
        if parsed.tzinfo is None:
            return None
        return int(parsed.timestamp() * 1000)
    if isinstance(ts, int) and not isinstance(ts, bool):
        return ts
    return None


def account_and_ts(obj: object) -> tuple[str, int] | None:
    """(account, event ms) of a decoded record, or None when the record is malformed."""
    if not isinstance(obj, dict) or not isinstance(obj.get("event_id"), str):
        return None
    platform = obj.get("platform")
    if platform is not None and platform not in PLATFORMS:
        return None
    account = obj.get("account_id") or obj.get("actor_id")
    if not isinstance(account, str) or not account:
        return None
    ms = event_ms(obj.get("ts"))
    return None if ms is None else (account, ms)


class Clock:
    """First-to-last-record wall time and the process's CPU time over the same span."""

    def __init__(self) -> None:
        self.first = self.last = 0.0
        self.cpu_first = self.cpu_last = 0.0

    def start(self) -> None:
        if not self.first:
            self.first = time.perf_counter()
            self.cpu_first = time.process_time()

    def stop(self) -> None:
        self.last = time.perf_counter()
        self.cpu_last = time.process_time()


def report(clock: Clock, records: int, valid: int, malformed: int, windows: int, **extra: object) -> None:
    """Print the peer's figures as one JSON line on stdout (the runner reads the last line)."""
    seconds = max(clock.last - clock.first, 1e-9)
    line = {
        "events": records,
        "valid": valid,
        "malformed": malformed,
        "windows": windows,
        "seconds": round(seconds, 4),
        "events_per_s": round(records / seconds, 1),
        "cpu_window_s": round(clock.cpu_last - clock.cpu_first, 3),
        **extra,
    }
    print(json.dumps(line), flush=True)


def progress(name: str, records: int, expected: int) -> None:
    print(f"\r{name}: {records:,}/{expected:,}", end="", file=sys.stderr, flush=True)
