"""The record cache and its flushes, on the account stage: a worker killed in the middle of a
flush, restored from what Kafka kept (a prefix of each partition) and fed its uncommitted input
again, ends with exactly the state and series of a worker that never stopped; one very hot
account never makes a record over the bound."""

import random
from collections import defaultdict

import orjson
import pytest

from schemas.events import TOPIC_MODELS
from streams.families import make_stages, routes
from streams.ingest import partition_for
from streams.keyed import COLD, Forwarded, KeyedStage, StageOutput
from streams.pages import PAGE, RECORD_MAX
from streams.settings import Settings
from streams.windows import Mark, WindowSpec
from tests.fixtures import mixed_scenario as mx

SETTINGS = Settings(partitions=4)
N = SETTINGS.partitions
SOURCES = ["in/0", *(f"~actor/{q}" for q in range(N))]
ACCOUNT_ONLY = {"likes", "impressions", "audience", "spend", "messages"}  # topics only the account stage reads
START = mx.scenario_start(1_796_000_000_000)
EVENTS = [e for e in mx.build(START).events if e.topic in ACCOUNT_ONLY]
EVENTS.sort(key=lambda e: e.ts)
ARRIVED = [START + i * 50 for i in range(len(EVENTS))]  # Kafka timestamps: the same on every re-delivery


def new_stage() -> KeyedStage:
    stage = make_stages(SETTINGS, WindowSpec.from_settings(SETTINGS))["account"]
    stage.settle_s = 0
    return stage


