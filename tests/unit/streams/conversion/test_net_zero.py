"""A window whose credits were all taken back (re-credited to another touch by late data) is
published as if it never had any: the same results whatever order the click and order came in."""

import time
from decimal import Decimal

from schemas.events import Credit
from streams import windows
from streams.conversion import Conversion
from streams.windows import WindowSpec

MIN = 60_000
SPEC = WindowSpec(bucket_ms=MIN, trailing_ms=(60 * MIN,), closed_ms=(MIN, 60 * MIN), grace_ms=5 * MIN,
                  allowed_ms=86_400_000)
KEY = "direct|direct"


def credit(i: str, ts: int, sign: int) -> Credit:
    return Credit(event_id=i, ts=ts, platform="direct", account_id="direct", order_id="o1", currency="USD",
                  revenue={"last_touch": Decimal(sign * 50)}, orders=sign, customers=sign, sessions=sign,
                  site_seconds=sign * 30.0)


def test_a_window_whose_credits_were_all_taken_back_publishes_nothing():
    now = int(time.time() * 1000)
    t0 = now - now % (60 * MIN) - 3 * 60 * MIN
    fam = Conversion(SPEC)
    state = fam.new_state()
    fam.apply(KEY, state, [credit("c+", t0, 1), credit("c-", t0, -1)], t0)
    closed = windows.close_due(state["win"], t0 + 2 * 60 * MIN, SPEC)
    assert closed and all(fam.results(KEY, cw, state, 0) == [] for cw in closed)
    kept = fam.new_state()  # one credit standing: published as ever
    fam.apply(KEY, kept, [credit("c+", t0, 1)], t0)
    [minute, hour] = windows.close_due(kept["win"], t0 + 2 * 60 * MIN, SPEC)
    assert {r.metric: r.value for r in fam.results(KEY, minute, kept, 0)}["attributed_orders"] == 1
