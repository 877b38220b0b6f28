"""State documents in small changelog records ("pages"), written atomically per flush.

A key's state (every family's slot) and a partition's closed window are JSON
documents that can grow with what a key does: thousands of conversations, posts,
agents. Written whole, one hot account made records of megabytes (Kafka's default
limit is 1 MB) and every change rewrote all of it. Here a document is cut into
pages along its own structure, like Flink's state per key *and namespace*:

* a dict whose JSON exceeds ``SPLIT_AT`` (4 KiB) is cut into its entries, each
  entry a page or cut again (a family's slot, then its conversations, windows,
  posts, agents, cohort days: the units that change independently);
* anything else (a list, a long string) over ``CHUNK_AT`` is cut into chunks of
  its JSON text, base64 in the record.

So no record exceeds ``RECORD_MAX`` (64 KiB) plus its key, whatever a key's
activity, and a flush rewrites only the pages whose bytes changed.

**Atomic flushes.** A stage writes the changes of a commit interval as one flush
of a partition, numbered ``epoch``. Every page record's key carries the epoch it
was written in; the flush ends with the partition's *marker* (its epoch and
watermark); the versions a flush superseded are tombstoned only after it. Kafka
keeps a prefix of what a killed worker sent, so after a restart: a page of an
epoch beyond the marker belongs to a flush that never completed (its input was
not committed and comes again) and is dropped; of the versions of a page at or
below the marker the newest wins; a page removed in a flush is written as a
*removal note* first, so a removal is as atomic as a change. Compaction can never
drop a committed version for an uncommitted one: their keys differ.

Key of a page record: ``\\x01`` + JSON ``[document, epoch, chunk, *path]`` (chunk
``""`` for a whole node, ``"i/n"`` for chunk i of n). Value: ``{"~v": 2, "n": node}``,
``{"~v": 2, "b": base64}`` or the removal note ``{"~v": 2, "x": 1}``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

import orjson

__all__ = [
    "PAGE", "SPLIT_AT", "CHUNK_AT", "RECORD_MAX", "PageId", "Directory", "paginate", "assemble", "page_key",
    "parse_key", "doc_prefix", "encode_page", "decode_page", "changes", "resolve", "PageError",
    "FormatError", "check_format", "STATE_FORMAT",
]

#: first byte of a page record's key (keys of stages' documents never start with a control character)
PAGE = b"\x01"
#: a dict node whose JSON is longer than this is written as one page per entry
SPLIT_AT = 4 * 1024
#: any other node longer than this is written in chunks
CHUNK_AT = 48 * 1024
_CHUNK = 45 * 1024  # raw bytes per chunk (base64: 60 KiB)
#: the documented bound on a state record's value (its key adds the document's name and path)
RECORD_MAX = 64 * 1024

_V = 2
_WHOLE = b'{"~v":2,"n":'
_CHUNKED = b'{"~v":2,"b":"'
_NOTE = b'{"~v":2,"x":1}'
_OPT = orjson.OPT_NON_STR_KEYS

#: (path of dict keys from the document's root, chunk: "" whole or "i/n")
PageId = tuple[tuple[str, ...], str]
#: what is written of a document: page id -> (epoch it was written in, hash of its payload)
Directory = dict[PageId, tuple[int, int]]


#: format version of state records (``streams.keyed.FORMAT``)
STATE_FORMAT = _V


class FormatError(ValueError):
    """A record written in a format version this socialpulse does not know (a newer one)."""


def check_format(version: Any, what: str, newest: int = STATE_FORMAT) -> None:
    if type(version) is not int or not 0 <= version <= newest:
        raise FormatError(
            f"{what} has format version {version!r}; this socialpulse reads versions 0 to {newest}. "
            "It was written by a newer socialpulse (or by something else): run that version, or see "
            "docs/operations.md, 'Poison records, state formats and upgrades'")


class PageError(ValueError):
    """A document's pages do not fit together (a chunk missing, a node twice)."""


def paginate(doc: Any, raw: bytes | None = None, path: tuple[str, ...] = ()) -> dict[PageId, bytes]:
    """A document's pages: page id -> payload (the node's JSON, or a slice of it); with
    ``path``, the pages of the node ``doc`` at that path of a document already split above it."""
    out: dict[PageId, bytes] = {}
    _visit(doc, path, orjson.dumps(doc, option=_OPT) if raw is None else raw, out)
    return out


