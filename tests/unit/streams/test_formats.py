"""Versioned formats: state written by a released version restores in this one, records of a
version this worker does not know are refused with a clear message, and poison records on
the internal topics are dead-lettered without stopping the batch."""

import json
from pathlib import Path

import orjson
import pytest

from streams.keyed import (
    FORMAT,
    WIRE_FORMAT,
    FormatError,
    Forwarded,
    StageOutput,
    decode_forward,
    encode_forward,
    encode_marks,
    split_ids,
)
from streams.windows import Mark
from tests.fixtures import state_scenario as sc

FIXTURES = sorted(Path(sc.__file__).parent.glob("state-v*.json"))


def samples(stage, account="brand-a"):
    return {(name, labels[2:]): value for name, labels, value in stage.samples() if labels[1] == account}


def restore(fixture: Path) -> sc.Harness:
    data = json.loads(fixture.read_text())
    h = sc.Harness()
    h.changelog = data["changelog"]
    made = h.restore()
    again = sc.Harness(made)
    again.changelog = {name: dict(records) for name, records in h.changelog.items()}
    again.arrived = sc.T0 + 200_000
    return again


def test_this_version_writes_the_newest_committed_fixture():
    """The next format change must ship a new fixture (and keep restoring the old ones)."""
    assert FIXTURES and FIXTURES[-1].name == f"state-v{FORMAT}.json"
    assert json.loads(FIXTURES[-1].read_text())["format"] == FORMAT


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.stem)
def test_state_written_by_a_released_version_restores_every_family(fixture):
    h = restore(fixture)
    account, actor = h.stages["account"], h.stages["actor"]
    got = samples(account)
    assert got[("socialpulse_engagements", ("1h",))] == 3.0
    assert got[("socialpulse_impressions", ("1h",))] == 100.0
    # written before channels and policies: a dm under the default policy
    assert got[("socialpulse_reply_sla_total", ("dm", "default", "met"))] == 1.0
    assert got[("socialpulse_reply_latency_seconds", ("dm",))][1] == 60.0  # the histogram's sum
    assert got[("socialpulse_attributed_revenue", ("1h", "last_touch", "EUR"))] == 50.0
    assert got[("socialpulse_spend", ("1h", "EUR"))] == 20.0
    assert "u1" in actor.states  # the shopper's touches
    assert account.current_watermark(0) == sc.T0 + 600_000
    assert account.closed[0] == {(60_000, sc.T0), (60_000, sc.T0 + 60_000)}  # kept for corrections

    # Kafka re-delivers a like (a duplicate); a like 15 s into the closed first minute comes late
    h.event("likes", sc.EVENTS[0][1])
    assert [r.reason for r in h.rejected] == ["duplicate"]
    late = dict(sc.EVENTS[0][1], event_id="l4", ts=sc.T0 + 15_000)
    h.event("likes", late)
    corrected = {r.key: r for r in h.results if r.metric == "engagements"}
    first = corrected[f"engagements|instagram|brand-a|1m|{'2026-11-30T10:00:00Z'}"]
    assert (first.value, first.revision) == (4.0, 1)  # the restored closed window, published again
    assert samples(account)[("socialpulse_engagements", ("1h",))] == 4.0
    # a later order of the same shopper is still attributed to the restored click
    h.event("orders", {"event_id": "o2", "ts": sc.T0 + 500_000, "order_id": "ord2", "actor_id": "u1",
                       "amount": "10.00", "currency": "EUR"})
    assert samples(account)[("socialpulse_attributed_revenue", ("1h", "last_touch", "EUR"))] == 60.0


def test_a_state_record_of_an_unknown_version_is_refused_with_a_clear_message():
    h = sc.run()
    key, value = next((k, v) for k, v in h.changelog["account"].items() if not k.startswith("\x00"))
    newer = value.replace(f'"~v":{FORMAT}', '"~v":99', 1).encode()
    fresh = sc.stages()["account"]
    with pytest.raises(FormatError, match=f"format version 99.*reads versions 0 to {FORMAT}"):
        fresh.adopt(key, newer, {0, 1, 2, 3}, 4)
    with pytest.raises(FormatError):
        fresh.check_record(key, newer)
    with pytest.raises(ValueError):
        fresh.check_record(key, b"{not json")
    fresh.check_record(key, value.encode())  # the current one reads


