"""Durations as settings and labels write them: ``30s``, ``5m``, ``1h``, ``7d`` <-> milliseconds."""

from __future__ import annotations

import re

__all__ = ["parse_duration", "format_duration"]

_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)\s*$")


def parse_duration(value: object) -> int:
    """``'30s'``, ``'5m'``, ``'1h'``, ``'7d'`` (or a bare number of seconds) -> milliseconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration must not be negative: {value!r}")
        return int(value * 1000)
    text = str(value)
    if text.strip().isdigit():
        return int(text.strip()) * 1000
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 5m, 1h, 7d)")
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


def format_duration(ms: int) -> str:
    """Milliseconds -> the shortest exact label (``3600000`` -> ``'1h'``)."""
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS_MS[unit]
        if ms % size == 0 and ms >= size:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
