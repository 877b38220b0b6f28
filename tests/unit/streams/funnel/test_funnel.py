"""The funnel family (streams/funnel/) without Kafka: a closed window's results, the gauges
and the API view agree, and a window with neither leads nor sessions publishes nothing."""

import time
from decimal import Decimal

from schemas.events import Click, Lead, Session, Spend
from streams import windows
from streams.funnel import Funnel
from streams.windows import WindowSpec

MIN = 60_000
SPEC = WindowSpec(bucket_ms=MIN, trailing_ms=(60 * MIN,), closed_ms=(60 * MIN,), grace_ms=5 * MIN)
KEY = "linkedin|seller"


def test_a_closed_window_publishes_leads_rates_and_cost_per_lead():
    now = int(time.time() * 1000)
    t0 = now - now % (60 * MIN) - 2 * 60 * MIN  # an hour two hours ago
    fam = Funnel(SPEC)
    state = fam.new_state()
    base = {"platform": "linkedin", "account_id": "seller"}
    events = [Spend(event_id="s", ts=t0, **base, campaign_id="c1", amount=Decimal("30"), currency="EUR")]
    events += [Click(event_id=f"k{i}", ts=t0 + i, **base, actor_id=f"u{i}") for i in range(40)]
    events += [Session(event_id=f"s{i}", ts=t0 + i, actor_id=f"u{i}", source="linkedin", account_id="seller") for i in range(20)]
    events += [Lead(event_id=f"l{i}", ts=t0 + 100 + i, **base, actor_id=f"u{i}", campaign_id="c1", kind="dm" if i else "form")
               for i in range(4)]
    fam.apply(KEY, state, events, t0)
    (cw,) = windows.close_due(state["win"], t0 + 66 * MIN, SPEC)
    by = {(r.metric, getattr(r, "currency", None), getattr(r, "campaign_id", None)): r for r in fam.results(KEY, cw, state, 0)}
    assert by[("leads", None, None)].value == 4 and by[("leads", None, None)].by_kind == {"dm": 3, "form": 1}
    assert by[("lead_rate", None, None)].value == 0.1  # 4 leads / 40 clicks
    assert by[("lead_rate_by_sessions", None, None)].value == 0.2  # 4 / 20 sessions from social
    assert by[("social_sessions", None, None)].value == 20
    assert by[("cost_per_lead", "EUR", None)].value == 7.5
    assert by[("campaign_leads", None, "c1")].value == 4 and by[("campaign_cost_per_lead", "EUR", "c1")].value == 7.5
    assert all(r.family == "funnel" and r.window == "1h" for r in by.values())
    assert len({r.key for r in by.values()}) == len(by)  # one key per result


def test_clicks_and_spend_alone_publish_no_funnel_series():
    now = int(time.time() * 1000)
    fam = Funnel(SPEC)
    state = fam.new_state()
    fam.apply(KEY, state, [Click(event_id="k", ts=now - 1000, platform="linkedin", account_id="seller", actor_id="u")], now)
    assert list(fam.samples(KEY, state, now)) == []
    view = fam.view(KEY, state, now)["windows"]["1h"]
    assert view["leads"] == 0 and view["lead_rate"] == 0.0 and view["cost_per_lead"] == {}
