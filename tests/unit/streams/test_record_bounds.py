"""The bound on every record socialpulse writes (``pages.RECORD_MAX``, 64 KiB, key and value)
beyond the changelogs (``test_pages.py``, ``test_flush.py``): forwarded events and marks on the
keyed topics, results, and dead letters, each at its largest."""

import base64
import hashlib
import time
from decimal import Decimal

import orjson
import pycountry

from schemas.events import Audience, Click, Credit, Impression, Lead, Like, Message
from streams import windows
from streams.engagement import Engagement
from streams.ingest import RAW_KEEP, Raw, Rejection, dead_letter, dead_letter_value
from streams.keyed import (
    WIRE_FORMAT,
    Forwarded,
    decode_forward,
    encode_forward,
    encode_marks,
    forward_records,
    marks_records,
    seen_chunks,
)
from streams.pages import RECORD_MAX
from streams.pipeline import FORWARD_CHUNK
from streams.windows import Mark, WindowSpec

MIN = 60_000
#: the longest ids the schemas accept (256 characters), of 4-byte UTF-8 characters and quotes
LONG = ("🔥" * 200 + '"\\' * 28)[:256]


def hot_event(i: int, ts: int) -> Message:
    return Message(event_id=f"e{i}-" + "x" * 100, ts=ts, platform="instagram", account_id=LONG, conversation_id=LONG,
                   direction="outbound", author_id=LONG, agent_id=LONG)


def test_a_forward_chunk_of_huge_events_is_split_by_bytes_in_order():
    now = int(time.time() * 1000)
    items = [Forwarded("messages", "p.messages", 3, i, f"instagram|{LONG}", hot_event(i, now), True, now)
             for i in range(2 * FORWARD_CHUNK)]
    one = len(encode_forward(items[:1]))
    assert one > 3_000  # a few KiB each: 500 of them would be over a megabyte
    records = list(forward_records(items, most=FORWARD_CHUNK))
    assert len(records) > 2 * 500 * one // RECORD_MAX
    assert max(len(r) for r in records) <= RECORD_MAX
    # the same layout and version as one record of them all: a reader of the last release reads it
    assert all(r.startswith(b"[%d," % WIRE_FORMAT) for r in records)
    decoded = [f for r in records for f in decode_forward(r)]  # type: ignore[union-attr]
    assert decoded == [decode_forward(encode_forward([f]))[0] for f in items]  # every event, once, in order
    assert [f.offset for f in decoded] == list(range(len(items)))


def test_small_events_still_go_at_most_forward_chunk_per_record():
    items = [Forwarded("likes", "likes", 0, i, "x|a", {"event_id": str(i)}, True, 1) for i in range(1201)]
    records = list(forward_records(items, most=FORWARD_CHUNK))
    assert [len(decode_forward(r)) for r in records] == [500, 500, 201]
    assert records[0] == encode_forward(items[:500])
    assert list(forward_records([])) == []


def test_marks_of_many_input_partitions_are_split():
    marks = {f"{'topic-' * 20}{i}/{p}": Mark(False, 1_700_000_000_000 + p, True, 1_700_000_000_000)
             for i in range(13) for p in range(100)}
    assert len(encode_marks(marks)) > RECORD_MAX
    records = marks_records(marks)
    assert len(records) > 1 and max(map(len, records)) <= RECORD_MAX
    merged: dict = {}
    for r in records:
        merged |= decode_forward(r)  # type: ignore[arg-type]
    assert merged == marks
    assert marks_records({}) == [encode_marks({})]


def test_ids_records_stay_bounded_with_non_ascii_ids():
    rows = [[f"instagram|{LONG}\x1f{'é' * 120}{i}", 1_700_000_000_000] for i in range(2_000)]
    for chunk in seen_chunks(rows):
        assert len(orjson.dumps({"~v": 2, "e": 123456, "ids": chunk})) <= RECORD_MAX


def rejection(value: bytes, reason: str = "too_large") -> Rejection:
    return Rejection(Raw("p.likes", 7, 123456789, value, 1), reason, "x" * 5_000)


def test_a_giant_dead_letter_keeps_its_start_its_length_and_its_digest():
    value = b'{"event_id": "' + b"a" * 1_000_000 + b'"}'
    raw = dead_letter_value(rejection(value))
    assert len(raw) <= RECORD_MAX
    letter = orjson.loads(raw)
    assert letter["raw_truncated"] is True and letter["raw_bytes"] == len(value)
    assert letter["raw_sha256"] == hashlib.sha256(value).hexdigest()
    assert letter["raw"] == value[:RAW_KEEP].decode() and letter["raw_encoding"] == "utf-8"
    assert letter["reason"] == "too_large" and (letter["partition"], letter["offset"]) == (7, 123456789)
    assert len(letter["detail"]) == 1024


