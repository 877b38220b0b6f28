"""Daily cohorts: counts of one UTC day's starters (clicks, leads, outreach) and of those that
converted since, published when the day closes and again, next revision, whenever a later
event changes them, until nothing can change them any more (pure functions).

A family keeps ``{day_start_ms: cohort}`` in a key's state; a cohort is a list
``[count, count, ..., revision, changed]`` (small in the changelog): ``revision`` is -1
until the day is first published, ``changed`` is 1 when a count moved since the last
publication.
"""

from __future__ import annotations

from .windows import bucket_start

__all__ = ["DAY_MS", "Cohort", "bump", "due", "decode", "revision"]

DAY_MS = 86_400_000
Cohort = list[int]


def bump(cohorts: dict[int, Cohort], ts: int, index: int, n: int, width: int) -> None:
    """Add ``n`` to count ``index`` of the cohort of ``ts``'s UTC day (``width`` counts)."""
    day = bucket_start(ts, DAY_MS)
    c = cohorts.get(day)
    if c is None:
        c = cohorts[day] = [0] * width + [-1, 0]
    c[index] += n
    c[-1] = 1


def revision(c: Cohort) -> int:
    return c[-2]


def due(cohorts: dict[int, Cohort], watermark: int, grace_ms: int, open_ms: int) -> tuple[list[tuple[int, Cohort]], bool]:
    """The cohorts to publish now, each with its revision advanced (the first publication
    once the watermark passes the day's end plus grace, then one per change), and whether
    the cohorts changed. A cohort is dropped ``open_ms`` after its day's end: nothing can
    change it any more (its last change is published first)."""
    out: list[tuple[int, Cohort]] = []
    changed = False
    for day in sorted(cohorts):
        end = day + DAY_MS
        if end + grace_ms > watermark:
            break  # later days are open too
        c = cohorts[day]
        if c[-1]:
            c[-2] += 1
            c[-1] = 0
            out.append((day, c))
            changed = True
        if end + open_ms <= watermark:
            del cohorts[day]
            changed = True
    return out, changed


def decode(raw: dict[str, Cohort]) -> dict[int, Cohort]:
    """JSON (string keys) -> in memory (integer day starts)."""
    return {int(day): c for day, c in raw.items()}
