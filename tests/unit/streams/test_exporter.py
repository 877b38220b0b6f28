"""The batch histogram exposes exactly what prometheus_client's Histogram would."""

import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streams.exporter import LAG_BUCKETS, BatchHistogram


def test_batch_histogram_matches_prometheus_client_histogram():
    rng = random.Random(3)
    values = [rng.choice([0.0, 0.1, 1, 86400, 10**6]) if rng.random() < 0.2 else rng.expovariate(0.01) for _ in range(5000)]
    ref_registry, ours_registry = CollectorRegistry(), CollectorRegistry()
    ref = Histogram("lag_seconds", "doc", ["topic"], buckets=LAG_BUCKETS, registry=ref_registry)
    ours = BatchHistogram("lag_seconds", "doc", "topic", LAG_BUCKETS)
    ours_registry.register(ours)
    for topic in ("likes", "clicks"):
        for v in values:
            ref.labels(topic).observe(v)
        ours.observe_many(topic, values[:2500])
        ours.observe_many(topic, values[2500:])
    strip = lambda text: sorted(line for line in text.decode().splitlines() if not line.startswith(("#", "lag_seconds_created")))  # noqa: E731
    assert strip(generate_latest(ours_registry)) == strip(generate_latest(ref_registry))
