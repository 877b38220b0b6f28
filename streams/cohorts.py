"""Daily cohorts: counts of one UTC day's starters (clicks, leads, outreach) and of those that
converted since, published when the day closes and again, next revision, whenever a later
event changes them, until nothing can change them any more (pure functions).

A family keeps ``{day_start_ms: cohort}`` in a key's state; a cohort is a list
``[count, count, ..., revision, changed]`` (small in the changelog): ``revision`` is -1
until the day is first published, ``changed`` is 1 when a count moved since the last
publication.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schemas.events import split_account_key
from schemas.results import Result, result_key

from .durations import format_duration
from .windows import bucket_start, iso

__all__ = ["DAY_MS", "Cohort", "bump", "due", "close", "decode", "revision", "result"]

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


def close(state: Any, watermark: int, grace_ms: int, open_ms: int,
          results: Callable[[int, Cohort], list[Any]]) -> tuple[list[Any], bool]:
    """``due`` on a family state's ``"coh"``: the results of each cohort to publish (by
    ``results(day, cohort)``), whether the cohorts changed; ``"coh"`` goes when empty."""
    coh = state.get("coh")
    if not coh:
        return [], False
    publish, changed = due(coh, watermark, grace_ms, open_ms)
    out = [r for day, c in publish for r in results(day, c)]
    if not coh:
        del state["coh"]
    return out, changed


def result(family: str, metric: str, key: str, day: int, c: Cohort, value: float, **extra: Any) -> Result:
    """One cohort's result: window ``1d`` starting at its day, the cohort's revision, a key
    that a correction reuses."""
    platform, account = split_account_key(key)
    start, label = iso(day), format_duration(DAY_MS)
    fields: dict[str, Any] = {"cohort": True, **extra}
    return Result(family=family, metric=metric, platform=platform, account_id=account, window=label,  # type: ignore[arg-type]
                  window_start=start, window_end=iso(day + DAY_MS), value=value, revision=revision(c),
                  key=result_key(metric, platform, account, label, start), **fields)
