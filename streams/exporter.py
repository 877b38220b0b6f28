"""The Prometheus registry: pipeline counters plus the families' live gauges.

Family gauges are computed at scrape time from the state of the keys this
worker owns, so they are always fresh and a worker that loses a partition in a
rebalance stops exporting its series at once (summing across workers in
Prometheus then equals the truth, with no stale duplicates).

A worker that owns very many accounts does not export every account's series:
``SeriesPolicy`` keeps the listed and the most active accounts' own series and
folds the others into ``account="other"`` per platform (docs/operations.md, "Many
accounts: which series /metrics exports").
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from schemas.events import INPUT_TOPICS
from schemas.results import OUTCOMES

from .family import Gauge as FamilyGauge
from .family import Sample

__all__ = ["Metrics", "FamilyCollector", "SeriesPolicy", "OTHER"]

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


#: the ``account`` (and ``detail`` labels') value of the folded accounts' aggregate
OTHER = "other"
#: the exported accounts are chosen again at most this often (seconds), so series do not churn
RERANK_S = 300.0
#: at a new choice, an account takes an exported one's place only when this much more active
HYSTERESIS = 1.25


#: how a folded account's sample of a gauge goes into ``account="other"`` (``_Plan.fold``)
_DROP, _SUM, _HISTOGRAM, _MIN, _MAX = range(5)


@dataclass(frozen=True, slots=True)
class _Plan:
    """A per-account gauge: where its samples keep the account, and how they fold."""

    platform: int
    account: int
    detail: tuple[int, ...]  # positions of its ``detail`` labels
    fold: int
    activity: bool
    cumulative: bool  # a counter or histogram: its ``account="other"`` series must never go back

    def other(self, labels: tuple[str, ...]) -> tuple[str, ...]:
        """The labels of the ``account="other"`` series a folded account's sample goes into."""
        folded = list(labels)
        folded[self.account] = OTHER
        for i in self.detail:
            folded[i] = OTHER
        return tuple(folded)


