"""The selling index's rules (streams/sellers/index.py) and the README's worked example, to the
cent: from the index's inputs, and from events through the family."""

import random
import time
from decimal import Decimal

from schemas.accounts import SELLER_TARGETS, AccountSettings
from schemas.events import Connection, Impression, Like, Message, Post, Referral
from streams.sellers import Sellers
from streams.sellers import index as ix
from streams.sellers.family import DAY_MS
from streams.windows import WindowSpec

SPEC = WindowSpec(bucket_ms=60_000, trailing_ms=(3_600_000,), closed_ms=(3_600_000,), grace_ms=300_000,
                  allowed_ms=86_400_000)
KEY = "linkedin|acme"
#: the README's worked example ("Sellers", "The index's rules")
README = {"brand": Decimal("16.88"), "people": Decimal("17.50"), "insights": Decimal("11.50"),
          "relationships": Decimal("16.15")}


def test_the_readme_worked_example_from_its_inputs():
    x = ix.Inputs(originals=9, original_engagement=60, accepted=14, decision_makers=3, outreach=8, outreach_answered=4,
                  insights=6, insight_engagement=21, replies=10, reply_seconds=12_000, spells=12, answered=10,
                  repeat_customers=1)
    pillars = ix.pillars(x)
    assert pillars == README
    assert ix.index(pillars) == Decimal("62.03")
    assert ix.influence(45, 3200) == 66


def _ana_events(t0: int) -> list:
    """Ana's 28 days as events, spread over the days (the README's example)."""
    base = {"platform": "linkedin", "account_id": "acme"}
    rng = random.Random(7)
    day = lambda i: t0 - (i % 20) * DAY_MS  # noqa: E731
    out: list = []
    for i in range(9):
        out.append(Post(event_id=f"po{i}", ts=day(i), **base, post_id=f"p{i}", author_id="ana"))
    for i in range(60):  # 60 engagements on her originals from 45 people
        out.append(Like(event_id=f"lk{i}", ts=day(i % 9) + 60_000 + i, **base, post_id=f"p{i % 9}",
                        actor_id=f"u{i % 45}", kind=rng.choice(["like", "comment", "share"])))
    out.append(Impression(event_id="im", ts=day(0) + 1000, **base, post_id="p0", count=3200))
    for i in range(6):  # 4 shares and 2 comments on others' content, 21 engagements on them
        kind = "share" if i < 4 else "comment"
        out.append(Post(event_id=f"ins{i}", ts=day(i), **base, post_id=f"s{i}", author_id="ana", kind=kind,
                        target_post_id=f"other{i}"))
    for i in range(21):
        out.append(Like(event_id=f"li{i}", ts=day(i % 6) + 120_000 + i, **base, post_id=f"s{i % 6}", actor_id=f"u{i % 45}"))
    for i in range(14):
        out.append(Connection(event_id=f"cr{i}", ts=day(i), **base, author_id="ana", actor_id=f"c{i}", status="requested"))
        out.append(Connection(event_id=f"ca{i}", ts=day(i) + 5000, **base, author_id="ana", actor_id=f"c{i}",
                              status="accepted", decision_maker=i < 3))
    for i in range(8):  # 8 outreach conversations, 4 answered; Ana replies to 2 of the answers after 600 s
        ts = day(i) + 3_600_000
        out.append(Message(event_id=f"o{i}", ts=ts, **base, conversation_id=f"out{i}", direction="outbound",
                           author_id="ana", agent_id="ana"))
        if i < 4:
            out.append(Message(event_id=f"oa{i}", ts=ts + 600_000, **base, conversation_id=f"out{i}",
                               direction="inbound", author_id=f"prospect{i}"))
        if i < 2:
            out.append(Message(event_id=f"or{i}", ts=ts + 1_200_000, **base, conversation_id=f"out{i}",
                               direction="outbound", author_id="ana", agent_id="ana"))
    return out


