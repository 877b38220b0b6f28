"""The Prometheus registry: pipeline counters plus the families' live gauges.

Family gauges are computed at scrape time from the state of the keys this
worker owns, so they are always fresh and a worker that loses a partition in a
rebalance stops exporting its series at once (summing across workers in
Prometheus then equals the truth, with no stale duplicates).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from schemas.events import INPUT_TOPICS
from schemas.results import OUTCOMES

from .family import Gauge as FamilyGauge
from .family import Sample

__all__ = ["Metrics", "FamilyCollector"]

# ``*_created`` series double the exposition and no board or rule reads them.
disable_created_metrics()

#: Event-time lag buckets (arrival - ts), seconds.
LAG_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 15, 60, 300, 900, 3600, 86400)


def _family(g: FamilyGauge) -> Any:
    if g.kind == "counter":
        return CounterMetricFamily(g.name.removesuffix("_total"), g.help, labels=list(g.labels))
    if g.kind == "histogram":
        return HistogramMetricFamily(g.name, g.help, labels=list(g.labels))
    if g.kind == "summary":
        return Metric(g.name, g.help, "summary")
    return GaugeMetricFamily(g.name, g.help, labels=list(g.labels))


class FamilyCollector(Collector):
    """Yields every family metric from ``source()`` at scrape time."""

    def __init__(self, gauges: Iterable[FamilyGauge], source: Callable[[], Iterable[Sample]]) -> None:
        self.gauges = {g.name: g for g in gauges}
        self.source = source

    def describe(self) -> Iterator[Metric]:
        for g in self.gauges.values():
            yield _family(g)

    def collect(self) -> Iterator[Metric]:
        grouped: dict[str, list[tuple[tuple[str, ...], Any]]] = defaultdict(list)
        for name, labels, value in self.source():
            grouped[name].append((labels, value))
        for name, g in self.gauges.items():
            fam = _family(g)
            for labels, value in grouped.get(name, ()):
                if g.kind == "histogram":
                    buckets, total = value
                    fam.add_metric(list(labels), buckets, total)
                elif g.kind == "summary":  # quantiles of a trailing window, with its count and sum
                    quantiles, count, total = value
                    base = dict(zip(g.labels, labels, strict=True))
                    for q, v in quantiles:
                        fam.add_sample(g.name, base | {"quantile": q}, v)
                    fam.add_sample(g.name + "_count", base, count)
                    fam.add_sample(g.name + "_sum", base, total)
                else:
                    fam.add_metric(list(labels), value)
            yield fam


class BatchHistogram(Collector):
    """A labelled histogram fed a whole batch at a time.

    ``prometheus_client.Histogram.observe`` takes a lock and searches the buckets for
    every value: about 7 us per event on the ingest path, 10% of it. Here a batch is
    counted into plain integers (``bisect`` per value, one dict lookup per batch) and
    exposed at scrape time as an ordinary cumulative histogram.
    """

    def __init__(self, name: str, doc: str, label: str, buckets: tuple[float, ...]) -> None:
        self.name, self.doc, self.label = name, doc, label
        self.bounds = list(buckets)
        self.series: dict[str, tuple[list[int], list[float]]] = {}  # label -> (counts per bucket + inf, [sum])

    def observe_many(self, value: str, values: Iterable[float]) -> None:
        series = self.series.get(value)
        if series is None:
            series = self.series[value] = ([0] * (len(self.bounds) + 1), [0.0])
        counts, total = series
        bounds, where = self.bounds, bisect.bisect_left
        for v in values:
            counts[where(bounds, v)] += 1
            total[0] += v

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.doc, labels=[self.label])

    def collect(self) -> Iterator[Metric]:
        fam = HistogramMetricFamily(self.name, self.doc, labels=[self.label])
        for value, (counts, total) in list(self.series.items()):
            running, buckets = 0, []
            for bound, n in zip([*self.bounds, float("inf")], counts, strict=True):
                running += n
                buckets.append(("+Inf" if bound == float("inf") else floatToGoString(bound), running))
            fam.add_metric([value], buckets, total[0])
        yield fam


class Metrics:
    """One registry per app, so tests can run several apps in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events = Counter(
            "socialpulse_events", "Input events by topic and outcome (accepted, invalid, duplicate, late).",
            ["topic", "outcome"], registry=r,
        )
        self.dead_letters = Counter(
            "socialpulse_dead_letters", "Records written to the dead-letter topic, by source topic and reason.",
            ["topic", "reason"], registry=r,
        )
        self.publish_errors = Counter(
            "socialpulse_publish_errors", "Failed writes to an output topic.", ["topic"], registry=r,
        )
        self.results = Counter(
            "socialpulse_results_published", "Closed-window results published, by family.", ["family"], registry=r,
        )
        self.corrections = Counter(
            "socialpulse_results_corrected", "Closed windows published again after late data changed them (next revision).",
            ["stream"], registry=r,
        )
        self.closed_windows = Gauge(
            "socialpulse_closed_windows_kept", "Closed windows kept for corrections (records of one window of a partition).",
            ["stream"], registry=r,
        )
        self.input_behind = Gauge(
            "socialpulse_inputs_behind", "Assigned input partitions with unread records (they hold the watermark).",
            registry=r,
        )
        self.watermark = Gauge(
            "socialpulse_watermark_timestamp_seconds", "Event-time watermark of each owned keyed partition.",
            ["stream", "partition"], registry=r,
        )
        self.consumer_lag = Gauge(
            "socialpulse_consumer_lag_messages", "Messages behind the end of each assigned partition.",
            ["topic", "partition"], registry=r,
        )
        self.event_lag = BatchHistogram(
            "socialpulse_event_time_lag_seconds", "Arrival time minus event time of accepted events.",
            "topic", LAG_BUCKETS,
        )
        r.register(self.event_lag)
        self.batch_seconds = Histogram(
            "socialpulse_batch_seconds", "Time to process one batch, by stage.", ["stage"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=r,
        )
        #: process-wide counters the families declare (``Family.counters``), by name: ``Tally`` outputs add to them
        self.tallies: dict[str, Any] = {}
        self.rebalances = Counter("socialpulse_rebalances", "Partition rebalances seen by this worker.", registry=r)
        self.ready = Gauge("socialpulse_ready", "1 when recovered and consuming.", registry=r)
        self.broker_up = Gauge("socialpulse_broker_up", "1 while a bootstrap broker answers a TCP connect.", registry=r)
        self.state_keys = Gauge(
            "socialpulse_state_keys", "Keys held in the keyed stage's state (owned partitions).", ["stage"], registry=r,
        )
        self.dedup_ids = Gauge(
            "socialpulse_dedup_ids", "Event ids held for de-duplication (the horizon), by stage.", ["stage"], registry=r,
        )
        self.state_bytes = Gauge(
            "socialpulse_state_bytes", "Encoded size of the keyed stage's state (as written to the changelog).",
            ["stage"], registry=r,
        )
        for topic in INPUT_TOPICS:
            for outcome in OUTCOMES:
                self.events.labels(topic, outcome)

    def add_families(self, gauges: Iterable[FamilyGauge], source: Callable[[], Iterable[Sample]]) -> None:
        self.registry.register(FamilyCollector(gauges, source))

    def add_counters(self, counters: Iterable[FamilyGauge]) -> None:
        """A family's process-wide counters (``kind`` counter), once each."""
        for c in counters:
            if c.name not in self.tallies:
                self.tallies[c.name] = Counter(c.name, c.help, list(c.labels), registry=self.registry)

    def add_constant(self, gauge: FamilyGauge, value: float) -> None:
        """A label-less gauge whose value the settings fix (e.g. the reply SLO)."""
        Gauge(gauge.name, gauge.help, registry=self.registry).set(value)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
