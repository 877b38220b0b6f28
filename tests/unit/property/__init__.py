"""Property tests at the keyed-stage level: the same events in any arrival order give the same
results, breaches, /metrics and API (METRICS.md, "Time": order never matters)."""
