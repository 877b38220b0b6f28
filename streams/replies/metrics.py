"""Reply arithmetic as pure functions: histograms, quantiles, window aggregates.

A window aggregate (``agg``):

    {"lat": [seconds, ...],        # reply latencies of replies whose ts lies in the window
     "first": [seconds, ...],      # first-response latencies
     "next": [seconds, ...],       # follow-up reply latencies (after the first response)
     "bot": int,                   # waits a bot ended (bot-resolved)
     "ostart": int, "oans": int,   # (trailing buckets) outreach started, and answered by the prospect so far
     "started": int,               # conversations whose first inbound lies in the window
     "replied": int,               # ... of which replied so far
     "met": int, "breached": int,  # SLA outcomes (met by reply ts, breached by deadline)
     "agents": {agent: {"d-hh": [seconds, ...]}}}   # by local weekday and hour
"""

from __future__ import annotations

import functools
import math
from itertools import accumulate
from typing import Any

from ..windows import Agg

__all__ = [
    "LATENCY_BUCKETS",
    "PROSPECT_BUCKETS",
    "hist_merge",
    "empty",
    "merge",
    "negate",
    "hist_new",
    "hist_observe",
    "hist_value",
    "quantile",
    "summary",
]

#: Histogram bucket edges (seconds): 1 min, 5 min, the 15 min SLO, 30 min, 1 h, 4 h, 1 day.
LATENCY_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 86400.0)
#: Time to a prospect's response to outreach: 5 min, 1 h, 4 h, 1 day, 3 days, 7 days.
PROSPECT_BUCKETS = (300.0, 3600.0, 14400.0, 86400.0, 259200.0, 604800.0)


def empty() -> Agg:
    # (next, bot, ostart, oans appear once they have something: every bucket is in the changelog)
    return {"lat": [], "first": [], "started": 0, "replied": 0, "met": 0, "breached": 0, "agents": {}}


def merge(into: Agg, other: Agg) -> None:
    """Fold ``other`` into ``into``. Aggregates are signed: a retraction (``negate``) carries
    the latencies it takes back under ``"neg"``; one that meets no value yet (a correction
    that reaches a window before the value it corrects) waits there for it."""
    neg = other.get("neg")
    if neg:
        for k in ("lat", "first", "next"):
            if neg.get(k):
                _take(into, k, neg[k])
        for agent, slots in neg.get("agents", {}).items():
            for slot, values in slots.items():
                _take_agent(into, agent, slot, values)
    for k in ("lat", "first", "next"):
        if other.get(k):
            _put(into, k, other[k])
    for k in ("started", "replied", "met", "breached"):
        into[k] += other[k]
    for k in ("bot", "ostart", "oans"):  # (absent in aggregates written before them)
        if other.get(k):
            into[k] = into.get(k, 0) + other[k]
    agents = into["agents"]
    for agent, slots in other["agents"].items():
        for slot, values in slots.items():
            pending = into.get("neg", {}).get("agents", {}).get(agent, {}).get(slot)
            for v in values:
                if pending and v in pending:
                    pending.remove(v)
                else:
                    agents.setdefault(agent, {}).setdefault(slot, []).append(v)
    if neg or "neg" in into:  # (additions alone leave nothing to tidy)
        _tidy(into, set(other["agents"]) | set((neg or {}).get("agents", ())))


def negate(part: Agg) -> Agg:
    """The retraction of ``part``: merged after it, it leaves an aggregate as it was before."""
    out: Agg = {"lat": [], "first": [], "agents": {}}
    for k in ("started", "replied", "met", "breached"):
        out[k] = -part.get(k, 0)
    for k in ("bot", "ostart", "oans"):
        if part.get(k):
            out[k] = -part[k]
    neg: dict[str, Any] = {k: list(part[k]) for k in ("lat", "first", "next") if part.get(k)}
    if part.get("agents"):
        neg["agents"] = {a: {s: list(v) for s, v in slots.items()} for a, slots in part["agents"].items()}
    if neg:
        out["neg"] = neg
    return out