class SeriesPolicy:
    """Which accounts keep their own series on ``/metrics``; the rest are folded.

    Exported one by one: the ``accounts`` listed (keys ``platform|account_id``), and the
    ``top`` most active of the others. Every other account is *folded*: its samples of an
    additive gauge (``streams.family.Gauge.additive``: counts, sums, counters, histograms
    bucket by bucket) are summed per platform under ``account="other"``, and its ``detail``
    labels (agents) become ``"other"`` too, so ``sum by (platform)`` of an additive metric
    stays exact; a gauge with an ``extreme`` exports the folded accounts' min or max there
    (the oldest waiting message); any other gauge of a folded account (ratios, means,
    quantiles, top-N-capped series) is not exported. Samples without ``platform`` and
    ``account`` labels pass untouched. With ``top`` or fewer accounts nothing is folded:
    the output is exactly the samples given.

    Activity ranks the accounts: ``activity()``, if given, maps account keys
    (``platform|account_id``) to a number, larger = more active (e.g. events accepted over
    the last hour; accounts it does not name count 0). Without it, an account's activity is
    the sum of its samples of the gauges marked ``activity`` (events in the trailing
    windows: engagements, clicks, conversations, leads, ...). Ties go by key.

    The choice is stable: it is made again at most every ``rerank_s`` seconds; in between,
    a new account gets a place only if one is free (fewer than ``top`` chosen, or a chosen
    account is no longer owned). At a new choice, an account already exported keeps its
    place unless a newcomer is more than ``hysteresis`` times as active.

    ``other``'s counters and histograms stay counters when its members change (an account
    folded or promoted at a new choice, or moved by a rebalance): they never jump by an
    account's whole history nor fall, so ``rate()`` of ``other`` counts the folded accounts'
    events (``_continue``). Their value is the folded accounts' sum until the first change.

    Use: ``apply(gauges, samples)`` once per scrape, with every stage's gauges by name and
    all their samples; ``exported`` and ``folded`` then count the accounts it saw.
    """

    def __init__(
        self, accounts: Iterable[str] = (), top: int = 100, activity: Callable[[], Mapping[str, float]] | None = None,
        rerank_s: float = RERANK_S, hysteresis: float = HYSTERESIS, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if top < 0:
            raise ValueError("top must be 0 or more")
        self.listed = frozenset(accounts)
        self.top = top
        self.activity = activity
        self.rerank_s = rerank_s
        self.hysteresis = hysteresis
        self.clock = clock
        #: the accounts (not listed) that keep their own series
        self.chosen: set[str] = set()
        self.chosen_at: float | None = None
        #: accounts seen at the last scrape: with their own series, folded
        self.exported = 0
        self.folded = 0
        self._plans: dict[FamilyGauge, _Plan | None] = {}
        #: the folded accounts at the last scrape, and the exported ones' counters and histograms then
        self._members: set[str] = set()
        self._own: dict[str, list[Sample]] = {}
        #: per ``account="other"`` counter or histogram: what it last showed, and what is added to
        #: the folded accounts' sum to show it (by part: a bucket's ``le``, or "" for the value or sum)
        self._last: dict[tuple[str, tuple[str, ...]], dict[str, float]] = {}
        self._offsets: dict[tuple[str, tuple[str, ...]], dict[str, float]] = {}

    @classmethod
    def from_settings(cls, settings: Any, activity: Callable[[], Mapping[str, float]] | None = None) -> SeriesPolicy:
        """METRICS_ACCOUNTS and METRICS_TOP_ACCOUNTS."""
        return cls(settings.metrics_accounts, settings.metrics_top_accounts, activity)

    def plan(self, gauge: FamilyGauge) -> _Plan | None:
        """None: the gauge has no account (its samples pass untouched)."""
        try:
            return self._plans[gauge]
        except KeyError:
            pass
        labels = gauge.labels
        plan = None
        if "platform" in labels and "account" in labels:
            if not gauge.additive:
                fold = {"min": _MIN, "max": _MAX}.get(gauge.extreme or "", _DROP)
            else:
                fold = _HISTOGRAM if gauge.kind == "histogram" else _SUM
            plan = _Plan(labels.index("platform"), labels.index("account"),
                         tuple(labels.index(name) for name in gauge.detail), fold, gauge.activity,
                         gauge.kind in ("counter", "histogram"))
        self._plans[gauge] = plan
        return plan

    def apply(self, gauges: Mapping[str, FamilyGauge], samples: Iterable[Sample]) -> list[Sample]:
        """The samples to export: the exported accounts' as given (in order), then the
        ``account="other"`` aggregates."""
        plans = {name: self.plan(g) for name, g in gauges.items()}
        given = samples if isinstance(samples, list) else list(samples)
        keys: list[str | None] = []  # each sample's account key (None: no account)
        seen: dict[str, float] = {}  # account key -> its activity from the samples
        key, platform, account = "", None, None
        for name, labels, value in given:
            plan = plans.get(name)
            if plan is None:
                keys.append(None)
                continue
            # (a key's samples come one after the other: its key string is built once)
            if labels[plan.platform] is not platform or labels[plan.account] is not account:
                platform, account = labels[plan.platform], labels[plan.account]
                key = f"{platform}|{account}"
                if key not in seen:
                    seen[key] = 0.0
            keys.append(key)
            if plan.activity:
                seen[key] += value  # type: ignore[operator]
        exported = self._choose(seen)
        folded = {key for key in seen if key not in exported}
        self.exported, self.folded = len(seen) - len(folded), len(folded)
        if not folded and not self._last:
            self._members, self._own = folded, {}
            return given
        # the members of account="other" that changed since the last scrape (``_continue``)
        demoted = {key for key in folded if key in self._own}
        joined = {key for key in folded if key not in self._members and key not in demoted}
        promoted = {key for key in self._members if key in exported and key in seen}
        own: dict[str, list[Sample]] = defaultdict(list)  # the exported accounts' counters and histograms
        out: list[Sample] = []
        other: dict[tuple[str, tuple[str, ...]], Any] = {}
        for sample, of in zip(given, keys, strict=True):
            if of is None:
                out.append(sample)
                continue
            name, labels, value = sample
            plan = plans[name]
            assert plan is not None
            if of in exported:
                out.append(sample)
                if plan.cumulative and of not in self.listed:
                    own[of].append(sample)
                continue
            fold = plan.fold
            if fold == _DROP:
                continue
            folded_labels = list(labels)  # (``plan.other``, inline: this runs for most samples)
            folded_labels[plan.account] = OTHER
            for i in plan.detail:
                folded_labels[i] = OTHER
            at = (name, tuple(folded_labels))
            was = other.get(at)
            if fold == _HISTOGRAM:
                buckets, total = value  # type: ignore[misc]
                if was is None:
                    other[at] = was = [{}, 0.0]
                counts = was[0]
                for le, n in buckets:
                    counts[le] = counts.get(le, 0.0) + n
                was[1] += total
            elif was is None:
                other[at] = value
            elif fold == _SUM:
                other[at] = was + value
            elif fold == _MIN:
                other[at] = min(was, value)
            else:
                other[at] = max(was, value)
            if joined and plan.cumulative and of in joined:
                self._shift(at, value, -1.0)
        for key in demoted:  # its own series stopped at what it last exported: go on from there
            for name, labels, value in self._own[key]:
                plan = plans[name]
                assert plan is not None
                self._shift((name, plan.other(labels)), value, -1.0)
        for key in promoted:  # its own series starts now: what it has is no longer other's to count
            for name, labels, value in own[key]:
                plan = plans[name]
                assert plan is not None
                self._shift((name, plan.other(labels)), value, 1.0)
        self._members, self._own = folded, own
        for at in self._last:
            other.setdefault(at, None)
        for (name, labels), value in other.items():
            if gauges[name].kind in ("counter", "histogram"):
                value = self._continue((name, labels), value)
            out.append((name, labels, value))
        return out

    def _shift(self, at: tuple[str, tuple[str, ...]], value: Any, sign: float) -> None:
        """Move an ``account="other"`` counter's offset by ``sign`` × a sample's value (only
        for a series already exported: a new series may start from any value)."""
        if at not in self._last:
            return
        offset = self._offsets.setdefault(at, {})
        for part, v in _parts(value).items():
            offset[part] = offset.get(part, 0.0) + sign * v

    def _continue(self, at: tuple[str, tuple[str, ...]], raw: Any) -> Any:
        """An ``account="other"`` counter or histogram as exported: the folded accounts' sum
        plus its offset, never less than what it last showed.

        The sum alone would jump when an account is folded (demoted, or moved here by a
        rebalance: its whole count at once) and fall when one leaves (promoted, moved away),
        which ``rate()`` reads as a reset, counting the whole series again. So an account that
        joins brings only what it counts from then on (the offset takes off what it had, or
        what its own series last showed), one promoted leaves what it had counted (its own
        series starts from there), and any other fall (an account moved away, a correction)
        is held flat. ``rate()`` and ``increase()`` of ``other`` then count the folded
        accounts' events; its value is their sum until its membership first changes.
        """
        value = _parts(raw) if raw is not None else {}
        offset = self._offsets.get(at, {})
        last = self._last.get(at, {})
        shown = {part: value.get(part, 0.0) + offset.get(part, 0.0) for part in value.keys() | offset.keys() | last.keys()}
        for part, was in last.items():
            if shown[part] < was:
                offset[part] = offset.get(part, 0.0) + was - shown[part]
                shown[part] = was
        if offset:
            self._offsets[at] = offset
        self._last[at] = shown
        buckets = sorted(((part, v) for part, v in shown.items() if part), key=lambda kv: float(kv[0]))
        return (buckets, shown[""]) if buckets else shown[""]

    def _choose(self, seen: Mapping[str, float]) -> frozenset[str] | set[str]:
        """The accounts of ``seen`` (with their activity from the samples) that keep their series."""
        candidates = [key for key in seen if key not in self.listed]
        if len(candidates) <= self.top:  # room for all
            self.chosen = set(candidates)
            return self.listed | self.chosen
        self.chosen.intersection_update(candidates)  # an account no longer owned leaves its place
        now = self.clock()
        if self.chosen_at is None or now - self.chosen_at >= self.rerank_s:
            self.chosen_at = now
            self._rank(candidates, self._activity(seen))
        else:
            free = self.top - len(self.chosen)
            newcomers = [key for key in candidates if key not in self.chosen]
            if free > 0 and newcomers:
                if len(newcomers) > free:
                    act = self._activity(seen)
                    newcomers.sort(key=lambda k: (-act.get(k, 0.0), k))
                self.chosen.update(newcomers[:free])
        return self.listed | self.chosen

    def _activity(self, seen: Mapping[str, float]) -> Mapping[str, float]:
        return self.activity() if self.activity is not None else seen

    def _rank(self, candidates: list[str], act: Mapping[str, float]) -> None:
        """Choose anew: the ``top`` most active, except that an exported account keeps its
        place against a newcomer not clearly (``hysteresis``) more active."""
        ranked = sorted(candidates, key=lambda k: (-act.get(k, 0.0), k))
        keep = set(ranked[:self.top])
        dropped = [k for k in ranked[self.top:] if k in self.chosen]  # most active first
        newcomers = [k for k in reversed(ranked[:self.top]) if k not in self.chosen]  # least active first
        for old, new in zip(dropped, newcomers, strict=False):
            if act.get(new, 0.0) > act.get(old, 0.0) * self.hysteresis:
                break  # (and every later pair: newcomers only get more active, the old ones less)
            keep.discard(new)
            keep.add(old)
        self.chosen = keep


def _parts(value: Any) -> dict[str, float]:
    """A counter's value or a histogram's (raw, or folded ``[counts by le, sum]``) by part:
    each bucket's ``le``, and "" for the value or the sum."""
    if isinstance(value, list):
        return {**value[0], "": value[1]}
    if isinstance(value, tuple):
        buckets, total = value
        return {**dict(buckets), "": total}
    return {"": float(value)}


class FamilyCollector(Collector):
    """Yields every family metric from its sources at scrape time, through ``policy``
    (``SeriesPolicy``) if given, with ``socialpulse_metrics_accounts`` telling what it did."""

    def __init__(self, gauges: Iterable[FamilyGauge], source: Callable[[], Iterable[Sample]],
                 policy: SeriesPolicy | None = None) -> None:
        self.gauges: dict[str, FamilyGauge] = {}
        self.sources: list[Callable[[], Iterable[Sample]]] = []
        self.policy = policy
        self.add(gauges, source)

    def add(self, gauges: Iterable[FamilyGauge], source: Callable[[], Iterable[Sample]]) -> None:
        """Another stage's gauges and samples (one collector, so one policy sees every account)."""
        for g in gauges:
            if g.name in self.gauges:
                raise ValueError(f"gauge {g.name} declared twice")
            self.gauges[g.name] = g
        self.sources.append(source)

    def _accounts(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "socialpulse_metrics_accounts", "Accounts with per-account series on this worker at the last scrape: "
            "exported with their own (METRICS_ACCOUNTS and the METRICS_TOP_ACCOUNTS most active), or folded into "
            "account=\"other\".", labels=["state"])

    def describe(self) -> Iterator[Metric]:
        for g in self.gauges.values():
            yield _family(g)
        if self.policy is not None:
            yield self._accounts()

    def collect(self) -> Iterator[Metric]:
        samples: Iterable[Sample] = (sample for source in self.sources for sample in source())
        if self.policy is not None:
            samples = self.policy.apply(self.gauges, samples)
        grouped: dict[str, list[tuple[tuple[str, ...], Any]]] = defaultdict(list)
        for name, labels, value in samples:
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
        if self.policy is not None:
            fam = self._accounts()
            fam.add_metric(["exported"], self.policy.exported)
            fam.add_metric(["folded"], self.policy.folded)
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
    """One registry per app, so tests can run several apps in one process. ``series``: which
    accounts keep their own series (default: ``SeriesPolicy()``, the settings' defaults)."""

    def __init__(self, series: SeriesPolicy | None = None) -> None:
        self.series = series if series is not None else SeriesPolicy()
        #: the families' per-key gauges, every stage's in one collector (``add_families``)
        self.families: FamilyCollector | None = None
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
        self.changelog_records = Counter(
            "socialpulse_changelog_records", "Records written to the stage's changelog (pages, markers, ids, tombstones).",
            ["stage"], registry=r,
        )
        self.changelog_bytes = Counter(
            "socialpulse_changelog_bytes", "Bytes of record values written to the stage's changelog.", ["stage"], registry=r,
        )
        self.changelog_record_max = Gauge(
            "socialpulse_changelog_record_max_bytes",
            "The largest changelog record value this worker wrote, by stage (bounded: streams/pages.py RECORD_MAX).",
            ["stage"], registry=r,
        )
        self.record_max = Gauge(
            "socialpulse_record_max_bytes",
            "The largest record (key and value) this worker wrote to a topic other than its changelogs, by bare topic "
            "name: socialpulse.by-account, .by-actor, .results, .reply-breaches, .dlq (bounded: streams/pages.py RECORD_MAX).",
            ["topic"], registry=r,
        )
        for topic in INPUT_TOPICS:
            for outcome in OUTCOMES:
                self.events.labels(topic, outcome)

    def add_families(self, gauges: Iterable[FamilyGauge], source: Callable[[], Iterable[Sample]]) -> None:
        """A stage's per-key gauges and their samples at scrape time, through ``series``."""
        if self.families is None:
            self.families = FamilyCollector(gauges, source, self.series)
        else:  # registered again, so the registry checks the new names against every other metric's
            self.registry.unregister(self.families)
            self.families.add(gauges, source)
        self.registry.register(self.families)

    def use_series(self, series: SeriesPolicy) -> None:
        """Export the families' series through ``series`` from now on (e.g. from the settings)."""
        self.series = series
        if self.families is not None:
            self.families.policy = series

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
