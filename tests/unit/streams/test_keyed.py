"""The keyed stage with the engagement family, without Kafka."""

import time

import pytest

from streams import windows
from streams.engagement import Engagement
from streams.keyed import Forwarded, KeyedStage, StageOutput, decode_forward, encode_forward
from streams.windows import Mark, WindowSpec

MIN = 60_000
SPEC = WindowSpec(bucket_ms=MIN, trailing_ms=(5 * MIN,), closed_ms=(MIN,), grace_ms=2 * MIN)
KEY = "instagram|brand"


@pytest.fixture
def t0():
    # a minute-aligned time 30 minutes ago, so nothing is "in the future"
    now = int(time.time() * 1000)
    return now - now % MIN - 30 * MIN


EXPECT = ["likes/0"]


def stage(allowed=5 * MIN):
    spec = WindowSpec(SPEC.bucket_ms, SPEC.trailing_ms, SPEC.closed_ms, SPEC.grace_ms, allowed)
    return KeyedStage("account", spec, [Engagement(spec, top_n=2)], dedup_horizon_ms=10 * MIN, idle_ms=0)


def live(s, partition=0):
    """Every input read to its end and busy: events move the watermark."""
    s.mark(partition, {"likes/0": Mark(False, 0, False, int(time.time() * 1000))})
    s.tick(StageOutput(), EXPECT)
    return s


def quiet(s, out, partition=0):
    """Every input read to its end and quiet: a tick moves the watermark to the wall clock."""
    s.mark(partition, {"likes/0": Mark(False, 0, True, int(time.time() * 1000))})
    s.tick(out, EXPECT)
    return out


def fwd(topic, offset, ev, key=KEY):
    platform, account = key.split("|")
    base = {"platform": platform, "account_id": account} if topic != "orders" else {}
    return Forwarded(topic, topic, 0, offset, key, base | ev, True)


def like(i, ts, post="p1"):
    return fwd("likes", i, {"event_id": f"l{i}", "ts": ts, "post_id": post, "actor_id": "u"})


def imp(i, ts, n):
    return fwd("impressions", i, {"event_id": f"i{i}", "ts": ts, "post_id": "p1", "count": n})


def test_forwarded_batches_round_trip():
    items = [like(1, 1767603600000), imp(2, 1767603600001, 5)]
    assert decode_forward(encode_forward(items)) == items


def test_duplicates_and_events_beyond_the_allowed_lateness_are_rejected_and_counted_once(t0):
    s, out = live(stage()), StageOutput()
    s.process(0, [like(1, t0 + 10), like(1, t0 + 10), imp(2, t0 + 20, 400)], out)
    s.process(0, [like(3, t0 + 10 * MIN)], out)  # live: watermark -> t0 + 10m
    # allowed lateness 5m: 1 ms beyond it is late; exactly 5m behind is in
    s.process(0, [like(4, t0 + 5 * MIN - 1), like(5, t0 + 5 * MIN)], out)
    assert out.accepted == {"likes": 3, "impressions": 1}
    assert [(r.reason, r.event_id) for r in out.rejected] == [("duplicate", "l1"), ("late", "l4")]
    assert out.rejected[1].raw.offset == 4 and b'"l4"' in out.rejected[1].raw.value
    view = s.view(KEY)["engagement"]["windows"]["5m"]
    assert view["engagements"] == 1  # l3; l5's bucket starts at wm - 5m, outside (wm-5m, wm]
    # its minute was published already (end + grace passed), without it: published now, revision 0
    fifth = [r for r in out.results if r.metric == "engagements" and r.window_start == windows.iso(t0 + 5 * MIN)]
    assert [(r.value, r.revision) for r in fifth] == [(1.0, 0)]


def test_a_late_event_is_not_remembered_so_its_retry_is_late_again_not_a_duplicate(t0):
    s, out = live(stage()), StageOutput()
    s.process(0, [like(1, t0 + 10 * MIN)], out)  # watermark -> t0 + 10m
    s.process(0, [like(2, t0), like(2, t0)], out)  # late, and its retry in the same batch
    s.process(0, [like(2, t0)], out)  # and in a later one
    assert [(r.reason, r.event_id) for r in out.rejected] == [("late", "l2")] * 3
    assert "l2" not in {uid.split("\x1f")[1] for uid in s.seen[0].ids}
    record = s.seen[0].flush()
    assert record is None  # only l1 was new, and the first batch's flush took it


