"""Followers by event time (streams/engagement/followers.py and the family through the keyed
stage, without Kafka): a window's follower count is the last snapshot before its end, never
a later one; the gauges and the API take the last one at or before the watermark; a late
snapshot corrects the published windows after it; and the same events give the same
results, gauges and API whatever their arrival order, batches and watermark moves."""

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import Audience
from schemas.results import Result
from streams import windows
from streams.engagement import Engagement
from streams.engagement import followers as fl
from streams.engagement import metrics as m
from streams.keyed import Forwarded, KeyedStage, StageOutput
from streams.windows import Mark, WindowSpec

MIN = 60_000
T0 = 1_796_032_800_000  # an hour's start
KEY = "instagram|brand"
ACCT = {"platform": "instagram", "account_id": "brand"}
SPEC = WindowSpec(bucket_ms=MIN, trailing_ms=(5 * MIN,), closed_ms=(MIN, 10 * MIN), grace_ms=MIN, allowed_ms=60 * MIN)
SOURCES = ["likes/0"]


class Feed:
    """A keyed stage with the engagement family, its watermark moved by hand, and the results
    as a consumer that upserts by key holds them."""

    def __init__(self, spec: WindowSpec = SPEC) -> None:
        self.stage = KeyedStage("account", spec, [Engagement(spec, top_n=2)], dedup_horizon_ms=600 * MIN, idle_ms=0)
        self.upserted: dict[str, Any] = {}
        self.published: list[Any] = []
        self.offset = 0
        self.at = 0
        self.move(T0)

    def _collect(self, out: StageOutput) -> None:
        for r in out.results:
            if not isinstance(r, Result):  # a tombstone: the key's value is gone
                self.upserted.pop(r.key, None)
                continue
            old = self.upserted.get(r.key)
            assert old is None or r.revision == old.revision + 1, (r.key, r.revision)
            self.upserted[r.key] = r
            self.published.append(r)

    def move(self, watermark: int) -> None:
        """Every input read to its end, the newest event at ``watermark``: the stage is live
        (events move its watermark) and a tick takes it there (never back)."""
        self.at += 1
        self.stage.mark(0, {"likes/0": Mark(False, watermark, False, self.at)})
        out = StageOutput()
        self.stage.tick(out, SOURCES)
        self._collect(out)

    def send(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        items = []
        for topic, ev in events:
            self.offset += 1
            items.append(Forwarded(topic, topic, 0, self.offset, KEY, ACCT | ev, True, 1))
        out = StageOutput()
        self.stage.process(0, items, out)
        assert not out.rejected
        self._collect(out)

    def values(self, metric: str, window: str = "1m") -> dict[int, Any]:
        """window start (ms) -> value of the metric's latest revision."""
        return {_ms(r.window_start): r.value for r in self.upserted.values() if r.metric == metric and r.window == window}

    def view(self) -> dict[str, Any]:
        got = self.stage.view(KEY)
        assert got is not None
        return got["engagement"]  # type: ignore[no-any-return]


def _ms(text: str) -> int:
    from datetime import datetime
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def snap(i: int, ts: int, n: int) -> tuple[str, dict[str, Any]]:
    return "audience", {"event_id": f"a{i}", "ts": ts, "followers": n}


def like(i: int, ts: int, post: str = "p1") -> tuple[str, dict[str, Any]]:
    return "likes", {"event_id": f"l{i}", "ts": ts, "post_id": post, "actor_id": "u"}


# -- the follower count of a window ----------------------------------------------------------

def test_window_without_snapshot_takes_last_before_its_end_not_a_newer_one():
    f = Feed()
    f.send([snap(1, T0 + 10_000, 1000), like(1, T0 + 2 * MIN + 5)])
    f.send([snap(2, T0 + 10 * MIN, 5000)])  # read before the like's minute closed: it moves the watermark past it
    f.move(T0 + 15 * MIN)
    assert f.values("followers")[T0 + 2 * MIN] == 1000
    assert f.values("engagement_rate_by_followers")[T0 + 2 * MIN] == 1 / 1000
    assert f.values("followers")[T0] == 1000 and f.values("followers")[T0 + 10 * MIN] == 5000


def test_window_ending_at_a_snapshot_does_not_take_it():
    f = Feed()
    f.send([snap(1, T0, 1000), like(1, T0 + MIN + 5), snap(2, T0 + 2 * MIN, 3000)])  # the second: at the end
    f.move(T0 + 15 * MIN)
    assert f.values("followers")[T0 + MIN] == 1000


def test_a_late_snapshot_republishes_the_windows_after_it_that_have_none_of_their_own():
    f = Feed()
    f.send([snap(1, T0 + 5, 1000)] + [like(i, T0 + i * MIN + 5) for i in range(1, 5)] + [snap(2, T0 + 3 * MIN + 9, 4000)])
    f.move(T0 + 8 * MIN)  # minutes 0 to 4 are published
    assert [f.values("followers")[T0 + i * MIN] for i in range(5)] == [1000, 1000, 1000, 4000, 4000]
    before = len(f.published)
    f.send([snap(3, T0 + MIN + 30_000, 2000)])  # late: polled in minute 1, read now
    again = f.published[before:]
    assert {(r.window_start, r.revision) for r in again if r.metric == "followers" and r.window == "1m"} == {
        (windows.iso(T0 + MIN), 1), (windows.iso(T0 + 2 * MIN), 1)}  # minute 3 has its own, minute 0 is before it
    assert [f.values("followers")[T0 + i * MIN] for i in range(5)] == [1000, 2000, 2000, 4000, 4000]
    assert f.values("follower_growth")[T0 + MIN] == 0  # its only snapshot
    assert f.values("engagement_rate_by_followers")[T0 + 2 * MIN] == 1 / 2000


def test_a_late_snapshot_of_the_same_count_publishes_nothing_again():
    f = Feed()
    f.send([snap(1, T0 + 5, 1000), like(1, T0 + MIN + 5), like(2, T0 + 2 * MIN + 5)])
    f.move(T0 + 8 * MIN)
    before = len(f.published)
    f.send([snap(2, T0 + MIN + 7, 1000)])
    assert {r.window_start for r in f.published[before:]} == {windows.iso(T0 + MIN)}  # only the window it falls in


def test_gauges_and_api_take_the_last_snapshot_at_or_before_the_watermark():
    f = Feed()
    f.move(T0 + 3 * MIN)
    f.stage.clocks[0].live = False  # a backlog: events do not move the watermark
    f.send([snap(1, T0 + MIN, 1000), like(1, T0 + 2 * MIN), snap(2, T0 + 20 * MIN, 9000)])
    samples = {(n, lv): v for n, lv, v in f.stage.samples()}
    assert samples[("socialpulse_followers", ("instagram", "brand"))] == 1000
    assert samples[("socialpulse_engagement_rate_by_followers", ("instagram", "brand", "5m"))] == 1 / 1000
    assert f.view()["followers"] == 1000 and f.view()["windows"]["5m"]["engagement_rate_by_followers"] == 1 / 1000
    f.move(T0 + 20 * MIN)
    assert f.view()["followers"] == 9000


def test_two_snapshots_of_one_ts_count_as_the_larger_whatever_came_first():
    for order in ([1000, 1200], [1200, 1000]):
        f = Feed()
        f.send([snap(1, T0, 900)] + [snap(10 + i, T0 + 30_000, n) for i, n in enumerate(order)])
        f.move(T0 + 5 * MIN)
        assert f.values("followers")[T0] == 1200 and f.values("follower_growth")[T0] == 300
    agg_a, agg_b = m.empty(), m.empty()
    for agg, counts in ((agg_a, (5, 7)), (agg_b, (7, 5))):
        for i, n in enumerate(counts):
            m.fold(agg, Audience(event_id=f"a{i}", ts=T0, **ACCT, followers=n))
    assert agg_a["f0"] == agg_b["f0"] == [T0, 5] and agg_a["f1"] == agg_b["f1"] == [T0, 7]


def test_history_keeps_only_what_can_still_change_a_result():
    f = Feed()
    f.send([snap(i, T0 + i * 10_000, 1000 + i) for i in range(30)] + [like(1, T0 + 5)])  # 6 a minute, 5 minutes
    f.move(T0)  # a tick (live: the events took the watermark to 4m50s)
    state = f.stage.states[KEY]["engagement"]
    # of the whole minutes the watermark passed, the last snapshot of each; the rest as read
    assert [ts - T0 for ts, _ in state["fh"]] == [50_000, 110_000, 170_000, 230_000,
                                                   240_000, 250_000, 260_000, 270_000, 280_000, 290_000]
    assert state["pub"] == {MIN: [[T0, 3]]}  # minutes 0-2, one run (the 10-minute window is still open)
    f.move(T0 + 200 * MIN)  # an hour (the allowed lateness) past everything
    state = f.stage.states[KEY]["engagement"]
    assert state["fh"] == [[T0 + 290_000, 1029]] and "pub" not in state  # the count of any window to come
    assert f.view()["followers"] == 1029


def test_state_written_with_the_latest_snapshot_only_restores_it_as_history():
    fam = Engagement(SPEC)
    state = fam.decode_state({"win": {"b": {}, "w": {}}, "followers": [T0, 1000]})
    assert state["fh"] == [[T0, 1000]] and fam.view(KEY, state, T0)["followers"] == 1000
    assert fam.view(KEY, state, T0 - 1)["followers"] is None


# -- the pure parts ----------------------------------------------------------------------------

def test_runs_of_published_windows_join_split_and_drop():
    runs: fl.Runs = []
    for start in (5, 1, 3, 2, 9):
        assert fl.note(runs, start * MIN, MIN)
    assert not fl.note(runs, 2 * MIN, MIN)
    assert runs == [[MIN, 3], [5 * MIN, 1], [9 * MIN, 1]]
    assert fl.note(runs, 4 * MIN, MIN) and runs == [[MIN, 5], [9 * MIN, 1]]
    assert list(fl.starts(runs, MIN, 3 * MIN)) == [3 * MIN, 4 * MIN, 5 * MIN, 9 * MIN]  # those ending after 3m
    assert fl.drop_before(runs, MIN, 4 * MIN) and runs == [[4 * MIN, 2], [9 * MIN, 1]]  # ending at or before 4m
    assert fl.drop_before(runs, MIN, 10 * MIN) and runs == []


def test_history_lookups_prune_and_compact():
    h: list[list[int]] = []
    for ts, n in ((30, 3), (10, 1), (20, 2), (20, 1), (70, 7)):
        fl.insert(h, ts, n)
    assert h == [[10, 1], [20, 2], [30, 3], [70, 7]]
    assert fl.before(h, 30) == [20, 2] and fl.at_or_before(h, 30) == [30, 3] and fl.before(h, 10) is None
    assert fl.compact(h, 69, 50) and h == [[30, 3], [70, 7]]  # [0, 50) is whole at 69; [50, 100) is not
    assert fl.prune(h, 75) and h == [[70, 7]]


# -- order never matters ---------------------------------------------------------------------

SECOND = st.one_of(st.integers(0, 20 * 60 - 1), st.sampled_from([0, 59, 60, 61, 119, 120, 599, 600, 601]))
EVENT = st.tuples(st.sampled_from(["likes", "impressions", "clicks", "audience"]), SECOND, st.integers(0, 5))


def make(spec: list[tuple[str, int, int]]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for i, (topic, second, n) in enumerate(spec):
        ev: dict[str, Any] = {"event_id": f"e{i}", "ts": T0 + second * 1000}
        if topic == "likes":
            ev |= {"post_id": f"p{n % 3}", "actor_id": "u"}
        elif topic == "impressions":
            ev |= {"post_id": f"p{n % 3}", "count": 10 * n + 1}
        elif topic == "clicks":
            ev |= {"actor_id": "u", "post_id": f"p{n % 3}"}
        else:
            ev |= {"followers": 1000 + 10 * n}
        out.append((topic, ev))
    return out


def outcome(events: list[tuple[str, dict[str, Any]]], batches: list[int], moves: list[int]) -> tuple[Any, ...]:
    """Feed ``events`` in batches of the given sizes, moving the watermark after each batch
    (never beyond ``T0 + 25m``: nothing gets late); then the gauges and API at 25 minutes and
    the upserted results once every window is closed."""
    f = Feed()
    i = 0
    for n, move in zip(batches, moves, strict=False):
        if i < len(events):
            f.send(events[i:i + n])
            i += n
        f.move(move)
    if i < len(events):
        f.send(events[i:])
    f.move(T0 + 25 * MIN)
    samples = sorted(f.stage.samples())
    view = f.view()
    f.move(T0 + 45 * MIN)
    results = {k: r.model_dump(exclude={"revision"}) for k, r in f.upserted.items()}
    return samples, view, results, f


@settings(max_examples=150, deadline=None)
@given(
    spec=st.lists(EVENT, min_size=1, max_size=40),
    order=st.randoms(use_true_random=False),
    batches=st.lists(st.integers(1, 12), max_size=10),
    moves=st.lists(st.integers(0, 25 * 60), max_size=10),
)
def test_same_events_give_the_same_results_gauges_and_api_in_any_arrival_order(spec, order, batches, moves):
    events = make(spec)
    oracle = outcome(sorted(events, key=lambda e: e[1]["ts"]), [len(events)], [])
    shuffled = list(events)
    order.shuffle(shuffled)
    got = outcome(shuffled, batches, [T0 + s * 1000 for s in moves])
    assert got[0] == oracle[0]
    assert got[1] == oracle[1]
    assert got[2] == oracle[2]
    # and the follower count of each window is the definition's: the last snapshot before its end
    snapshots = [(e["ts"], e["followers"]) for t, e in events if t == "audience"]
    for r in got[3].upserted.values():
        if r.metric == "followers":
            end = _ms(r.window_end)
            assert r.value == max(s for s in snapshots if s[0] < end)[1]
