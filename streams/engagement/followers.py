"""Follower snapshots by event time (pure functions), and the closed windows a key published.

A window's follower count is the last snapshot at or before its end (``ts < window_end``:
the window is ``[start, end)``), never a later one; the live gauges and the API take the
last snapshot at or before the watermark. Snapshots are polled and arrive late and out of
order, so a key keeps its recent snapshots ordered by ``ts`` (``history``: ``[[ts,
followers], ...]``) and answers from them, whatever order they came in.

Ties: two snapshots with the same ``ts`` count as one, the larger count (the same rule as
the window aggregates' ``f0``/``f1``, ``engagement.metrics``), so nothing depends on which
was read first.

Bounded: a lookup is only ever for a moment that can still change a result, a window end
after ``watermark - ALLOWED_LATENESS`` or a watermark to come. So ``prune`` keeps the last
snapshot at or before ``watermark - ALLOWED_LATENESS`` and everything after it, and
``compact`` keeps, of the snapshots the watermark has passed, only the last of each
``grain`` (the gcd of the closed-window sizes: every window end is a multiple of it): at
most one snapshot per minute of the allowed lateness with the default windows, one per poll
when the platform is polled less often.

``published``: per closed-window size, the starts of the windows this key published that
can still be corrected, as runs ``[[first_start, n], ...]`` (``n`` consecutive windows): a
late snapshot changes the follower count of the published windows after it that have no
snapshot of their own, and those are published again (``Engagement.apply``).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator

__all__ = [
    "Snapshot",
    "Runs",
    "insert",
    "at_or_before",
    "before",
    "prune",
    "compact",
    "note",
    "starts",
    "drop_before",
]

#: ``[ts, followers]``
Snapshot = list[int]
#: runs of window starts: ``[[first_start, n], ...]`` ascending, for one window size
Runs = list[list[int]]


def insert(history: list[Snapshot], ts: int, followers: int) -> bool:
    """Add a snapshot (same ``ts``: the larger count stays); True if ``history`` changed."""
    i = bisect_left(history, ts, key=lambda s: s[0])
    if i < len(history) and history[i][0] == ts:
        if followers <= history[i][1]:
            return False
        history[i][1] = followers
        return True
    history.insert(i, [ts, followers])
    return True


def at_or_before(history: list[Snapshot], moment: int) -> Snapshot | None:
    """The last snapshot with ``ts <= moment`` (the live value at a watermark)."""
    i = bisect_right(history, moment, key=lambda s: s[0])
    return history[i - 1] if i else None


def before(history: list[Snapshot], end: int) -> Snapshot | None:
    """The last snapshot with ``ts < end`` (a window's follower count)."""
    return at_or_before(history, end - 1)


def prune(history: list[Snapshot], low: int) -> bool:
    """Forget the snapshots older than the last one at or before ``low`` (no lookup reaches
    them any more); True if any went."""
    i = bisect_right(history, low, key=lambda s: s[0]) - 1
    if i <= 0:
        return False
    del history[:i]
    return True


def compact(history: list[Snapshot], watermark: int, grain: int) -> bool:
    """Of the snapshots in ``grain``-aligned spans that end at or before ``watermark + 1``
    (wholly at or before the watermark), keep only the last of each span: every later
    lookup is a multiple of ``grain`` or a watermark to come. True if any went."""
    if len(history) < 2:
        return False
    done = watermark + 1 - (watermark + 1) % grain  # spans before this moment are whole
    kept: list[Snapshot] = []
    changed = False
    for snap in history:
        if kept and snap[0] < done and kept[-1][0] // grain == snap[0] // grain:
            kept[-1] = snap  # ordered by ts: the later one of the span wins
            changed = True
        else:
            kept.append(snap)
    if changed:
        history[:] = kept
    return changed


def note(runs: Runs, start: int, size: int) -> bool:
    """Record that the window at ``start`` was published; True if it was not recorded yet."""
    for i, (first, n) in enumerate(runs):
        last = first + (n - 1) * size
        if first <= start <= last:
            return False
        if start == last + size:
            runs[i][1] += 1
            if i + 1 < len(runs) and runs[i + 1][0] == start + size:  # it joins the next run
                runs[i][1] += runs[i + 1][1]
                del runs[i + 1]
            return True
        if start == first - size:
            runs[i][:] = [start, n + 1]
            return True
        if start < first:
            runs.insert(i, [start, 1])
            return True
    runs.append([start, 1])
    return True


def starts(runs: Runs, size: int, after: int) -> Iterator[int]:
    """The recorded starts of windows ending after ``after``."""
    for first, n in runs:
        last = first + (n - 1) * size
        if last + size <= after:
            continue
        skip = max(0, (after - first) // size)  # windows ending at or before ``after``
        for k in range(skip, n):
            yield first + k * size


def drop_before(runs: Runs, size: int, low: int) -> bool:
    """Forget the windows ending at or before ``low`` (no longer corrected); True if any went."""
    changed = False
    while runs:
        first, n = runs[0]
        gone = min(n, max(0, (low - first) // size))  # windows with first + (k+1)*size <= low
        if not gone:
            break
        changed = True
        if gone == n:
            del runs[0]
        else:
            runs[0][:] = [first + gone * size, n - gone]
            break
    return changed