def test_a_backlog_read_out_of_order_loses_nothing(t0):
    """Two inputs with 20 minutes of history, the second read only after the first: nothing is late."""
    s, out = stage(), StageOutput()
    sources = ["likes/0", "likes/1"]
    s.mark(0, {src: Mark(True, 0, False, 1) for src in sources})
    s.tick(StageOutput(), sources)
    s.process(0, [like(i, t0 + i * MIN) for i in range(20)], out)  # likes/0 read to t0 + 19m
    s.mark(0, {"likes/0": Mark(False, t0 + 19 * MIN, False, 2)})
    s.tick(StageOutput(), sources)
    assert s.current_watermark(0) == 0  # likes/1 is still behind and has read nothing
    s.process(0, [like(100 + i, t0 + i * MIN + 30_000) for i in range(20)], out)  # likes/1, read later
    assert out.rejected == [] and out.accepted == {"likes": 40}
    s.mark(0, {"likes/1": Mark(False, t0 + 19 * MIN + 30_000, False, 3)})
    tick = StageOutput()
    s.tick(tick, sources)
    assert s.current_watermark(0) == t0 + 19 * MIN + 30_000
    per_minute = [r for r in tick.results if r.metric == "engagements" and r.window == "1m"]
    # grace 2m: the 17 minutes ending by wm - 2m are published, each with both inputs' likes
    assert [r.value for r in per_minute] == [2.0] * 17 and {r.revision for r in per_minute} == {0}


def test_a_late_event_within_the_allowed_lateness_corrects_the_published_window(t0):
    s, out = live(stage(allowed=60 * MIN)), StageOutput()
    s.process(0, [like(1, t0 + 5), like(2, t0 + 6)], out)
    s.process(0, [like(3, t0 + 10 * MIN)], out)
    first = quiet(s, StageOutput())  # the wall clock: 30 min ahead, t0's minute is published
    # (by the batch that moved the watermark past it, or by the tick)
    eng = [r for r in out.results + first.results if r.metric == "engagements" and r.window_start == windows.iso(t0)]
    assert [(r.value, r.revision) for r in eng] == [(2.0, 0)]
    late = StageOutput()
    s.process(0, [like(4, t0 + 7)], late)  # 30 minutes late, allowed 60
    assert late.rejected == [] and late.accepted == {"likes": 1} and late.corrected == 1
    again = [r for r in late.results if r.metric == "engagements"]
    assert [(r.key, r.value, r.revision) for r in again] == [(eng[0].key, 3.0, 1)]
    s.process(0, [like(5, t0 + 8)], late)
    assert [r.revision for r in late.results if r.metric == "engagements"] == [1, 2]
    fresh_window = StageOutput()
    s.process(0, [like(6, t0 + 3 * MIN)], fresh_window)  # a minute that had nothing: first publication
    assert [(r.value, r.revision) for r in fresh_window.results if r.metric == "engagements"] == [(1.0, 0)]


def test_closed_windows_are_kept_for_the_allowed_lateness_then_let_go(t0):
    s, out = live(stage(allowed=20 * MIN)), StageOutput()
    s.process(0, [like(1, t0 + 5)], out)
    tick = quiet(s, StageOutput())  # wall clock: t0 + 30m, so the window ending t0 + 1m is past 20 min already
    assert (0, MIN, t0) in tick.groups and tick.groups[(0, MIN, t0)] is not None
    later = StageOutput()
    s.tick(later, EXPECT)
    assert later.groups == {(0, MIN, t0): None} and not s.closed[0]


def test_a_resent_event_id_is_a_duplicate_within_the_horizon_of_its_first_arrival_whatever_its_age(t0):
    s, out = live(stage(allowed=60 * MIN)), StageOutput()
    s.settle_s = 0
    now = int(time.time() * 1000)
    old = like(1, t0)._replace(arrived=now - 11 * MIN)
    s.process(0, [old, like(2, t0 + 20 * MIN)._replace(arrived=now - 11 * MIN)], out)
    s.process(0, [old._replace(offset=9, arrived=now - 2 * MIN)], out)  # a re-send, 9 minutes later
    assert [(r.reason, r.event_id) for r in out.rejected] == [("duplicate", "l1")]
    later = StageOutput()  # the next batch
    s.process(0, [like(3, t0 + 21 * MIN)._replace(arrived=now)], later)  # arrivals move on 11 minutes
    s.tick(StageOutput(), EXPECT)
    assert s.seen[0].clock == now and len(s.seen[0]) == 1  # l1 and l2 expired (horizon 10m)
    s.process(0, [old._replace(offset=10, arrived=now)], later)  # past the 10 min horizon of its first arrival
    assert [r.reason for r in out.rejected] == ["duplicate"] and out.accepted["likes"] == 2
    assert later.rejected == [] and later.accepted["likes"] == 2


