"""The exporter: the batch histogram exposes exactly what prometheus_client's Histogram would;
the series policy keeps the listed and busiest accounts' series and folds the rest into
``account="other"`` without changing any ``sum by (platform)`` of an additive metric."""

import random
import re
import shutil
import subprocess
import time
from collections import defaultdict

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams.exporter import LAG_BUCKETS, OTHER, BatchHistogram, FamilyCollector, Metrics, SeriesPolicy
from streams.families import make_stages
from streams.family import Gauge as FamilyGauge
from streams.ingest import partition_for
from streams.keyed import Forwarded, StageOutput
from streams.settings import Settings
from streams.windows import Mark, WindowSpec


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


# -- which series /metrics exports when a worker owns many accounts (SeriesPolicy) ---------------

MIN = 60_000
PLATFORMS = ("instagram", "x", "facebook", "linkedin")


def account_stage(n: int, busy: dict[int, int] | None = None):
    """The account stage (every account family, default settings) holding ``n`` accounts of every
    family's traffic, watermark at the wall clock. Account ``i`` gets ``busy.get(i, 1 + i % 3)``
    likes; some wait for a reply, some did outreach, agents and currencies vary."""
    settings = Settings()
    stage = make_stages(settings, WindowSpec.from_settings(settings))["account"]
    now = int(time.time() * 1000)
    t0 = now - now % MIN - 20 * MIN
    rng = random.Random(n)
    items: dict[int, list[Forwarded]] = defaultdict(list)
    busy = busy or {}

    def send(topic: str, key: str, i: int, fields: dict) -> None:
        platform, account = key.split("|")
        offset = sum(map(len, items.values()))
        event = {"platform": platform, "account_id": account, "event_id": f"{key}-{offset}",
                 "ts": t0 + rng.randrange(15 * MIN)} | fields
        items[partition_for(key, settings.partitions)].append(Forwarded(topic, topic, 0, offset, key, event, True))

    for i in range(n):
        key = f"{PLATFORMS[i % len(PLATFORMS)]}|acct-{i}"
        for j in range(busy.get(i, 1 + i % 3)):
            send("likes", key, i, {"post_id": f"p{j % 2}", "actor_id": f"u{j}", "kind": "like"})
        send("impressions", key, i, {"post_id": "p0", "count": 50 + i, "paid": i % 2 == 0})
        send("clicks", key, i, {"actor_id": "u1", "post_id": "p0", "campaign_id": f"c{i % 4}"})
        send("audience", key, i, {"followers": 1000 + i})
        send("spend", key, i, {"campaign_id": f"c{i % 4}", "amount": "12.5", "currency": ("USD", "EUR")[i % 2]})
        send("leads", key, i, {"actor_id": "u1", "kind": "form"})
        t = t0 + rng.randrange(10 * MIN)
        author = {"author_id": "me", "agent_id": f"agent-{i % 3}"}
        if i % 5 == 0:  # outreach: the seller wrote first
            send("messages", key, i, {"ts": t, "conversation_id": f"o{i}", "direction": "outbound"} | author)
        send("messages", key, i, {"ts": t, "conversation_id": f"c{i}", "direction": "inbound", "author_id": "u1"})
        if i % 4:  # the others still wait for a reply
            send("messages", key, i, {"ts": t + (i % 20) * 30_000, "conversation_id": f"c{i}",
                                      "direction": "outbound"} | author)
    out = StageOutput()
    for partition, batch in items.items():
        stage.process(partition, batch, out)
    assert not out.rejected
    for partition in range(settings.partitions):
        stage.mark(partition, {"likes/0": Mark(False, 0, True, int(time.time() * 1000))})
    stage.tick(StageOutput(), ["likes/0"])
    return stage


def gauges_of(stage) -> list[FamilyGauge]:
    return [g for fam in stage.families for g in fam.gauges]


def exposition(*collectors) -> str:
    registry = CollectorRegistry()
    for c in collectors:
        registry.register(c)
    return generate_latest(registry).decode()


def promtool_check(text: str) -> None:
    if shutil.which("promtool") is None:
        pytest.skip("Debian's prometheus (promtool) is not installed")
    result = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_with_tens_of_accounts_the_families_series_are_exactly_todays():
    stage = account_stage(40)
    today = exposition(FamilyCollector(gauges_of(stage), stage.samples))
    policy = SeriesPolicy.from_settings(Settings())
    now = exposition(FamilyCollector(gauges_of(stage), stage.samples, policy)).splitlines()
    assert [line for line in now if "socialpulse_metrics_accounts" not in line] == today.splitlines()
    assert 'socialpulse_metrics_accounts{state="exported"} 40.0' in now
    assert 'socialpulse_metrics_accounts{state="folded"} 0.0' in now
    assert 'account="other"' not in today


