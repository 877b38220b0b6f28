import orjson
from aiokafka.partitioner import DefaultPartitioner

from schemas.events import TOPIC_MODELS, Like
from streams.ingest import Raw, dead_letter, decode, decode_batch, partition_for, prune_seen, seen_before


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
    seen: dict[str, int] = {}
    assert not seen_before(seen, "a", 1_000)
    assert seen_before(seen, "a", 1_000)
    assert not seen_before(seen, "b", 50_000)
    prune_seen(seen, watermark=70_000, horizon=60_000)  # "a" (ts 1000) is older than 10 000
    assert seen == {"b": 50_000}


def test_partitioning_agrees_with_kafkas_default_partitioner():
    part = DefaultPartitioner()
    for key in ("instagram|brand-1", "x|a", "tiktok|" + "z" * 200, "u12345"):
        assert partition_for(key, 4) == part(key.encode(), [0, 1, 2, 3], [0, 1, 2, 3])
        assert partition_for(key, 12) == part(key.encode(), list(range(12)), list(range(12)))
