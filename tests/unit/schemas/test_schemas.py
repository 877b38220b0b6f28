import json
import time
from pathlib import Path

import orjson
import pytest

from schemas.events import TOPIC_MODELS, Like, Order
from schemas.export import render, schemas
from streams.ingest import Raw, decode

NOW = int(time.time() * 1000)


def raw(topic, value):
    return Raw(topic, 0, 7, value if isinstance(value, bytes) else orjson.dumps(value))


def like(**over):
    base = {"event_id": "e1", "ts": "2026-01-05T10:00:00+01:00", "platform": "instagram", "account_id": "a",
            "post_id": "p", "actor_id": "u"}
    return base | over


def one(topic, value, max_bytes=65_536):
    [item] = decode(raw(topic, value), TOPIC_MODELS[topic], max_bytes)
    return item


def test_rfc3339_with_offset_and_epoch_millis_are_the_same_instant():
    a = one("likes", like(ts="2026-01-05T09:00:00Z"))
    b = one("likes", like(ts="2026-01-05T10:00:00+01:00"))
    c = one("likes", like(ts=1767603600000))
    assert isinstance(a, Like) and a.ts == b.ts == c.ts == 1767603600000
    assert a.kind == "like"


def test_rfc3339_milliseconds_are_exact():
    # float arithmetic (timestamp() * 1000) made this instant 1093077386908
    assert one("likes", like(ts="2004-08-21T08:36:26.909Z")).ts == 1093077386909
    assert one("likes", like(ts="2004-08-21T10:36:26.909999+02:00")).ts == 1093077386909  # floor, not rounding


def test_a_batch_keeps_good_events_and_dead_letters_each_bad_one_with_its_own_json():
    items = decode(raw("likes", [like(event_id="a"), like(event_id="b", ts="yesterday"), 7, like(event_id="c")]),
                   Like, 65_536)
    assert [type(i).__name__ for i in items] == ["Like", "Rejection", "Rejection", "Like"]
    assert [i.event_id for i in items] == ["a", "b", None, "c"]
    assert items[1].reason == "invalid" and items[1].detail.startswith("ts: ")
    assert orjson.loads(items[1].value)["event_id"] == "b" and items[2].value == b"7"


def test_unknown_fields_are_ignored():
    assert isinstance(one("likes", like(colour="blue")), Like)


@pytest.mark.parametrize(
    ("topic", "value", "reason", "detail"),
    [
        ("likes", b"{not json", "not_json", "not JSON"),
        ("likes", b"\xff\xfe\x00garbage", "not_utf8", "not UTF-8"),
        ("likes", b"", "not_json", "empty"),
        ("likes", b"[]", "invalid", "empty JSON array"),
        ("likes", b"42", "invalid", "expected a JSON object"),
        ("likes", like(platform="myspace"), "invalid", "platform"),
        ("likes", {k: v for k, v in like().items() if k != "post_id"}, "invalid", "post_id: Field required"),
        ("likes", like(ts="2026-01-05T10:00:00"), "invalid", "no UTC offset"),
        ("likes", like(ts="yesterday"), "invalid", "not an RFC 3339"),
        ("likes", like(ts=NOW + 7_200_000), "invalid", "future"),
        ("likes", like(ts=1_700_000_000), "invalid", "before 2000"),
        ("likes", like(event_id=""), "invalid", "event_id"),
        ("likes", like(event_id="x" * 129), "invalid", "event_id"),
        ("likes", like(kind="poke"), "invalid", "kind"),
        ("likes", like(account_id=12), "invalid", "account_id: Input should be a valid string"),
        ("impressions", {"event_id": "i", "ts": NOW, "platform": "x", "account_id": "a", "post_id": "p", "count": -3}, "invalid", "count"),
        ("impressions", {"event_id": "i", "ts": NOW, "platform": "x", "account_id": "a", "post_id": "p", "count": "5"}, "invalid", "count"),
        ("audience", {"event_id": "f", "ts": NOW, "platform": "x", "account_id": "a", "followers": -1}, "invalid", "followers"),
        ("orders", {"event_id": "o", "ts": NOW, "order_id": "o1", "actor_id": "u", "amount": "-1", "currency": "USD"}, "invalid", "amount"),
        ("orders", {"event_id": "o", "ts": NOW, "order_id": "o1", "actor_id": "u", "amount": "10", "currency": "XYZ"}, "invalid", "currency"),
        ("messages", {"event_id": "m", "ts": NOW, "platform": "x", "account_id": "a", "conversation_id": "c", "direction": "sideways", "author_id": "u"}, "invalid", "direction"),
    ],
)
def test_invalid_input_is_rejected_with_a_precise_reason(topic, value, reason, detail):
    item = one(topic, value)
    assert not isinstance(item, TOPIC_MODELS[topic]), item
    assert item.reason == reason
    assert detail in item.detail


def test_oversize_value_is_too_large():
    item = one("likes", like(padding="x" * 2000), max_bytes=1000)
    assert item.reason == "too_large" and "1000" in item.detail


def test_money_is_decimal_not_float():
    order = one("orders", {"event_id": "o", "ts": NOW, "order_id": "o1", "actor_id": "u", "amount": "19.99", "currency": "EUR"})
    assert isinstance(order, Order) and str(order.amount) == "19.99" and order.status == "placed"


def test_committed_json_schemas_have_no_drift():
    folder = Path(__file__).resolve().parents[3] / "schemas" / "json"
    generated = schemas()
    committed = {p.name for p in folder.glob("*.json")}
    assert committed == set(generated), "run `make schemas`"
    for name, schema in generated.items():
        assert (folder / name).read_text() == render(schema), f"{name} drifted: run `make schemas`"
    assert json.loads((folder / "event.likes.schema.json").read_text())["required"] == [
        "event_id", "ts", "platform", "account_id", "post_id", "actor_id"]


def test_field_literals_carry_exactly_the_enum_values():
    from typing import get_args

    from schemas.events import (
        Direction,
        DirectionName,
        EngagementKind,
        KindName,
        OrderStatus,
        Platform,
        PlatformName,
        StatusName,
    )

    for enum, literal in ((Platform, PlatformName), (EngagementKind, KindName), (Direction, DirectionName),
                          (OrderStatus, StatusName)):
        assert set(get_args(literal)) == {m.value for m in enum}