def test_version_0_records_without_a_version_still_read():
    records = json.loads(FIXTURES[0].read_text())["changelog"]["account"]  # format 1: one record per key
    key, value = next((k, v) for k, v in records.items() if not k.startswith("\x00"))
    state, _ = split_ids(value.encode())
    legacy = state.replace(b'{"~v":1,', b"{", 1)  # what the release before format 1 wrote
    fresh = sc.stages()["account"]
    assert fresh.adopt(key, legacy, {0, 1, 2, 3}, 4) == 1
    fresh.adopt("\x00watermark|0", str(sc.T0 + 600_000).encode(), {0}, 4)
    assert samples(fresh)[("socialpulse_engagements", ("1h",))] == 3.0
    rows = [["likes", "likes", 0, 1, "x|y", {"event_id": "e"}, True, 5]]
    assert decode_forward(orjson.dumps(rows))[0].key == "x|y"  # forwarded, version 0
    assert decode_forward(orjson.dumps({"marks": {"likes/0": [False, 1, False, 2]}}))["likes/0"].newest == 1


def test_forwarded_records_carry_their_version_and_a_newer_one_is_refused():
    item = Forwarded("likes", "likes", 0, 7, "x|y", {"event_id": "e", "ts": 1}, True, 9)
    raw = encode_forward([item])
    # (their layout did not change with format 2 of the state: workers of both versions share the topics)
    assert orjson.loads(raw)[0] == WIRE_FORMAT and decode_forward(raw) == [item]
    assert orjson.loads(encode_marks({"likes/0": Mark(False, 1, False, 2)}))["v"] == WIRE_FORMAT
    with pytest.raises(FormatError, match=f"forwarded-events record has format version {FORMAT + 1}"):
        decode_forward(orjson.dumps([FORMAT + 1, list(item)]))
    with pytest.raises(FormatError, match="marks record"):
        decode_forward(orjson.dumps({"v": 7, "marks": {}}))
    for poison in (b"\xff\x00", b"42", b'"text"', b"[1, [1, 2]]", b'{"v": 1, "marks": {"a": [1]}}'):
        with pytest.raises(Exception) as err:
            decode_forward(poison)
        assert not isinstance(err.value, FormatError)


def test_a_forwarded_event_that_does_not_validate_is_dead_lettered_and_the_batch_goes_on():
    stage = sc.stages()["account"]
    stage.mark(0, {"likes/0": Mark(False, 0, False, sc.T0)})
    good = {"event_id": "g", "ts": sc.T0, "platform": "instagram", "account_id": "brand-a", "post_id": "p", "actor_id": "u"}
    items = [
        Forwarded("likes", "likes", 0, 1, "instagram|brand-a", {"event_id": "b1", "ts": "yesterday"}, True, sc.T0),
        Forwarded("nope", "nope", 0, 2, "instagram|brand-a", dict(good, event_id="b2"), True, sc.T0),
        Forwarded("likes", "likes", 0, 3, "instagram|brand-a", [1, 2], True, sc.T0),
        Forwarded("likes", "likes", 0, 4, "instagram|brand-a", good, True, sc.T0),
    ]
    out = StageOutput()
    stage.process(0, items, out)
    stage.clock(0).current = sc.T0 + 1000
    assert [(r.reason, r.raw.offset) for r in out.rejected] == [("bad_internal", 1), ("bad_internal", 2), ("bad_internal", 3)]
    assert "account stage" in out.rejected[0].detail and out.rejected[0].event_id == "b1"
    assert out.accepted["likes"] == 1 and samples(stage)[("socialpulse_engagements", ("1h",))] == 1.0