def _visit(node: Any, path: tuple[str, ...], raw: bytes, out: dict[PageId, bytes]) -> None:
    if len(raw) > SPLIT_AT and type(node) is dict and node:
        dumps = orjson.dumps
        for k, v in node.items():
            _visit(v, (*path, k if type(k) is str else str(k)), dumps(v, option=_OPT), out)
    elif len(raw) <= CHUNK_AT:
        out[(path, "")] = raw
    else:
        n = -(-len(raw) // _CHUNK)
        for i in range(n):
            out[(path, f"{i + 1}/{n}")] = raw[i * _CHUNK:(i + 1) * _CHUNK]


def assemble(pages: dict[PageId, bytes]) -> Any:
    """The document whose pages (payloads) these are."""
    root: Any = None
    chunks: dict[tuple[str, ...], dict[int, bytes]] = {}
    counts: dict[tuple[str, ...], int] = {}
    nodes: list[tuple[tuple[str, ...], Any]] = []
    for (path, chunk), payload in pages.items():
        if chunk:
            i, n = (int(x) for x in chunk.split("/"))
            if counts.setdefault(path, n) != n:
                raise PageError(f"chunks of {list(path)} disagree on their count")
            chunks.setdefault(path, {})[i] = payload
        else:
            nodes.append((path, orjson.loads(payload)))
    for path, parts in chunks.items():
        if sorted(parts) != list(range(1, counts[path] + 1)):
            raise PageError(f"chunks of {list(path)} missing")
        nodes.append((path, orjson.loads(b"".join(parts[i] for i in sorted(parts)))))
    for path, node in nodes:
        if not path:
            if root is not None:
                raise PageError("the document's root is written twice")
            root = node
            continue
        if root is None:
            root = {}
        parent = root
        for k in path[:-1]:
            child = parent.get(k) if type(parent) is dict else None
            if child is None:
                child = parent[k] = {}
            elif type(child) is not dict:
                raise PageError(f"{list(path)} lies under a node that is not an object")
            parent = child
        if type(parent) is not dict or path[-1] in parent:
            raise PageError(f"{list(path)} is written twice")
        parent[path[-1]] = node
    return root


def page_key(doc: str, epoch: int, pid: PageId) -> bytes:
    return PAGE + orjson.dumps([doc, epoch, pid[1], *pid[0]])


def parse_key(key: bytes) -> tuple[str, int, PageId]:
    data = orjson.loads(key[1:])
    if type(data) is not list or len(data) < 3 or type(data[0]) is not str or type(data[1]) is not int or type(data[2]) is not str:
        raise PageError(f"not a page key: {key[:80]!r}")
    return data[0], data[1], (tuple(str(p) for p in data[3:]), data[2])


def doc_prefix(doc: str) -> bytes:
    """Every page key of ``doc`` starts with this (and no other document's does)."""
    return PAGE + orjson.dumps([doc])[:-1] + b","


def encode_page(pid: PageId, payload: bytes) -> bytes:
    if pid[1]:
        return _CHUNKED + base64.b64encode(payload) + b'"}'
    return _WHOLE + payload + b"}"


def decode_page(value: bytes) -> bytes | None:
    """A page record's payload (None for a removal note); raises for anything else
    (``FormatError`` via ``check`` for a version this code does not know)."""
    if value.startswith(_WHOLE):
        return value[len(_WHOLE):-1]
    if value.startswith(_CHUNKED):
        return base64.b64decode(value[len(_CHUNKED):-2], validate=True)
    if value == _NOTE:
        return None
    data = orjson.loads(value)
    if type(data) is not dict:
        raise PageError("a page record is not a JSON object")
    check_format(data.get("~v", 0), "a state page")
    raise PageError("a page record of an unknown shape")


def changes(doc: str, epoch: int, old: Directory, pages: dict[PageId, bytes] | None) -> tuple[
        list[tuple[bytes, bytes | None]], list[tuple[bytes, bytes | None]], Directory]:
    """What flush ``epoch`` writes for a document now made of ``pages`` (None: removed),
    given what was written of it (``old``): records before the marker (changed pages,
    removal notes), records after it (tombstones of what they superseded), and the
    document's new directory."""
    before: list[tuple[bytes, bytes | None]] = []
    after: list[tuple[bytes, bytes | None]] = []
    new: Directory = {}
    for pid, payload in (pages or {}).items():
        h = hash(payload)
        was = old.get(pid)
        if was is not None and was[1] == h:
            new[pid] = was
            continue
        before.append((page_key(doc, epoch, pid), encode_page(pid, payload)))
        new[pid] = (epoch, h)
        if was is not None and was[0] != epoch:
            after.append((page_key(doc, was[0], pid), None))
    for pid, (e, _) in old.items():
        if pages is not None and pid in pages:
            continue
        if e != epoch:
            note = page_key(doc, epoch, pid)
            before.append((note, _NOTE))
            after.append((page_key(doc, e, pid), None))
            after.append((note, None))
        else:  # written earlier in this very flush (a flush is one epoch): just gone
            after.append((page_key(doc, e, pid), None))
    return before, after, new


def resolve(versions: Iterable[tuple[int, PageId, bytes, bytes | None]], marker: int) -> tuple[
        dict[PageId, bytes], Directory, list[bytes]]:
    """A document as recovered: of its records ``(epoch, page id, key, payload or None for a
    note)``, for each page the newest version at or below the ``marker`` wins (a note: the page
    is gone). Returns its pages, its directory, and the keys of every other record (garbage
    to tombstone: superseded versions, notes, records of a flush that never completed)."""
    best: dict[PageId, tuple[int, bytes, bytes | None]] = {}
    garbage: list[bytes] = []
    for epoch, pid, key, payload in versions:
        if epoch > marker:
            garbage.append(key)
            continue
        was = best.get(pid)
        if was is None or epoch > was[0]:
            if was is not None:
                garbage.append(was[1])
            best[pid] = (epoch, key, payload)
        else:
            garbage.append(key)
    pages: dict[PageId, bytes] = {}
    directory: Directory = {}
    for pid, (epoch, key, payload) in best.items():
        if payload is None:
            garbage.append(key)
            continue
        pages[pid] = payload
        directory[pid] = (epoch, hash(payload))
    return pages, directory, garbage
