"""IDLE counts from the worker's start (the partition's assignment), not from the machine's
boot: an input read to its end is quiet only after IDLE without records (streams/pipeline.py)."""

import pytest
from faust.types import TP

from streams import pipeline as pl
from streams.app import build
from streams.settings import load_settings
from streams.windows import Mark

UPTIME_S = 10_000_000.0  # a machine up for 115 days: monotonic() is this large when the worker starts


@pytest.fixture
def clock(monkeypatch):
    now = [UPTIME_S]
    monkeypatch.setattr(pl.time, "monotonic", lambda: now[0])
    return now


def test_a_partition_with_no_records_yet_is_quiet_only_idle_after_its_assignment(clock):
    pos = pl.InputPosition()
    assert not pos.quiet(clock[0], 3600.0)
    assert not pos.quiet(clock[0] + 3599.0, 3600.0)
    assert pos.quiet(clock[0] + 3600.0, 3600.0)


def test_quiet_time_counts_from_the_last_record_once_one_came(clock):
    pos = pl.InputPosition()
    pos.seen = clock[0] + 100.0
    assert not pos.quiet(clock[0] + 3650.0, 3600.0)
    assert pos.quiet(clock[0] + 3700.0, 3600.0)


def test_a_worker_starting_on_a_machine_up_longer_than_idle_does_not_follow_the_wall_clock_at_once(
        clock, tmp_path, monkeypatch):
    monkeypatch.setenv("SOCIALPULSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SOCIALPULSE_IDLE", "1h")
    _, pipe = build(load_settings())
    tp = TP(pipe.settings.topic("likes"), 0)
    sent: list[dict[str, Mark]] = []
    monkeypatch.setattr(pipe, "_positions", lambda: {tp: False})  # read to its end
    monkeypatch.setattr(pipe, "_send_marks", lambda marks, **kw: sent.append(marks))

    pipe.send_marks()  # the first look after the assignment
    clock[0] += 3599.0
    pipe.send_marks()
    clock[0] += 1.0
    pipe.send_marks()
    source = f"{tp.topic}/0"
    assert [m[source].idle for m in sent] == [False, False, True]
    assert not any(m[source].behind for m in sent)
