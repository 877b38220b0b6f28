"""Order never matters (METRICS.md, "Time"): the same multiset of events, read in any arrival
order within the allowed lateness, in any batches, with the watermark moving between them as
the marks allow, gives the same closed-window results (upserted by key, revision aside), the
same reply-SLA breaches, the same /metrics and the same account API, once the watermark has
passed everything. Kafka-free, at the keyed-stage level (tests/unit/property/harness.py).

Each example draws one multiset and three arrival orders besides the reference (event-time
order, one event per batch): event-time order in random batches, any permutation, and
permutations within 10-minute blocks, each live or as a backlog, with idle marks advancing
the wall clock between batches. Deterministic (``derandomize``); for a wider search locally:
``SOCIALPULSE_PROPERTY_EXAMPLES=300 SOCIALPULSE_PROPERTY_RANDOM=1``.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.internal.conjecture import engine as hypothesis_engine

from .harness import Ev, Schedule, compare, describe_events, describe_schedule, run
from .strategies import (
    all_events,
    conversion_events,
    engagement_events,
    funnel_events,
    replies_events,
    scenarios,
    sellers_events,
)

EXAMPLES = int(os.environ.get("SOCIALPULSE_PROPERTY_EXAMPLES", "25"))
ORDERS = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("SOCIALPULSE_PROPERTY_RANDOM") != "1",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    print_blob=False, report_multiple_bugs=False,
)
#: seconds a failing test may spend shrinking its example (each try replays four arrival orders;
#: Hypothesis' own limit is five minutes). For a smaller example: SOCIALPULSE_PROPERTY_SHRINK_S=900
SHRINK_S = int(os.environ.get("SOCIALPULSE_PROPERTY_SHRINK_S", "20"))


@pytest.fixture(autouse=True)
def _shrink_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hypothesis reads its shrinking deadline from this module constant when it starts to shrink."""
    monkeypatch.setattr(hypothesis_engine, "MAX_SHRINKING_SECONDS", SHRINK_S)


def assert_order_independent(events: list[Ev], schedules: list[Schedule]) -> None:
    note("events (#index, event time from T0 = 2025-01-06T23:00:00Z, topic, event_id, fields):\n" + describe_events(events))
    reference = run(events, schedules[0])
    for schedule in schedules[1:]:
        lines = compare(reference, run(events, schedule))
        if lines:
            raise AssertionError(
                f"the same {len(events)} events give different outputs in two arrival orders:\n" + "\n".join(lines)
                + "\nevents:\n" + describe_events(events)
                + "\narrival orders:\n  " + describe_schedule(schedules[0]) + "\n  " + describe_schedule(schedule))


@ORDERS
@given(scenarios(engagement_events))
def test_engagement_is_the_same_in_every_arrival_order(scenario: tuple[list[Ev], list[Schedule]]) -> None:
    assert_order_independent(*scenario)


@ORDERS
@given(scenarios(replies_events))
def test_replies_are_the_same_in_every_arrival_order(scenario: tuple[list[Ev], list[Schedule]]) -> None:
    assert_order_independent(*scenario)


@ORDERS
@given(scenarios(conversion_events))
def test_conversion_is_the_same_in_every_arrival_order(scenario: tuple[list[Ev], list[Schedule]]) -> None:
    assert_order_independent(*scenario)


@ORDERS
@given(scenarios(funnel_events))
def test_funnel_is_the_same_in_every_arrival_order(scenario: tuple[list[Ev], list[Schedule]]) -> None:
    assert_order_independent(*scenario)


@ORDERS
@given(scenarios(sellers_events))
def test_sellers_are_the_same_in_every_arrival_order(scenario: tuple[list[Ev], list[Schedule]]) -> None:
    """Posts and their likes, connections, referred orders joined on the shopper's key, conversations
    and the leads they bring: the index, results, /metrics and API in every arrival order."""
    assert_order_independent(*scenario)


@ORDERS
@given(scenarios(all_events))
def test_all_families_together_are_the_same_in_every_arrival_order(scenario: tuple[list[Ev], list[Schedule]]) -> None:
    assert_order_independent(*scenario)


# -- the harness itself ---------------------------------------------------------------------
@settings(ORDERS, max_examples=max(EXAMPLES // 3, 5))
@given(scenarios(all_events))
def test_the_harness_gives_identical_output_for_the_same_order_twice(scenario: tuple[list[Ev], list[Schedule]]) -> None:
    """The harness is deterministic: one arrival order played twice gives the same records in
    the same order (revisions included), the same breaches, /metrics and API."""
    events, schedules = scenario
    for schedule in (schedules[0], schedules[2]):
        first, second = run(events, schedule), run(events, schedule)
        for a, b in zip(first, second, strict=True):
            assert a.raw_results == b.raw_results
            assert (a.results, a.breaches, a.metrics, a.views) == (b.results, b.breaches, b.metrics, b.views)


def _counts(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k.startswith(("socialpulse_events_total", "socialpulse_dead_letters_total"))}


@settings(ORDERS, max_examples=max(EXAMPLES // 3, 5))
@given(scenarios(all_events))
def test_events_are_counted_the_same_in_every_arrival_order(scenario: tuple[list[Ev], list[Schedule]]) -> None:
    """A pure count (socialpulse_events_total by topic and outcome: every event accepted once, every
    re-delivery a duplicate, none late) is the same in every order: the harness feeds each order
    the same records, and the allowed lateness of a day covers two hours of any shuffle."""
    events, schedules = scenario
    counts = [_counts(run(events, s)[1].metrics) for s in schedules]
    accepted = sum(v for k, v in counts[0].items() if 'outcome="accepted"' in k)
    assert accepted == len(events)
    assert all(v == 0 for k, v in counts[0].items() if 'outcome="late"' in k or 'outcome="invalid"' in k)
    for c in counts[1:]:
        assert c == counts[0], "\n" + describe_events(events)


@settings(ORDERS, max_examples=3)
@given(st.data())
def test_a_scenario_reads_as_events_and_orders(data: st.DataObject) -> None:
    """A failing example prints readably: each event on a line, each arrival order as batches and ticks."""
    events, schedules = data.draw(scenarios(replies_events))
    text = describe_events(events)
    assert text.count("\n") == len(events) - 1 and "messages" in text and "conversation_id=" in text
    assert describe_schedule(schedules[0]).startswith("reference (live;")


@ORDERS
@given(scenarios(all_events))
def test_accounts_at_rest_in_the_store_give_the_same_numbers(scenario: tuple[list[Ev], list[Schedule]]) -> None:
    """The cold tier (``HOT_KEYS``): with one account decoded at a time, every other one read
    back from its pages whenever an event, the sweep or the API needs it, every arrival order
    gives what the reference gives with every account decoded."""
    events, schedules = scenario
    note("events:\n" + describe_events(events))
    reference = run(events, schedules[0])
    for schedule in schedules[1:]:
        lines = compare(reference, run(events, schedule, hot=1))
        if lines:
            raise AssertionError("an account at rest gives different outputs:\n" + "\n".join(lines)
                                 + "\narrival order:\n  " + describe_schedule(schedule))
