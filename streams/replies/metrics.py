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

import math
from typing import Any

from ..windows import Agg

__all__ = [
    "LATENCY_BUCKETS",
    "PROSPECT_BUCKETS",
    "hist_merge",
    "empty",
    "merge",
    "hist_new",
    "hist_observe",
    "hist_move",
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
    into["lat"].extend(other["lat"])
    into["first"].extend(other["first"])
    for k in ("started", "replied", "met", "breached"):
        into[k] += other[k]
    for k in ("bot", "ostart", "oans"):  # (absent in aggregates written before them)
        if other.get(k):
            into[k] = into.get(k, 0) + other[k]
    if other.get("next"):
        into.setdefault("next", []).extend(other["next"])
    agents = into["agents"]
    for agent, slots in other["agents"].items():
        mine = agents.setdefault(agent, {})
        for slot, values in slots.items():
            mine.setdefault(slot, []).extend(values)


def hist_new(buckets: tuple[float, ...] = LATENCY_BUCKETS) -> dict[str, Any]:
    return {"c": [0] * (len(buckets) + 1), "sum": 0.0}


def hist_observe(hist: dict[str, Any], value: float, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
    for i, edge in enumerate(buckets):
        if value <= edge:
            hist["c"][i] += 1
            break
    else:
        hist["c"][-1] += 1
    hist["sum"] += value


def hist_merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    """Add one histogram's observations to another (same buckets)."""
    into["c"] = [a + b for a, b in zip(into["c"], other["c"], strict=True)]
    into["sum"] += other["sum"]


def _bucket(value: float, buckets: tuple[float, ...]) -> int:
    for i, edge in enumerate(buckets):
        if value <= edge:
            return i
    return len(buckets)


def hist_move(hist: dict[str, Any], old: float, new: float, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
    """Correct one observation from ``old`` to ``new``."""
    hist["c"][_bucket(old, buckets)] -= 1
    hist["c"][_bucket(new, buckets)] += 1
    hist["sum"] += new - old


def hist_value(hist: dict[str, Any], buckets: tuple[float, ...] = LATENCY_BUCKETS) -> tuple[list[tuple[str, float]], float]:
    """Cumulative (le, count) pairs ending with +Inf, and the sum: Prometheus' shape."""
    out, running = [], 0
    for edge, n in zip((*buckets, math.inf), hist["c"], strict=True):
        running += n
        out.append(("+Inf" if edge == math.inf else repr(float(edge)), float(running)))
    return out, float(hist["sum"])


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
        "mean": sum(values) / len(values) if values else None,
        "p50": quantile(values, 0.5),
        "p90": quantile(values, 0.9),
        "p99": quantile(values, 0.99),
    }