def _fold_key(g: FamilyGauge, labels: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(OTHER if name == "account" or name in g.detail else v for name, v in zip(g.labels, labels, strict=True))


def _by_platform(g: FamilyGauge, labels: tuple[str, ...]) -> tuple[str, ...]:
    """What ``sum by`` every label but the account's (and its detail labels) keeps."""
    return tuple(v for name, v in zip(g.labels, labels, strict=True) if name != "account" and name not in g.detail)


def _add(into: dict, at: tuple, kind: str, value) -> None:
    if kind == "histogram":
        buckets, total = value
        counts, sums = into.setdefault(at, ({}, [0.0]))
        for le, n in buckets:
            counts[le] = counts.get(le, 0.0) + n
        sums[0] += total
    else:
        into[at] = into.get(at, 0.0) + value


@pytest.fixture(scope="module")
def thousand():
    """1,000 accounts; the five busiest are acct-100..104; two more are listed."""
    stage = account_stage(1000, busy={100 + k: 40 + k for k in range(5)})
    listed = ("instagram|acct-8", "x|acct-1")  # (acct-8 is on instagram: 8 % 4 == 0)
    return stage, listed


def test_with_many_accounts_the_busiest_and_the_listed_keep_their_series_and_the_rest_sum_into_other(thousand):
    stage, listed = thousand
    gauges = {g.name: g for g in gauges_of(stage)}
    raw = list(stage.samples())
    policy = SeriesPolicy(listed, top=5)
    out = policy.apply(gauges, raw)

    def account(sample):
        g = gauges[sample[0]]
        return sample[1][g.labels.index("platform")] + "|" + sample[1][g.labels.index("account")] if "account" in g.labels else None

    busiest = {f"{PLATFORMS[i % 4]}|acct-{i}" for i in range(100, 105)}
    own = {account(s) for s in out} - {None} - {f"{p}|{OTHER}" for p in PLATFORMS}
    assert own == busiest | set(listed)
    assert (policy.exported, policy.folded) == (7, 993)
    # the exported accounts' samples are exactly theirs, in order
    assert [s for s in out if account(s) in own] == [s for s in raw if account(s) in own]

    # account="other": per platform and remaining labels, the sum over the folded accounts (histograms
    # bucket by bucket); the oldest wait is their minimum; nothing else of theirs is exported
    expected: dict = {}
    for s in raw:
        g = gauges[s[0]]
        if "account" not in g.labels or account(s) in own:
            continue
        at = (s[0], _fold_key(g, s[1]))
        if g.additive:
            _add(expected, at, g.kind, s[2])
        elif g.extreme == "min":
            expected[at] = min(expected.get(at, s[2]), s[2])
    got = {(s[0], s[1]): s[2] for s in out if account(s) is not None and account(s) not in own}
    assert got.keys() == expected.keys()
    names = {name for name, _ in got}
    assert {"socialpulse_engagements", "socialpulse_reply_latency_seconds", "socialpulse_reply_sla_total",
            "socialpulse_agent_reply_latency_seconds", "socialpulse_oldest_awaiting_reply_timestamp_seconds",
            "socialpulse_outreach_conversations_total", "socialpulse_spend"} <= names
    assert not {g.name for g in gauges.values() if not g.additive and g.extreme is None} & names
    for at, value in expected.items():
        if gauges[at[0]].kind == "histogram":
            counts, total = value
            buckets = got[at][0]
            assert [le for le, _ in buckets] == [le for le, _ in raw_buckets(raw, at[0])]
            assert dict(buckets) == pytest.approx(counts) and got[at][1] == pytest.approx(total[0])
        else:
            assert got[at] == pytest.approx(value), at
    assert all(label == OTHER for (name, labels) in got for i, label in enumerate(labels)
               if gauges[name].labels[i] in gauges[name].detail)

    # so ``sum by`` every other label (``sum by (platform)`` and finer) of an additive metric is unchanged
    before: dict = {}
    after: dict = {}
    for samples, into in ((raw, before), (out, after)):
        for s in samples:
            g = gauges[s[0]]
            if "account" in g.labels and g.additive:
                _add(into, (s[0], _by_platform(g, s[1])), g.kind, s[2])
    assert before.keys() == after.keys()
    for at, value in before.items():
        if gauges[at[0]].kind == "histogram":
            assert after[at][0] == pytest.approx(value[0]) and after[at][1] == pytest.approx(value[1])
        else:
            assert after[at] == pytest.approx(value), at


def raw_buckets(raw, name):
    return next(s[2][0] for s in raw if s[0] == name)


def test_the_folded_exposition_passes_promtool_and_says_how_many_accounts_were_folded(thousand):
    stage, listed = thousand
    metrics = Metrics(SeriesPolicy(listed, top=5))
    metrics.add_families(gauges_of(stage), stage.samples)
    text = metrics.exposition().decode()
    promtool_check(text)
    assert 'socialpulse_metrics_accounts{state="exported"} 7.0' in text
    assert 'socialpulse_metrics_accounts{state="folded"} 993.0' in text
    assert 'socialpulse_engagements{account="other",platform="instagram",window="1h"}' in text
    assert 'account="acct-500"' not in text and 'account="acct-104"' in text
    gauges = {g.name: g for g in gauges_of(stage)}
    for family in text_string_to_metric_families(text):
        g = gauges.get(family.name) or gauges.get(family.name + "_total")
        if any(s.labels.get("account") == OTHER for s in family.samples):
            assert g is not None and (g.additive or g.extreme), family.name


def test_histograms_of_folded_accounts_sum_bucket_by_bucket():
    g = FamilyGauge("h_seconds", "h", ("platform", "account"), "histogram")
    one = ([("1.0", 1.0), ("10.0", 2.0), ("+Inf", 3.0)], 12.0)
    two = ([("1.0", 0.0), ("10.0", 4.0), ("+Inf", 4.0)], 30.0)
    policy = SeriesPolicy(top=0)
    out = policy.apply({g.name: g}, [("h_seconds", ("x", "a"), one), ("h_seconds", ("x", "b"), two)])
    assert out == [("h_seconds", ("x", OTHER), ([("1.0", 1.0), ("10.0", 6.0), ("+Inf", 7.0)], 42.0))]


# the policy on its own: small synthetic samples, a clock in our hands

EVENTS = FamilyGauge("socialpulse_events_in_window", "events", ("platform", "account", "window"), activity=True)
RATE = FamilyGauge("socialpulse_some_rate", "a ratio", ("platform", "account", "window"), additive=False)
WIDE = FamilyGauge("socialpulse_backlog", "no account", ("stage",))
GAUGES = {g.name: g for g in (EVENTS, RATE, WIDE)}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def scrape(policy: SeriesPolicy, activity: dict[str, float]) -> set[str]:
    """The accounts with their own series, given each account's events."""
    samples = [("socialpulse_backlog", ("account",), 3.0)]
    for key, n in activity.items():
        platform, account = key.split("|")
        samples += [(EVENTS.name, (platform, account, "1h"), n), (RATE.name, (platform, account, "1h"), 0.5)]
    out = policy.apply(GAUGES, samples)
    assert out[0] == ("socialpulse_backlog", ("account",), 3.0)  # no account label: untouched
    return {f"{s[1][0]}|{s[1][1]}" for s in out if s[0] == RATE.name}


def test_the_choice_holds_between_rankings_and_a_newcomer_must_be_clearly_busier():
    clock = Clock()
    policy = SeriesPolicy(top=2, clock=clock)
    assert scrape(policy, {"x|a": 10, "x|b": 9, "x|c": 1}) == {"x|a", "x|b"}
    clock.now += 60  # before the next ranking: c's burst changes nothing yet
    assert scrape(policy, {"x|a": 10, "x|b": 9, "x|c": 100}) == {"x|a", "x|b"}
    clock.now += 300
    assert scrape(policy, {"x|a": 10, "x|b": 9, "x|c": 100}) == {"x|a", "x|c"}
    clock.now += 300  # b a little busier than c: not enough (hysteresis 1.25)
    assert scrape(policy, {"x|a": 10, "x|b": 12, "x|c": 10}) == {"x|a", "x|c"}
    clock.now += 300
    assert scrape(policy, {"x|a": 10, "x|b": 13, "x|c": 10}) == {"x|a", "x|b"}


def test_a_place_freed_by_an_account_no_longer_owned_goes_to_a_newcomer_at_once():
    clock = Clock()
    policy = SeriesPolicy(top=2, clock=clock)
    assert scrape(policy, {"x|a": 10, "x|b": 9, "x|c": 1}) == {"x|a", "x|b"}
    clock.now += 1
    assert scrape(policy, {"x|b": 9, "x|c": 1, "x|d": 5}) == {"x|b", "x|d"}  # a moved to another worker
    assert (policy.exported, policy.folded) == (2, 1)


def test_listed_accounts_always_keep_their_series_beside_the_top_ones():
    policy = SeriesPolicy(["x|quiet"], top=1, clock=Clock())
    assert scrape(policy, {"x|quiet": 0, "x|a": 10, "x|b": 9}) == {"x|quiet", "x|a"}


def test_activity_given_by_the_stage_ranks_instead_of_the_samples():
    policy = SeriesPolicy(top=1, activity=lambda: {"x|b": 500.0}, clock=Clock())
    assert scrape(policy, {"x|a": 10, "x|b": 0}) == {"x|b"}


def test_a_gauge_declares_a_consistent_folding():
    with pytest.raises(ValueError, match="summary"):
        FamilyGauge("q_seconds", "quantiles", ("platform", "account"), "summary")
    with pytest.raises(ValueError, match="extreme"):
        FamilyGauge("oldest", "min", ("platform", "account"), extreme="min")
    with pytest.raises(ValueError, match="detail"):
        FamilyGauge("per_agent", "agents", ("platform", "account"), detail=("agent",))


def test_every_ratio_mean_quantile_or_capped_gauge_is_declared_non_additive():
    """The families' classification, checked against what each gauge's help says it is."""
    words = re.compile(r" / |\b(ratio|rate|fraction|share|mean|per order|capped|quantiles|oldest)\b")
    names = re.compile(r"_rate(_|$)|_share$|average_|cost_per_|return_on_")
    for stage in make_stages(Settings(), WindowSpec.from_settings(Settings())).values():
        for g in gauges_of(stage):
            says = g.kind == "summary" or bool(words.search(g.help.lower()) or names.search(g.name))
            if g.kind in ("histogram", "counter"):
                assert g.additive, g.name
            else:
                assert g.additive is not says, g.name


def test_metrics_puts_every_stage_in_one_collector_and_refuses_a_name_twice():
    metrics = Metrics(SeriesPolicy(top=0))
    metrics.add_families([EVENTS], lambda: [(EVENTS.name, ("x", "a", "1h"), 2.0)])
    metrics.add_families([RATE], lambda: [(RATE.name, ("x", "a", "1h"), 0.5)])
    text = metrics.exposition().decode()
    assert 'socialpulse_events_in_window{account="other",platform="x",window="1h"} 2.0' in text
    assert "socialpulse_some_rate{" not in text and 'socialpulse_metrics_accounts{state="folded"} 1.0' in text
    with pytest.raises(ValueError, match="twice"):
        metrics.add_families([RATE], list)


SLA = FamilyGauge("socialpulse_waits_total", "waits judged", ("platform", "account"), "counter")
LATENCY = FamilyGauge("socialpulse_wait_seconds", "waits", ("platform", "account"), "histogram")


def cumulative(policy: SeriesPolicy, accounts: dict[str, tuple[float, float]]) -> tuple[float, list, set[str]]:
    """One scrape of accounts {key: (events now, waits so far)}: account="other"'s counter, its
    histogram's buckets, and the accounts with their own series."""
    samples = []
    for key, (events, waits) in accounts.items():
        platform, account = key.split("|")
        samples += [(EVENTS.name, (platform, account, "1h"), events), (SLA.name, (platform, account), waits),
                    (LATENCY.name, (platform, account), ([("60.0", waits / 2), ("+Inf", waits)], waits * 30))]
    out = policy.apply({g.name: g for g in (EVENTS, SLA, LATENCY)}, samples)
    other = {s[0]: s[2] for s in out if s[1][1] == OTHER}
    own = {f"{s[1][0]}|{s[1][1]}" for s in out if s[0] == SLA.name and s[1][1] != OTHER}
    return other[SLA.name], other[LATENCY.name][0], own


def test_other_counters_count_the_folded_accounts_events_and_never_jump_or_fall_when_members_change():
    clock = Clock()
    policy = SeriesPolicy(top=1, clock=clock)
    # first: other is the folded accounts' sum
    assert cumulative(policy, {"x|a": (10, 100), "x|b": (5, 50), "x|c": (1, 20)}) == (
        70, [("60.0", 35), ("+Inf", 70)], {"x|a"})
    # b is now clearly busier: promoted; a demoted. Other counts b's 5 and c's 2 new waits, and
    # a's 10 since its own series last showed 100: all 17 waits are counted exactly once
    clock.now += 300
    assert cumulative(policy, {"x|a": (10, 110), "x|b": (20, 55), "x|c": (1, 22)}) == (
        87, [("60.0", 43.5), ("+Inf", 87)], {"x|b"})
    # a moves to another worker: other does not fall (rate() would count that as a reset)
    clock.now += 1
    waits, buckets, own = cumulative(policy, {"x|b": (20, 60), "x|c": (1, 25)})
    assert (waits, buckets, own) == (87, [("60.0", 43.5), ("+Inf", 87)], {"x|b"})
    # an account with a long history moves here, folded: only its new waits count
    clock.now += 1
    waits, buckets, own = cumulative(policy, {"x|b": (20, 60), "x|c": (1, 27), "x|d": (0, 1000)})
    assert (waits, own) == (89, {"x|b"})
    clock.now += 1
    assert cumulative(policy, {"x|b": (20, 60), "x|c": (1, 27), "x|d": (0, 1004)})[0] == 93