def test_a_dead_letter_of_escapes_and_of_binary_stays_bounded():
    controls = b"\x01" * 900_000  # valid UTF-8, six bytes each as JSON
    letter = dead_letter(rejection(controls, "invalid"))
    assert len(letter.model_dump_json()) <= RECORD_MAX and letter.raw_truncated
    assert controls.decode().startswith(letter.raw) and letter.raw_bytes == 900_000
    binary = bytes(range(256)) * 4000  # not UTF-8: base64 of its start
    letter = dead_letter(rejection(binary, "not_utf8"))
    assert len(letter.model_dump_json()) <= RECORD_MAX and letter.raw_encoding == "base64"
    assert binary.startswith(base64.b64decode(letter.raw)) and letter.raw_sha256 == hashlib.sha256(binary).hexdigest()
    # with a multi-byte character cut in two: the partial one is left out
    cut = "é".encode() * 400_000
    assert cut.decode().startswith(dead_letter(rejection(cut)).raw)


def test_a_small_dead_letter_is_whole_and_says_nothing_of_truncation():
    letter = orjson.loads(dead_letter_value(rejection(b'{"a": 1}', "invalid")))
    assert letter["raw"] == '{"a": 1}' and letter["raw_truncated"] is False
    assert letter["raw_bytes"] is None and letter["raw_sha256"] is None


SPEC = WindowSpec(bucket_ms=MIN, trailing_ms=(60 * MIN,), closed_ms=(60 * MIN,), grace_ms=5 * MIN, allowed_ms=180 * MIN)


def test_the_largest_possible_results_stay_under_the_bound():
    """An account with the longest ids the schemas accept, 3,000 posts each with every event
    kind and revenue in every currency, and TOP_POSTS at its maximum (1,000)."""
    now = int(time.time() * 1000)
    t0 = now - now % (60 * MIN) - 2 * 60 * MIN
    acct = {"platform": "instagram", "account_id": LONG}
    key = f"instagram|{LONG}"
    currencies = sorted(c.alpha_3 for c in pycountry.currencies)[:150]
    fam = Engagement(SPEC, top_n=1000)
    state = fam.new_state()
    ev: list = [Audience(event_id="a", ts=t0, **acct, followers=123_456_789)]
    for i in range(3_000):
        post = f"{i:05d}{LONG}"[:256]
        ts = t0 + i
        ev += [Like(event_id=f"l{i}", ts=ts, **acct, post_id=post, actor_id=LONG),
               Impression(event_id=f"i{i}", ts=ts, **acct, post_id=post, count=987_654_321),
               Click(event_id=f"c{i}", ts=ts, **acct, actor_id=LONG, post_id=post),
               Lead(event_id=f"d{i}", ts=ts, **acct, actor_id=LONG, post_id=post)]
        for cur in currencies if i < 40 else currencies[:3]:
            ev.append(Credit(event_id=f"k{i}{cur}", ts=ts, **acct, post_id=post, order_id=LONG, currency=cur,
                             revenue={"last_touch": Decimal("999999999999.123456"), "linear": Decimal("1")}))
    fam.apply(key, state, ev, t0)
    (cw,) = windows.close_due(state["win"], t0 + 66 * MIN, SPEC)
    results = fam.results(key, cw, state, 7)
    sizes = {(r.metric, getattr(r, "page", None), getattr(r, "currency", None)): len(r.key.encode()) + len(r.model_dump_json().encode())
             for r in results}
    largest = max(sizes.values())
    print(f"{len(results)} results, the largest {largest:,} B")
    assert largest <= RECORD_MAX
    pages = [r for r in results if r.metric == "posts"]
    assert sum(len(r.posts) for r in pages) == 3_000 and {r.pages for r in pages} == {len(pages)}
    assert [p["post_id"] for r in pages for p in r.posts] == sorted(f"{i:05d}{LONG}"[:256] for i in range(3_000))
    top = next(r for r in results if r.metric == "top_posts")
    assert 0 < len(top.top_posts) < 1000 and top.value == len(top.top_posts)  # cut where the bytes end
    assert {r.currency for r in results if r.metric == "top_posts_by_revenue"} == set(currencies)
