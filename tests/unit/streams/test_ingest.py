import orjson
from aiokafka.partitioner import DefaultPartitioner

from schemas.events import TOPIC_MODELS, Like
from streams.ingest import Raw, SeenIds, dead_letter, decode, decode_batch, partition_for


def like(i, **over):
    return {"event_id": f"e{i}", "ts": 1767603600000 + i, "platform": "x", "account_id": "a", "post_id": "p",
            "actor_id": "u"} | over


def test_a_json_array_record_validates_each_event_on_its_own():
    value = orjson.dumps([like(1), like(2, platform="myspace"), like(3)])
    items = decode(Raw("likes", 0, 1, value), Like, 65_536)
    assert [type(i).__name__ for i in items] == ["Like", "Rejection", "Like"]
    assert items[1].value == orjson.dumps(like(2, platform="myspace"))  # only the bad event is dead-lettered
    assert items[1].event_id == "e2"


def test_newline_delimited_json_validates_each_line():
    value = b"\n".join([orjson.dumps(like(1)), b"{broken", orjson.dumps(like(3))]) + b"\n"
    items = decode(Raw("likes", 0, 1, value), Like, 65_536)
    assert [type(i).__name__ for i in items] == ["Like", "Rejection", "Like"]
    assert items[1].reason == "not_json" and items[1].value == b"{broken"


def test_decode_batch_keeps_input_order_and_splits_good_from_bad():
    raws = [Raw("likes", 0, n, orjson.dumps(like(n)) if n % 2 else b"nope") for n in range(6)]
    good, bad = decode_batch(raws, {"likes": TOPIC_MODELS["likes"]}, 65_536)
    assert [r.offset for r, _ in good] == [1, 3, 5]
    assert [b.raw.offset for b in bad] == [0, 2, 4]


def test_dead_letter_keeps_source_position_reason_and_raw_value():
    rej = decode(Raw("likes", 3, 99, b'{"event_id": "z"'), Like, 65_536)[0]
    dl = dead_letter(rej, now_ms=1767603600000)
    assert (dl.source_topic, dl.partition, dl.offset, dl.reason) == ("likes", 3, 99, "not_json")
    assert dl.raw == '{"event_id": "z"' and dl.raw_encoding == "utf-8"
    assert dl.rejected_at == "2026-01-05T09:00:00Z"


def test_dead_letter_of_binary_garbage_is_base64():
    rej = decode(Raw("likes", 0, 1, b"\xff\x00\x80"), Like, 65_536)[0]
    dl = dead_letter(rej)
    assert dl.reason == "not_utf8" and dl.raw_encoding == "base64" and dl.raw == "/wCA"


def test_a_repeated_event_id_is_seen_once_within_the_horizon():
    seen = SeenIds()
    assert seen.add("a", 1_000)
    assert not seen.add("a", 1_000)
    first = seen.flush()
    assert first is not None and first[1] == [["a", 1_000]]
    assert seen.flush() is None  # nothing new since
    assert seen.add("b", 50_000)
    second = seen.flush()
    assert second is not None and second[1] == [["b", 50_000]]  # a flush writes only its own ids
    assert seen.clock == 50_000  # the newest arrival
    assert seen.expire(70_000, horizon=60_000) == []  # just written: kept while its offsets may be uncommitted
    assert seen.expire(70_000, horizon=60_000, settle_s=0) == [first[0]]  # "a" (arrived 1000) is older than 10 000
    assert seen.ids == {"b": 50_000}
    assert seen.add("a", 1_000)  # forgotten with its record


def test_seen_ids_are_rebuilt_from_their_records_and_a_late_id_is_not_kept():
    seen = SeenIds(epoch=1)
    seen.add("x", 5)
    seen.add("late", 1)
    seen.forget_last("late")
    name, rows = seen.flush() or ("", [])
    again = SeenIds(epoch=2)
    again.restore(name, rows)
    assert not again.add("x", 5) and again.add("late", 1)


def test_partitioning_agrees_with_kafkas_default_partitioner():
    part = DefaultPartitioner()
    for key in ("instagram|brand-1", "x|a", "tiktok|" + "z" * 200, "u12345"):
        assert partition_for(key, 4) == part(key.encode(), [0, 1, 2, 3], [0, 1, 2, 3])
        assert partition_for(key, 12) == part(key.encode(), list(range(12)), list(range(12)))