def test_engagement_rate_ctr_and_growth_by_hand(t0):
    s, out = live(stage()), StageOutput()
    items = [imp(1, t0 + 1_000, 1000), imp(2, t0 + 2_000, 1000)]
    items += [like(10 + i, t0 + 3_000 + i, post="p2" if i < 3 else "p1") for i in range(5)]
    items += [fwd("clicks", 30 + i, {"event_id": f"c{i}", "ts": t0 + 4_000, "actor_id": "u"}) for i in range(40)]
    items += [
        fwd("audience", 50, {"event_id": "f1", "ts": t0 + 30_000, "followers": 1000}),
        fwd("audience", 51, {"event_id": "f0", "ts": t0 + 10_000, "followers": 900}),  # out of order: first snapshot
    ]
    s.process(0, items, out)
    v = s.view(KEY)["engagement"]
    win = v["windows"]["5m"]
    assert (win["engagements"], win["impressions"], win["clicks"]) == (5, 2000, 40)
    assert win["engagement_rate"] == 5 / 2000
    assert win["click_through_rate"] == 40 / 2000
    assert win["engagement_rate_by_followers"] == 5 / 1000
    assert win["follower_growth"] == 100
    assert v["followers"] == 1000
    assert win["top_posts"] == [{"post_id": "p2", "engagements": 3}, {"post_id": "p1", "engagements": 2}]
    samples = {(n, lv): val for n, lv, val in s.samples()}
    assert samples[("socialpulse_engagement_rate", ("instagram", "brand", "5m"))] == 0.0025
    assert samples[("socialpulse_followers", ("instagram", "brand"))] == 1000


def test_ratio_with_zero_impressions_is_not_exported(t0):
    s, out = stage(), StageOutput()
    s.process(0, [like(1, t0)], out)
    names = {n for n, _, _ in s.samples()}
    assert "socialpulse_engagements" in names
    assert "socialpulse_engagement_rate" not in names and "socialpulse_click_through_rate" not in names


def test_quiet_key_window_closes_by_wall_clock_and_publishes_exactly_once(t0):
    s, out = stage(), StageOutput()
    s.process(0, [like(1, t0 + 5), imp(2, t0 + 6, 50)], out)
    tick = quiet(s, StageOutput())  # every input quiet: watermark is the wall clock, 30 min ahead
    er = [r for r in tick.results if r.metric == "engagement_rate"]
    assert len(er) == 1 and er[0].value == 1 / 50 and er[0].window == "1m"
    assert er[0].key == f"engagement_rate|instagram|brand|1m|{er[0].window_start}"
    again = StageOutput()
    s.tick(again, EXPECT)
    assert again.results == []
    # its buckets are behind every trailing window and its ids past the horizon: the key is gone
    assert KEY not in s.states and KEY in tick.deleted[0]


def test_a_partition_that_is_behind_is_not_moved_by_the_wall_clock(t0):
    s, out = stage(), StageOutput()
    s.process(0, [like(1, t0 + 5)], out)
    s.mark(0, {"likes/0": Mark(True, t0 + 5, False, int(time.time() * 1000))})
    tick = StageOutput()
    s.tick(tick, EXPECT)
    assert tick.results == [] and KEY in s.states and s.current_watermark(0) == t0 + 5


def test_restored_state_keeps_closed_windows_closed(t0):
    s, out = stage(), StageOutput()
    s.process(0, [like(1, t0 + 5)], out)
    tick = quiet(s, StageOutput())
    assert {r.metric: r.value for r in tick.results}["engagements"] == 1 and KEY in tick.deleted[0]
    s.process(0, [like(2, int(time.time() * 1000) - 1000)], out)
    raw = s.dumps(s.states[KEY])
    fresh, out2 = stage(), StageOutput()  # a restarted worker recovers key, ids and watermark
    fresh.restore(0, KEY, raw)
    fresh.restore_seen(0, *out.seen[0])
    fresh.restore_watermark(0, tick.watermarks[0])
    fresh.process(0, [like(3, t0 + 10)], out2)  # would reopen the emitted window
    assert [r.reason for r in out2.rejected] == ["late"]
    fresh.process(0, [like(2, int(time.time() * 1000) - 1000)], out2)  # replayed after the crash
    assert [r.reason for r in out2.rejected] == ["late", "duplicate"]


def test_revoked_partitions_take_their_keys_and_series_away(t0):
    s, out = stage(), StageOutput()
    s.process(0, [like(1, t0)], out)
    s.process(1, [fwd("likes", 2, {"event_id": "l2", "ts": t0, "post_id": "p", "actor_id": "u"}, key="x|other")], out)
    s.revoke([0])
    assert {lv[1] for _, lv, _ in s.samples()} == {"other"}