def _put(into: Agg, k: str, values: list[float]) -> None:
    pending = into.get("neg", {}).get(k)
    mine = into.setdefault(k, [])
    for v in values:
        if pending and v in pending:
            pending.remove(v)
        else:
            mine.append(v)


def _take(into: Agg, k: str, values: list[float]) -> None:
    mine = into.setdefault(k, [])
    for v in values:
        if v in mine:
            mine.remove(v)
        else:
            into.setdefault("neg", {}).setdefault(k, []).append(v)


def _take_agent(into: Agg, agent: str, slot: str, values: list[float]) -> None:
    mine = into["agents"].get(agent, {}).get(slot)
    for v in values:
        if mine and v in mine:
            mine.remove(v)
        else:
            into.setdefault("neg", {}).setdefault("agents", {}).setdefault(agent, {}).setdefault(slot, []).append(v)


def _tidy(agg: Agg, touched: set[str]) -> None:
    """Drop emptied agent slots (of the ``touched`` agents) and retractions that found their values."""
    agents = agg["agents"]
    for agent in [a for a in touched if a in agents and not all(agents[a].values())]:
        slots = {s: v for s, v in agents[agent].items() if v}
        if slots:
            agents[agent] = slots
        else:
            del agents[agent]
    neg = agg.get("neg")
    if neg is not None:
        for agent in list(neg.get("agents", {})):
            slots = {s: v for s, v in neg["agents"][agent].items() if v}
            if slots:
                neg["agents"][agent] = slots
            else:
                del neg["agents"][agent]
        for k in [k for k, v in neg.items() if not v]:
            del neg[k]
        if not neg:
            del agg["neg"]


def hist_new(buckets: tuple[float, ...] = LATENCY_BUCKETS) -> dict[str, Any]:
    return {"c": [0] * (len(buckets) + 1), "sum": 0.0}


def hist_observe(hist: dict[str, Any], value: float, buckets: tuple[float, ...] = LATENCY_BUCKETS, n: int = 1) -> None:
    """Count one observation (``n = -1``: take one back, a documented correction)."""
    hist["c"][_bucket(value, buckets)] += n
    # rounded to the microsecond: latencies are whole milliseconds, so the sum is the same
    # whatever order the observations (and corrections) come in
    hist["sum"] = round(hist["sum"] + n * value, 6)


def hist_merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    """Add one histogram's observations to another (same buckets)."""
    into["c"] = [a + b for a, b in zip(into["c"], other["c"], strict=True)]
    into["sum"] = round(into["sum"] + other["sum"], 6)


def _bucket(value: float, buckets: tuple[float, ...]) -> int:
    for i, edge in enumerate(buckets):
        if value <= edge:
            return i
    return len(buckets)


@functools.cache
def _les(buckets: tuple[float, ...]) -> tuple[str, ...]:
    """The ``le`` labels of a histogram's buckets, ending with +Inf."""
    return (*(repr(float(edge)) for edge in buckets), "+Inf")


def hist_value(hist: dict[str, Any], buckets: tuple[float, ...] = LATENCY_BUCKETS) -> tuple[list[tuple[str, float]], float]:
    """Cumulative (le, count) pairs ending with +Inf, and the sum: Prometheus' shape.
    (Every scrape asks this of every histogram of every account: no work is repeated.)"""
    return list(zip(_les(buckets), map(float, accumulate(hist["c"])), strict=True)), float(hist["sum"])


def quantile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None if empty."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary(values: list[float]) -> dict[str, float | int | None]:
    """count, mean, p50, p90, p99 of latencies (seconds)."""
    return {
        "count": len(values),
        "mean": math.fsum(values) / len(values) if values else None,  # (fsum: the same in any order)
        "p50": quantile(values, 0.5),
        "p90": quantile(values, 0.9),
        "p99": quantile(values, 0.99),
    }