def test_the_readme_worked_example_from_events_through_the_family():
    now = int(time.time() * 1000)
    t0 = now - now % DAY_MS - DAY_MS + 3_600_000
    fam = Sellers(SPEC)
    state = fam.new_state()
    base = {"platform": "linkedin", "account_id": "acme"}
    events = _ana_events(t0)
    # the outreach answers above are 4 waits, 2 answered (600 s each); 8 customer conversations add 8 waits,
    # each answered after 1,350 s: 12 waits, 10 answered, 10 replies in 12,000 s
    for i in range(8):
        ts = t0 - i * DAY_MS + 7_200_000
        events.append(Message(event_id=f"ci{i}", ts=ts, **base, conversation_id=f"c{i}", direction="inbound", author_id=f"k{i}"))
        events.append(Message(event_id=f"co{i}", ts=ts + 1_350_000, **base, conversation_id=f"c{i}", direction="outbound",
                              author_id="ana", agent_id="ana"))
    # a returning customer's referred order (repeat) and a new one
    for n, (repeat, customers) in enumerate(((1, 0), (0, 1))):
        events.append(Referral(event_id=f"r{n}", ts=t0 - DAY_MS, referrer_id="ana", **base, order_id=f"o{n}",
                               currency="USD", amount=Decimal("50"), orders=1, customers=customers, repeat=repeat))
    random.Random(3).shuffle(events)
    for i in range(0, len(events), 17):  # in batches, any order
        fam.apply(KEY, state, events[i:i + 17], t0)
    ana = fam.view(KEY, state, t0)["sellers"]["ana"]
    assert {p: Decimal(v) for p, v in ana["pillars"].items()} == README
    assert ana["selling_index"] == "62.03" and ana["influence"] == 66
    assert ana["replies"] == 10 and ana["mean_reply_seconds"] == 1200.0 and ana["response_rate"] == 10 / 12
    assert ana["outreach"] == 8 and ana["outreach_answered"] == 4 and ana["engagers"] == 45
    assert ana["posts"] == {"original": 9, "share": 4, "comment": 2}
    assert ana["engagements"] == 81 and ana["impressions"] == 3200
    assert ana["connections"] == {"requested": 14, "accepted": 14, "removed": 0} and ana["decision_makers"] == 3
    assert ana["referrals"]["orders"] == 2 and ana["referrals"]["revenue"] == {"USD": "100"}


def test_targets_cap_each_input_and_an_idle_seller_scores_zero():
    assert ix.index(ix.pillars(ix.Inputs())) == Decimal("0.00")
    huge = ix.Inputs(originals=99, original_engagement=10**6, accepted=99, decision_makers=99, outreach=9,
                     outreach_answered=9, insights=99, insight_engagement=10**6, replies=5, reply_seconds=5.0,
                     spells=5, answered=5, repeat_customers=9)
    assert ix.pillars(huge) == {p: Decimal("25.00") for p in ix.PILLARS}
    assert ix.influence(0, 0) == 1 and ix.influence(10**6, 10**9) == 100


def test_an_account_sets_its_own_targets_and_the_others_keep_their_defaults():
    assert tuple(ix.TARGETS) == SELLER_TARGETS  # the account settings name exactly the index's targets
    acct = AccountSettings(platform="linkedin", account_id="acme", seller_targets={"originals": "3"})
    fam = Sellers(SPEC, accounts=lambda key: acct if key == KEY else None)
    now = int(time.time() * 1000)
    state = fam.new_state()
    posts = [Post(event_id=f"p{i}", ts=now - 1000 + i, platform="linkedin", account_id="acme", post_id=f"p{i}",
                  author_id="ana") for i in range(3)]
    fam.apply(KEY, state, posts, now)
    view = fam.view(KEY, state, now)
    assert view["sellers"]["ana"]["pillars"]["brand"] == "12.50"  # 3 of 3 originals: half the pillar
    assert view["targets"]["originals"] == "3" and view["targets"]["accepted"] == "20"
    assert fam.view("x|other", state, now)["sellers"]["ana"]["pillars"]["brand"] == "3.13"  # 3 of 12: 25 x 0.5 x 0.25


def test_a_ratio_of_few_cases_earns_in_proportion_to_them():
    one = ix.Inputs(replies=1, reply_seconds=60, spells=1, answered=1, outreach=1, outreach_answered=1)
    # each of three ratios is perfect but counts 1/5: 25 x 0.25 x 3 x 0.2
    assert ix.pillars(one)["relationships"] == Decimal("3.75")
    five = ix.Inputs(replies=5, reply_seconds=300, spells=5, answered=5, outreach=5, outreach_answered=5)
    assert ix.pillars(five)["relationships"] == Decimal("18.75")
