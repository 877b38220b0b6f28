"""Hostile input: whatever bytes arrive, ingest answers with events or rejections
that carry a known reason; it never raises, so it never stops a worker."""

import json
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.events import TOPIC_MODELS, Event
from schemas.results import REJECT_REASONS
from streams.ingest import Raw, Rejection, dead_letter, decode

NOW = int(time.time() * 1000)


def dumps(doc) -> bytes:
    # stdlib json: it writes integers of any size, as a hostile producer would
    return json.dumps(doc).encode()
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
VALID = {
    "likes": {"platform": "x", "account_id": "a", "post_id": "p", "actor_id": "u"},
    "impressions": {"platform": "x", "account_id": "a", "post_id": "p", "count": 3},
    "audience": {"platform": "x", "account_id": "a", "followers": 3},
    "clicks": {"platform": "x", "account_id": "a", "actor_id": "u"},
    "messages": {"platform": "x", "account_id": "a", "conversation_id": "c", "direction": "inbound", "author_id": "u"},
    "orders": {"order_id": "o", "actor_id": "u", "amount": "9.99", "currency": "USD"},
    "spend": {"platform": "x", "account_id": "a", "campaign_id": "c", "amount": "1", "currency": "EUR"},
    "leads": {"platform": "x", "account_id": "a", "actor_id": "u", "kind": "form"},
    "sessions": {"actor_id": "u", "source": "instagram", "account_id": "a", "duration_s": 30.5, "pages": 3},
    "checkouts": {"checkout_id": "k", "actor_id": "u", "status": "started", "amount": "20", "currency": "USD"},
    "posts": {"platform": "x", "account_id": "a", "post_id": "p", "author_id": "s", "kind": "share",
              "target_post_id": "q"},
    "connections": {"platform": "x", "account_id": "a", "author_id": "s", "actor_id": "u", "status": "accepted",
                    "decision_maker": True},
}


def check(topic: str, value: bytes) -> list:
    items = decode(Raw(topic, 0, 1, value), TOPIC_MODELS[topic], 4096)
    assert items, "every record yields at least one outcome"
    for item in items:
        if isinstance(item, Rejection):
            assert item.reason in REJECT_REASONS and item.detail
            record = dead_letter(item)  # and it can always be dead-lettered
            assert record.reason == item.reason
        else:
            assert isinstance(item, Event)
    return items


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(topic=st.sampled_from(sorted(TOPIC_MODELS)), value=st.binary(max_size=300))
def test_random_bytes_never_raise(topic, value):
    check(topic, value)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(topic=st.sampled_from(sorted(TOPIC_MODELS)), field=st.text(max_size=20), junk=json_values)
def test_a_valid_event_with_any_field_replaced_never_raises(topic, field, junk):
    base = {"event_id": "e1", "ts": NOW} | VALID[topic]
    key = field if field else next(iter(VALID[topic]))
    check(topic, dumps(base | {key: junk}))


@settings(max_examples=200)
@given(topic=st.sampled_from(sorted(TOPIC_MODELS)), doc=json_values)
def test_any_json_document_never_raises(topic, doc):
    check(topic, dumps(doc))


def test_edge_cases_get_precise_reasons():
    like = {"event_id": "e", "ts": NOW, **VALID["likes"]}
    cases = [
        ("likes", b"[" * 2000 + b"]" * 2000, "not_json"),  # nested past the parser's depth limit
        ("impressions", dumps({"event_id": "e", "ts": NOW, **VALID["impressions"], "count": 10**30}), "invalid"),
        ("likes", dumps(like | {"ts": 10**30}), "invalid"),
        ("likes", dumps(like | {"ts": NOW + 10 * 86_400_000}), "invalid"),  # far future
        ("likes", dumps(like | {"ts": "1970-01-01T00:00:00Z"}), "invalid"),  # far past
        ("likes", b'{"event_id": "\\ud800", "ts": 1}', "not_json"),  # a lone surrogate
        ("likes", json.dumps(like | {"event_id": "\u00e9\U0001f642\u200b"}, ensure_ascii=False).encode(), None),
        ("likes", b"x" * 5000, "too_large"),
        ("orders", dumps({"event_id": "e", "ts": NOW, **VALID["orders"], "amount": "1e400"}), "invalid"),
    ]
    for topic, value, reason in cases:
        [item] = check(topic, value)
        assert getattr(item, "reason", None) == reason, (value[:60], item)