def test_result_keys_are_unique_across_families(t0):
    """Families share the results topic: two families must never publish one key."""
    from streams.conversion import Conversion
    from streams.replies import Replies

    spec = WindowSpec(bucket_ms=MIN, trailing_ms=(5 * MIN,), closed_ms=(MIN,), grace_ms=2 * MIN)
    s = KeyedStage("account", spec, [Engagement(spec), Replies(spec, 15 * MIN), Conversion(spec)], 10 * MIN, 0)
    out = StageOutput()
    s.process(0, [like(1, t0), imp(2, t0, 10), fwd("clicks", 3, {"event_id": "c", "ts": t0, "actor_id": "u", "campaign_id": "k"}),
                  fwd("spend", 4, {"event_id": "s", "ts": t0, "campaign_id": "k", "amount": "5", "currency": "USD"})], out)
    tick = quiet(s, StageOutput())
    keys = [r.key for r in tick.results]
    assert len(keys) > 10 and len(keys) == len(set(keys))


def test_a_key_record_carries_its_batch_ids_so_a_lost_ids_record_never_double_counts():
    """Kafka keeps a prefix of what a killed worker sent: the key's record can be there
    while the batch's ids record is not. The ids travel in the key's record."""
    from streams.keyed import ids_by_key, split_ids, with_ids

    now = int(time.time() * 1000)
    s, out = live(stage()), StageOutput()
    other = fwd("likes", 3, {"event_id": "o", "ts": now - 700, "post_id": "p", "actor_id": "u"}, key="x|other")
    s.process(0, [like(1, now - 1000), like(2, now - 900), other], out)
    name, rows = out.seen[0]
    ids = ids_by_key(rows)
    assert sorted(ids[KEY][1:]) == ["l1", "l2"] and ids["x|other"][1:] == ["o"]
    assert ids[KEY][0] == max(arrived for uid, arrived in rows if uid.startswith(KEY))  # one arrival per key
    record = with_ids(s.encoded(0, KEY), ids[KEY])
    state, carried = split_ids(record, KEY)
    assert sorted(uid for uid, _ in carried) == [f"{KEY}\x1fl1", f"{KEY}\x1fl2"] and s.loads(state) == s.states[KEY]
    fresh, again = live(stage()), StageOutput()  # restarted: the key record is back, the ids record lost
    fresh.restore(0, KEY, record)
    fresh.process(0, [like(1, now - 1000), like(2, now - 900), like(4, now - 800)], again)  # re-delivered
    assert [r.reason for r in again.rejected] == ["duplicate", "duplicate"]
    counts = {(m, lv[1]): v for m, lv, v in fresh.samples() if m == "socialpulse_engagements"}
    assert counts == {("socialpulse_engagements", "brand"): 3.0}
    # the ids restored from a key's record are never deleted as if they were an ids record
    tick = StageOutput()
    fresh.seen[0].clock += 10**12
    fresh.settle_s = 0
    fresh.tick(tick, EXPECT)
    assert "l1" not in str(fresh.seen[0].ids) and not any(n.startswith("~") for n in tick.seen_expired.get(0, []))


def test_a_batch_with_marks_between_its_events_writes_the_ids_of_every_run():
    """A keyed batch is processed in runs (marks between them): what the batch writes to
    the changelog must carry the ids of every run. Restored from exactly those records, a
    re-delivery of the batch (uncommitted when a rebalance came) counts nothing twice."""
    now = int(time.time() * 1000)
    s, out = live(stage()), StageOutput()
    s.process(0, [like(1, now - 1000), like(2, now - 900)], out)  # run 1
    s.mark(0, {"likes/0": Mark(False, now - 900, False, now)})
    s.process(0, [like(3, now - 800)], out)  # run 2
    other = fwd("likes", 5, {"event_id": "o", "ts": now - 700, "post_id": "p", "actor_id": "u"}, key="x|other")
    s.process(0, [like(4, now - 750), other], out)  # run 3 touches another key
    name, rows = out.seen[0]
    assert sorted(uid.split("\x1f")[1] for uid, _ in rows) == ["l1", "l2", "l3", "l4", "o"]
    assert s.seen[0].records[name][1] == [uid for uid, _ in rows]  # one record in memory, as written
    records = s.changelog_records(out)[0]
    fresh = live(stage())
    for key, value in records:
        fresh.adopt(key.decode(), value, {0}, partitions=1)
    again = StageOutput()
    replay = [like(1, now - 1000), like(2, now - 900), like(3, now - 800), like(4, now - 750), other]
    fresh.process(0, [*replay, like(6, now - 100)], again)  # and one new event
    assert [r.reason for r in again.rejected] == ["duplicate"] * 5
    counts = {lv[1]: v for m, lv, v in fresh.samples() if m == "socialpulse_engagements"}
    assert counts == {"brand": 5.0, "other": 1.0}
