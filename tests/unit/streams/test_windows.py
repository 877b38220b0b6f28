
from streams import windows as w
from streams.engagement import metrics as m
from streams.windows import Mark, WindowSpec

MIN = 60_000
T0 = 1767603600000  # 2026-01-05T09:00:00Z, aligned to the hour
SPEC = WindowSpec(bucket_ms=MIN, trailing_ms=(5 * MIN, 60 * MIN), closed_ms=(MIN, 60 * MIN), grace_ms=5 * MIN)


def add_likes(state, ts, n=1):
    agg = m.empty()
    agg["eng"] = n
    w.add(state, ts, agg, SPEC, m.merge)


def test_bounds_are_aligned_to_the_utc_epoch():
    assert w.bucket_start(T0 + 59_999, MIN) == T0
    assert w.bucket_start(T0 + 60_000, MIN) == T0 + MIN
    assert w.iso(T0) == "2026-01-05T09:00:00Z"


def test_trailing_window_sums_buckets_in_watermark_minus_w_to_watermark():
    state = w.new_windowed()
    for minute in range(10):
        add_likes(state, T0 + minute * MIN + 5, n=minute + 1)
    wm = T0 + 9 * MIN + 10
    # buckets starting in (wm - 5m, wm]: minutes 5..9 -> 6+7+8+9+10
    assert w.trailing(state, wm, 5 * MIN, m.merge)["eng"] == 40
    assert w.trailing(state, wm, 60 * MIN, m.merge)["eng"] == 55


def test_out_of_order_within_grace_counts_in_its_window():
    state = w.new_windowed()
    add_likes(state, T0 + 3 * MIN)
    wm = T0 + 3 * MIN
    late_ts = T0 + 30_000
    assert not w.is_late(late_ts, wm, SPEC.grace_ms)
    add_likes(state, late_ts)
    closed = w.close_due(state, T0 + 2 * MIN + SPEC.grace_ms, SPEC)
    assert [(c.label, c.start, c.agg["eng"]) for c in closed] == [("1m", T0, 1)]


def test_late_beyond_grace_is_late():
    assert w.is_late(T0, T0 + SPEC.grace_ms + 1, SPEC.grace_ms)
    assert not w.is_late(T0, T0 + SPEC.grace_ms, SPEC.grace_ms)


def test_a_window_closes_once_and_its_state_is_dropped():
    state = w.new_windowed()
    add_likes(state, T0 + 10, n=3)
    assert w.close_due(state, T0 + MIN + SPEC.grace_ms - 1, SPEC) == []
    first = w.close_due(state, T0 + MIN + SPEC.grace_ms, SPEC)
    assert [(c.label, c.agg["eng"]) for c in first] == [("1m", 3)]
    assert w.close_due(state, T0 + MIN + SPEC.grace_ms + 10 * MIN, SPEC) == []  # never again
    hour = w.close_due(state, T0 + 60 * MIN + SPEC.grace_ms, SPEC)
    assert [(c.label, c.start, c.end, c.agg["eng"]) for c in hour] == [("1h", T0, T0 + 60 * MIN, 3)]
    w.prune(state, T0 + 60 * MIN + SPEC.grace_ms, SPEC)
    assert w.is_empty(state)


SOURCES = ["likes/0", "likes/1", "messages/0"]


def marks(**rows):
    """source name (likes_0 -> likes/0) -> Mark(behind, newest, idle, at)."""
    return {name.replace("_", "/"): Mark(*row) for name, row in rows.items()}


def test_a_backlog_holds_the_watermark_at_its_slowest_input():
    m = marks(likes_0=(True, T0 + 20 * MIN, False, 1), likes_1=(False, T0 + 30 * MIN, False, 1),
              messages_0=(True, T0 + 5 * MIN, False, 1))
    assert w.hold(m, SOURCES) == (T0 + 5 * MIN, False, False)


def test_an_input_not_heard_from_holds_everything():
    m = marks(likes_0=(False, T0, True, 1), likes_1=(False, T0, True, 1))
    assert w.hold(m, SOURCES) == (None, False, False)
    assert w.hold(m, None) == (None, False, False)  # inputs unknown (no metadata yet)


def test_inputs_read_to_their_end_give_the_newest_event_time_then_the_wall_clock_when_quiet():
    busy = marks(likes_0=(False, T0 + 3, False, T0 + 50), likes_1=(False, T0 + 9, True, T0 + 60),
                 messages_0=(False, 0, True, T0 + 70))
    assert w.hold(busy, SOURCES) == (T0 + 9, True, False)
    quiet = marks(likes_0=(False, T0 + 3, True, T0 + 50), likes_1=(False, T0 + 9, True, T0 + 60),
                  messages_0=(False, 0, True, T0 + 70))
    assert w.hold(quiet, SOURCES) == (T0 + 50, True, True)  # the oldest report: a stale one holds


def test_the_clock_never_goes_back_and_a_falling_behind_input_ends_live_mode_at_once():
    clock = w.EventClock(current=T0 + 10 * MIN)
    for source in SOURCES:
        clock.mark(source, Mark(False, T0, True, T0 + 11 * MIN))
    assert clock.advance(SOURCES) == T0 + 11 * MIN and clock.live and clock.idle
    clock.mark("likes/1", Mark(True, T0, False, T0 + 12 * MIN))
    assert not clock.live  # before the next tick: events of the backlog must not move it
    assert clock.advance(SOURCES) == T0 + 11 * MIN  # held, not moved back
    clock.mark("likes/1", Mark(False, T0, True, T0 + 11 * MIN))  # an older report (another path): ignored
    assert clock.marks["likes/1"].behind


def test_windowed_state_survives_a_json_round_trip():
    import orjson

    state = w.new_windowed()
    add_likes(state, T0 + 10, n=2)
    back = w.decode_windowed(orjson.loads(orjson.dumps(state, option=orjson.OPT_NON_STR_KEYS)))
    assert back == state


def test_buckets_and_windows_never_share_nested_parts():
    def merge(into, other):
        for k, v in other["nested"].items():
            inner = into["nested"].setdefault(k, {})
            for kk, vv in v.items():
                inner[kk] = inner.get(kk, 0) + vv

    spec = WindowSpec(bucket_ms=MIN, trailing_ms=(5 * MIN,), closed_ms=(MIN, 60 * MIN), grace_ms=0)
    state = w.new_windowed()
    w.add(state, T0, {"nested": {"a": {"x": 1}}}, spec, merge)
    w.add(state, T0 + 1, {"nested": {"a": {"x": 1}}}, spec, merge)
    assert state["b"][T0]["nested"]["a"]["x"] == 2
    assert state["w"][MIN][T0]["nested"]["a"]["x"] == 2
    assert state["w"][60 * MIN][T0]["nested"]["a"]["x"] == 2
