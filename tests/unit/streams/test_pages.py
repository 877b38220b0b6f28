"""State documents in pages (``streams.pages``): every record bounded, a flush atomic
whatever prefix of it Kafka kept, and a document read back exactly."""

import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.pages import (
    RECORD_MAX,
    FormatError,
    PageError,
    assemble,
    changes,
    decode_page,
    page_key,
    paginate,
    parse_key,
    resolve,
)

json_leaf = st.one_of(st.integers(-10**12, 10**12), st.text(max_size=40), st.booleans(), st.none(),
                      st.floats(allow_nan=False, allow_infinity=False))
json_doc = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=30), st.dictionaries(st.text(max_size=12), inner, max_size=30)),
    max_leaves=400,
)


def big(n_convs: int, msgs: int = 6) -> dict:
    """A key's state the shape of a busy account: many conversations, a long list, small fields."""
    return {
        "engagement": {"win": {"w": {"60000": {str(t): {"eng": t, "posts": {f"p{i}": i for i in range(50)}} for t in range(30)}}},
                       "fh": [[t, t * 3] for t in range(9000)]},  # a list of ~150 KB: written in chunks
        "replies": {"convs": {f"c{i}": {"m": [[i * 1000 + j, 0, f"e{i}-{j}"] for j in range(msgs)]} for i in range(n_convs)},
                    "clamped": 0},
    }


def records(doc: dict, name: str = "instagram|brand", epoch: int = 1) -> list[tuple[bytes, bytes | None]]:
    before, after, _ = changes(name, epoch, {}, paginate(doc))
    return before + after


def read(recs: list[tuple[bytes, bytes | None]], marker: int) -> object:
    versions = [(parse_key(k)[1], parse_key(k)[2], k, decode_page(v)) for k, v in recs if v is not None]
    return assemble(resolve(versions, marker)[0])


@given(json_doc)
@settings(max_examples=60, deadline=None)
def test_any_document_reads_back_exactly_from_its_pages(doc):
    doc = {"slot": doc, "other": [doc, doc]}
    assert read(records(doc), 1) == orjson.loads(orjson.dumps(doc))


def test_a_hot_document_of_megabytes_is_written_in_records_of_at_most_64_kib():
    doc = big(8000)
    whole = len(orjson.dumps(doc))
    recs = records(doc)
    assert whole > 1_000_000  # more than Kafka's default record limit, written whole
    assert max(len(v) for _, v in recs if v is not None) <= RECORD_MAX
    assert max(len(k) for k, _ in recs) < 200
    assert read(recs, 1) == doc


def test_a_change_rewrites_only_the_pages_that_changed():
    doc = big(2000)
    pages = paginate(doc)
    _, _, directory = changes("k", 1, {}, pages)
    doc["replies"]["convs"]["c7"]["m"].append([99, 1, "reply"])
    doc["replies"]["convs"]["c8000"] = {"m": []}
    del doc["replies"]["convs"]["c9"]
    before, after, _ = changes("k", 2, directory, paginate(doc))
    written = sorted((parse_key(k)[2][0], v == b'{"~v":2,"x":1}') for k, v in before)
    assert written == [(("replies", "convs", "c7"), False), (("replies", "convs", "c8000"), False),
                       (("replies", "convs", "c9"), True)]  # two pages and one removal note
    # after the marker: the superseded version of c7, c9's version and its note
    assert sorted(parse_key(k)[2][0][-1] for k, v in after) == ["c7", "c9", "c9"] and all(v is None for _, v in after)


@pytest.mark.parametrize("seed", range(40))
def test_a_flush_cut_anywhere_reads_as_the_last_complete_one(seed):
    """Kafka keeps a prefix of what a killed worker sent: whatever the prefix of a flush, the
    document read back is that of the last flush whose marker made it, never a mix."""
    rng = random.Random(seed)
    doc: dict = {"convs": {f"c{i}": {"m": [i] * 200} for i in range(30)}, "n": 0}
    log: dict[bytes, bytes] = {}  # the changelog, compacted: the newest value per key
    directory: dict = {}
    marker, states = 0, {0: None}
    flushes = rng.randint(2, 6)
    for epoch in range(1, flushes + 1):
        for _ in range(rng.randint(1, 8)):  # the changes of one commit interval
            what = rng.random()
            c = f"c{rng.randint(0, 45)}"
            if what < 0.4:
                doc["convs"].setdefault(c, {"m": []})["m"].append(epoch)
            elif what < 0.6:
                doc["convs"].pop(c, None)
            elif what < 0.7:
                doc["convs"] = {k: v for k, v in list(doc["convs"].items())[:3]}  # small again: one page
            else:
                doc["n"] += 1
        before, after, directory = changes("k", epoch, directory, paginate(doc))
        flush = [*before, (b"marker", orjson.dumps(epoch)), *after]
        cut = len(flush) if epoch < flushes else rng.randint(0, len(flush))  # the last one is cut
        for key, value in flush[:cut]:
            if key == b"marker":
                marker = orjson.loads(value)
            elif value is None:
                log.pop(key, None)
            else:
                log[key] = value
        states[epoch] = orjson.loads(orjson.dumps(doc))
    assert read(list(log.items()), marker) == states[marker]


def test_pages_of_a_flush_that_never_completed_are_garbage_and_newer_epochs_win():
    one = records({"a": 1}, epoch=1)
    two = records({"a": 2}, epoch=2)
    versions = [(parse_key(k)[1], parse_key(k)[2], k, decode_page(v)) for k, v in one + two if v is not None]
    pages, _, garbage = resolve(versions, marker=1)
    assert assemble(pages) == {"a": 1} and garbage == [two[0][0]]
    pages, _, garbage = resolve(versions, marker=2)
    assert assemble(pages) == {"a": 2} and garbage == [one[0][0]]


def test_a_page_of_an_unknown_version_or_shape_is_refused():
    with pytest.raises(FormatError, match="format version 3"):
        decode_page(b'{"~v":3,"n":1}')
    with pytest.raises(PageError):
        decode_page(b'{"~v":2,"q":1}')
    with pytest.raises(PageError):
        parse_key(b"\x01[1,2]")
    with pytest.raises(PageError, match="missing"):
        assemble({((), "1/2"): b"[1,"})
    key = page_key("k", 3, (("a", "b"), ""))
    assert parse_key(key) == ("k", 3, (("a", "b"), ""))