class Worker:
    """The account stage of one worker that owns every partition. ``hot``: at most that many
    keys stay decoded, the rest rest in ``store`` (the local store: what was flushed)."""

    def __init__(self, changelog: dict[bytes, bytes] | None = None, hot: int | None = None) -> None:
        self.stage = new_stage()
        self.store: dict[bytes, bytes] = dict(changelog or {})
        if hot is not None:
            self.stage.cold, self.stage.hot_keys, self.stage.sweep_s = True, hot, 1
            self.stage.load_pages = lambda p, prefix: sorted((k, v) for k, v in self.store.items() if k.startswith(prefix))
        if changelog is not None:
            for key, value in changelog.items():
                self.stage.adopt(key.decode(), value, set(range(N)), N)
            self.stage.finish_restore()

    def batch(self, start: int, end: int) -> None:
        by_p: dict[int, list[Forwarded]] = defaultdict(list)
        for i in range(start, end):
            ev = EVENTS[i]
            model = TOPIC_MODELS[ev.topic].model_validate(ev.value)
            for stream, key, primary in routes(ev.topic, model):
                if stream == "account":
                    by_p[partition_for(key, N)].append(Forwarded(ev.topic, ev.topic, 0, i, key, model, primary, ARRIVED[i]))
        out = StageOutput()
        for p, items in sorted(by_p.items()):
            self.stage.process(p, items, out)
        newest = EVENTS[end - 1].ts
        for p in range(N):  # the input read to here: the watermark follows
            self.stage.mark(p, {s: Mark(False, newest, False, ARRIVED[end - 1]) for s in SOURCES})
            self.stage.clock(p).advance(SOURCES)
        self.stage.tick(out, SOURCES)
        self.stage.absorb(out)

    def flush(self) -> dict[int, list[tuple[bytes, bytes | None]]]:
        writes = self.stage.flush()
        for records in writes.values():
            apply(self.store, records)
        return writes

    def view(self, judged: bool = True) -> tuple:
        samples = sorted((n, lv, orjson.dumps(v)) for n, lv, v in self.stage.samples())
        kept = [(p, size, start) for p, windows in self.stage.closed.items() for size, start in windows]
        groups = {g: orjson.dumps(d, option=orjson.OPT_SORT_KEYS) for g in kept if (d := self.stage.closed_window(g))}
        states = self.stage.states
        if not judged:
            states = {k: {f: {n: v for n, v in slot.items() if n != "wm"} for f, slot in st.items()} for k, st in states.items()}
        states = orjson.dumps(states, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
        return samples, groups, states


def apply(log: dict[bytes, bytes], records: list[tuple[bytes, bytes | None]]) -> None:
    """A changelog partition as compaction leaves it: the newest value of each key."""
    for key, value in records:
        if value is None:
            log.pop(key, None)
        else:
            log[key] = value


@pytest.mark.parametrize("hot", [None, 3], ids=["all-decoded", "3-hot-keys"])
@pytest.mark.parametrize("seed", range(8))
def test_a_worker_killed_inside_a_flush_restarts_exactly(seed, hot):
    rng = random.Random(seed)
    bounds = sorted(rng.sample(range(1, len(EVENTS)), 30)) + [len(EVENTS)]
    batches = list(zip([0, *bounds[:-1]], bounds, strict=True))
    flush_after = {i for i in range(len(batches)) if rng.random() < 0.4} | {len(batches) - 1}  # the commits

    never = Worker()
    for i, (a, b) in enumerate(batches):
        never.batch(a, b)
        if i in flush_after:
            never.flush()

    killed, log = Worker(hot=hot), {}
    flushes = sorted(flush_after)
    crash = rng.randrange(len(flushes))  # the flush the worker dies in
    committed_to = 0  # the input offsets of the last commit: its flush was acknowledged
    for i, (a, b) in enumerate(batches):
        killed.batch(a, b)
        if i not in flush_after:
            continue
        writes = killed.flush()
        if i == flushes[crash]:  # killed: each partition keeps a prefix of what was sent
            for records in writes.values():
                apply(log, records[:rng.randint(0, len(records))])
            break
        for records in writes.values():
            apply(log, records)
        if rng.random() < 0.7:  # the commit after an acknowledged flush may not have happened yet
            committed_to = i + 1

    restarted = Worker(log, hot=hot)
    for i in range(committed_to, len(batches)):  # Kafka delivers the uncommitted input again
        restarted.batch(*batches[i])
        if i in flush_after:
            restarted.flush()
    if hot is not None:
        assert sum(st is not COLD for p in range(N) for st in restarted.stage.parts[p].values()) <= hot
    # (a key at rest forgets the watermark its quiet conversations were judged at, as a restart does)
    assert restarted.view(judged=hot is None) == never.view(judged=hot is None)
    # and a third worker restored from the second's changelog agrees again (but for the watermark
    # a quiet key's conversations were last judged at: kept in memory, written with its next change)
    third = Worker(restarted.store)
    assert third.view(judged=False) == never.view(judged=False)


def test_one_very_hot_account_never_writes_a_record_over_the_bound():
    """Thousands of conversations, posts and agents on one account within its windows."""
    stage, t0 = new_stage(), START
    key = "instagram|hot"
    items = []
    for i in range(6000):
        conv, ts = f"c{i}", t0 + i * 10
        items.append(("messages", {"event_id": f"m{i}", "ts": ts, "platform": "instagram", "account_id": "hot",
                                   "conversation_id": conv, "direction": "inbound", "author_id": f"u{i}"}))
        if i % 2:
            items.append(("messages", {"event_id": f"r{i}", "ts": ts + 5, "platform": "instagram", "account_id": "hot",
                                       "conversation_id": conv, "direction": "outbound", "author_id": f"a{i % 900}",
                                       "agent_id": f"a{i % 900}"}))
        items.append(("likes", {"event_id": f"l{i}", "ts": ts, "platform": "instagram", "account_id": "hot",
                                "post_id": f"p{i % 3000}", "actor_id": f"u{i}"}))
    written: list[tuple[bytes, bytes | None]] = []
    log: dict[bytes, bytes] = {}
    for n in range(0, len(items), 2000):
        out = StageOutput()
        batch = [Forwarded(t, t, 0, n + j, key, TOPIC_MODELS[t].model_validate(doc), True, t0 + n + j)
                 for j, (t, doc) in enumerate(items[n:n + 2000])]
        stage.process(partition_for(key, N), batch, out)
        stage.absorb(out)
        for records in stage.flush().values():
            written += records
            apply(log, records)
    whole = len(stage.dumps(stage.states[key]))
    assert whole > 1_000_000  # as one record it would pass Kafka's default limit
    values = [v for _, v in written if v is not None]
    assert max(len(v) for v in values) <= RECORD_MAX
    assert max(len(k) for k, _ in written) < 1024
    pages = [k for k in log if k.startswith(PAGE)]
    assert len(pages) > 100
    again = Worker(log)
    assert again.stage.states[key] == stage.states[key]


def _run(worker: "Worker", batches, flush_after, start: int, stop: int, log: dict[bytes, bytes]) -> None:
    for i in range(start, stop):
        worker.batch(*batches[i])
        if i in flush_after:
            for records in worker.flush().values():
                apply(log, records)


@pytest.mark.parametrize("hot", [None, 3], ids=["all-decoded", "3-hot-keys"])
@pytest.mark.parametrize("seed", range(12))
def test_a_worker_killed_twice_never_takes_an_unfinished_flush_for_a_finished_one(seed, hot):
    """Killed inside a flush (the log keeps its pages but not its marker), restarted, and killed
    again inside its own first flush just after that flush's marker: a third worker must not take
    the first, unfinished flush's pages for current because a newer marker now stands above them."""
    rng = random.Random(1000 + seed)
    bounds = sorted(rng.sample(range(1, len(EVENTS)), 30)) + [len(EVENTS)]
    batches = list(zip([0, *bounds[:-1]], bounds, strict=True))
    flush_after = {i for i in range(len(batches)) if rng.random() < 0.5} | {len(batches) - 1}
    flushes = sorted(flush_after)

    never = Worker()
    for i, (a, b) in enumerate(batches):
        never.batch(a, b)
        if i in flush_after:
            never.flush()

    first_crash = flushes[rng.randrange(len(flushes) // 2)]
    log: dict[bytes, bytes] = {}
    first = Worker(hot=hot)
    _run(first, batches, flush_after, 0, first_crash, log)
    committed_to = max((i + 1 for i in flushes if i < first_crash), default=0)
    first.batch(*batches[first_crash])
    for records in first.flush().values():  # everything but the marker and what follows it
        marker = next(n for n, (k, _) in enumerate(records) if k.startswith(b"\x00flush|"))
        apply(log, records[:marker])

    second = Worker(log, hot=hot)
    nxt = rng.randint(committed_to, first_crash)  # its own first flush: not where the first one's was
    for i in range(committed_to, nxt + 1):
        second.batch(*batches[i])
    for records in second.flush().values():  # killed just after the marker of its first flush
        marker = next(n for n, (k, _) in enumerate(records) if k.startswith(b"\x00flush|"))
        apply(log, records[:marker + 1])

    third = Worker(log, hot=hot)
    _run(third, batches, flush_after | {first_crash}, nxt + 1, len(batches), log)
    assert third.view(judged=False) == never.view(judged=False)
