"""A decision due earlier but taken late (the watermark jumped more than the allowed lateness at
once, after an outage): the record a family derived from it reaches its stage older than the
allowed lateness. It is applied, not dead-lettered: windows past their lateness ignore it,
cumulative totals count it (a checkout abandoned an hour after its start still counts)."""

import time

from schemas.events import SHOP_KEY
from streams.funnel import Funnel
from streams.keyed import Forwarded, KeyedStage, StageOutput
from streams.windows import Mark, WindowSpec

MIN = 60_000
DAY = 86_400_000
SPEC = WindowSpec(bucket_ms=MIN, trailing_ms=(5 * MIN,), closed_ms=(MIN,), grace_ms=2 * MIN, allowed_ms=DAY)


def outcome(i: int, ts: int, what: str) -> Forwarded:
    record = {"event_id": f"k~{what}#{i}", "ts": ts, "checkout_id": "k", "source": "facebook", "outcome": what}
    return Forwarded("checkout_outcomes", "checkout_outcomes", -1, -1, SHOP_KEY, record, False)


def test_an_outcome_decided_after_a_jump_past_the_lateness_counts_in_the_totals_not_as_late():
    now = int(time.time() * 1000)
    start = now - now % MIN - 3 * DAY
    s = KeyedStage("account", SPEC, [Funnel(SPEC)], dedup_horizon_ms=10 * MIN, idle_ms=0)
    s.mark(0, {"likes/0": Mark(False, 0, False, now)})
    s.tick(StageOutput(), ["likes/0"])
    s.process(0, [outcome(1, start, "started")], StageOutput())
    s.mark(0, {"likes/0": Mark(False, 0, True, now)})  # quiet: the watermark jumps to the wall clock
    s.tick(StageOutput(), ["likes/0"])
    late = StageOutput()
    s.process(0, [outcome(2, start, "abandoned")], late)  # stamped at its start, three days back
    assert late.rejected == []
    samples = {(name, labels): v for name, labels, v in s.samples()}
    assert samples[("socialpulse_checkouts_total", ("facebook", "abandoned"))] == 1
    assert samples[("socialpulse_checkouts_total", ("facebook", "started"))] == 1
