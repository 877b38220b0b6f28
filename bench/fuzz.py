"""Fuzz: hostile input into every input topic of one live worker; nothing may crash or vanish.

Starts its own embedded broker (Tansu) and one ``socialpulse worker`` (own data dir in
a temp dir, own web port), warms it up with valid
generator traffic until every keyed partition has a current watermark, then for
``--minutes`` sends, next to a trickle of valid generator traffic, ``--rate`` hostile
values per second (seeded, ``--seed``) into every input topic (with the topic prefix):

- random bytes (not UTF-8), ASCII noise, empty values and tombstones (null values);
- generator events truncated, with a field broken (missing, wrong type, bad enum,
  negative amount, ...), byte-flipped, or sent to the wrong topic;
- top-level non-objects, empty and non-object arrays, deeply nested JSON;
- huge numbers (beyond 64 bits, 1e308, 1e-999999999, 10**400 digits);
- unicode edge cases: RTL/zero-width marks, escaped NUL, emoji, ``|`` and newlines in ids,
  lone surrogates (escaped), raw NUL and control bytes, invalid and overlong UTF-8,
  UTF-16, byte-order marks; control characters (U+0000-U+001F, U+007F) in ``account_id``,
  ``actor_id`` or ``event_id`` (ids that become state keys) are ``invalid`` (kind
  ``ctl_id``), as are shopper ids that look like internal keys (``\\x00watermark|0``, kind
  ``internal_key``); in other ids they are fine;
- values over ``SOCIALPULSE_MAX_EVENT_BYTES`` (set to ``--max-event-bytes``);
- timestamps far in the future or past, without offset, epoch seconds, booleans;
- late events (behind the watermark by more than the grace) and duplicates;
- JSON arrays and newline-delimited JSON mixing good and bad events.

The oracle is the contract (README, CONTRACT.md, docs/operations.md), never the
project's own decoder: every value is built so its outcome is certain by construction
(``accept``, or ``reject`` with the reasons the contract allows), or it is counted as
``either`` (a byte flip that may or may not stay valid, a lone surrogate, a number
beyond the documented limits): then only "accepted + rejected = sent" is checked for it.
In arrays and NDJSON each element (line) is one unit.

At the end it waits for the worker to count every unit, reads the whole dead-letter
topic, and checks:

1. the worker is alive, ``/healthz`` answers 200 and ``/metrics`` parses;
2. per topic, ``socialpulse_events_total`` (all outcomes) equals the units sent: nothing
   silently dropped, nothing counted twice;
3. accepted events are within [certain accepts, certain accepts + either];
4. per reason, ``socialpulse_dead_letters_total`` is within what was sent for that reason;
   all rejections = all dead letters = records in ``socialpulse.dlq``, each a valid
   dead-letter record with a reason and a detail, per (topic, reason) as on /metrics;
5. every marked value (each JSON value carries a unique ``fzm-########`` marker) has
   exactly as many DLQ records as it has rejected units, with an allowed reason.

Prints tables by kind and by reason and PASS/FAIL (exit code 1 on FAIL).
``--restart`` then also stops the worker (SIGTERM) and starts it on the same data dir: it
must come back ready, hold as many state keys per stage as before (no traffic meanwhile)
and log no error. ``--skip KIND`` leaves a kind of value out (e.g. ``internal_key``).

    python bench/fuzz.py [--minutes 5] [--rate 100] [--seed 1] [--restart] [--skip KIND]

Ports: broker 39220 and worker web 39221 by default (another free pair in 39200-39299 if
taken). Ctrl-C (or SIGTERM) stops the worker and the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import random
import re
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.soak import pick_ports  # noqa: E402
from bench.throughput import worker_env  # noqa: E402
from schemas.events import INPUT_TOPICS  # noqa: E402
from schemas.results import DeadLetter  # noqa: E402
from streams import clients  # noqa: E402
from streams.broker import start_broker  # noqa: E402
from streams.broker import stop_process as stop  # noqa: E402
from streams.demo import scrape  # noqa: E402
from streams.generator import Traffic  # noqa: E402
from streams.settings import Settings  # noqa: E402

PREFIX = "fuzz."
DLQ = "socialpulse.dlq"
PORT_RANGE = range(39200, 39300)
PARTITIONS = 4
GRACE_MS = 5 * 60_000  # the default SOCIALPULSE_GRACE
MARK_RE = re.compile(rb"fzm-\d{8}(?!\d)")
PLATFORMS = ("linkedin", "x", "facebook", "instagram", "tiktok", "youtube", "pinterest", "other")
GEN_PLATFORMS = ("instagram", "tiktok", "facebook", "linkedin", "x")
REASONS = ("invalid", "not_json", "not_utf8", "too_large", "duplicate", "late")
ACCEPT, REJECT, EITHER = "accept", "reject", "either"
NOW = object()  # the default event time: now


# -- bookkeeping --------------------------------------------------------------------
@dataclass(frozen=True)
class Unit:
    """One event the worker must count once: accepted, or rejected with one of ``reasons``."""

    kind: str
    expect: str  # accept | reject | either
    reasons: frozenset[str] = frozenset()  # allowed reasons when rejected; empty = any
    mark: str | None = None  # marker findable in the dead letter's raw value
    case: str = ""  # for "either" units: which edge case, to report what the worker did with it


@dataclass
class Msg:
    topic: str  # bare input topic
    value: bytes | None
    units: list[Unit]
    key: bytes | None = None


@dataclass
class Ledger:
    values: Counter[str] = field(default_factory=Counter)  # kind -> messages
    units: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, expect) -> units
    by_topic: Counter[str] = field(default_factory=Counter)  # topic -> units
    accept: int = 0
    either: int = 0
    reject_exact: Counter[str] = field(default_factory=Counter)  # reason -> units with exactly that reason
    reject_multi: Counter[frozenset[str]] = field(default_factory=Counter)  # allowed-reason set -> units
    #: marker -> [min, max] DLQ records, allowed reasons (empty: any)
    marks: dict[str, list[int]] = field(default_factory=dict)
    mark_reasons: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    mark_kind: dict[str, str] = field(default_factory=dict)
    mark_case: dict[str, str] = field(default_factory=dict)
    sent_bytes: int = 0

    def add(self, msg: Msg) -> None:
        self.values[msg.units[0].kind if msg.units else "?"] += 1
        self.sent_bytes += len(msg.value or b"")
        for u in msg.units:
            self.units[(u.kind, u.expect)] += 1
            self.by_topic[msg.topic] += 1
            if u.expect == ACCEPT:
                self.accept += 1
            elif u.expect == EITHER:
                self.either += 1
            elif len(u.reasons) == 1:
                self.reject_exact[next(iter(u.reasons))] += 1
            else:
                self.reject_multi[u.reasons or frozenset(REASONS)] += 1
            if u.mark:
                lo_hi = self.marks.setdefault(u.mark, [0, 0])
                self.mark_kind[u.mark] = u.kind
                if u.case:
                    self.mark_case[u.mark] = u.case
                if u.expect == REJECT:
                    lo_hi[0] += 1
                    lo_hi[1] += 1
                    self.mark_reasons[u.mark] |= set(u.reasons or REASONS)
                elif u.expect == EITHER:
                    lo_hi[1] += 1
                    self.mark_reasons[u.mark] |= set(u.reasons or REASONS)

    @property
    def total_units(self) -> int:
        return sum(self.by_topic.values())


# -- building values ----------------------------------------------------------------
def iso(ms: int, offset_min: int = 0) -> str:
    tz = UTC if offset_min == 0 else timezone(timedelta(minutes=offset_min))
    text = datetime.fromtimestamp(ms / 1000, tz).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def now_ms() -> int:
    return int(time.time() * 1000)


def dumps(obj: Any, rng: random.Random) -> bytes:
    """JSON text, sometimes with non-ASCII escaped (both must be read the same)."""
    if rng.random() < 0.5:
        return orjson.dumps(obj)
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode()


#: ids that become state keys hold no control characters (U+0000-U+001F, U+007F): invalid
CTL_RE = re.compile(r"[\x00-\x1f\x7f]")
CTL_FIELDS = ("account_id", "actor_id", "event_id")

WEIRD_OK = [  # strings any 1-256 character id may hold (account_id, actor_id, event_id: no control characters)
    "\u202eevil-rtl", "rlm\u200fmark", "zw\u200b\u200c\u200djoin", "\U0001f469\u200d\U0001f469\u200d\U0001f467",
    "e\u0301\u0301\u0301", "nul\u0000inside", "pipe|in|id", "new\nline", "tab\there", "\u6f22\u5b57",
    "\ufeffbom-char", "non\uffffchar", "\ue000private", 'quote"and\\backslash', "line\u2028sep", "c1\u0085ctl",
    " leading and trailing ", "%00%2e%2e/..", "<script>alert(1)</script>", "' OR 1=1 --", "x" * 256,
    "\u00e9" * 256, "\U0001f600" * 100,
]


class Builder:
    """Hostile (and valid) values, each with the units the worker must count."""

    def __init__(self, rng: random.Random, pool: deque[tuple[str, bytes]], max_bytes: int,
                 skip: tuple[str, ...] = ()) -> None:
        self.rng = rng
        self.pool = pool  # fresh generator events (topic, payload), each used once
        self.max_bytes = max_bytes
        self.n = 0
        self.kinds: list[tuple[str, float]] = [
            ("random_bytes", 4), ("ascii_noise", 3), ("empty", 1), ("tombstone", 1), ("truncated", 6),
            ("broken_field", 14), ("byte_flip", 8), ("wrong_topic", 3), ("non_object", 3),
            ("deep_nesting", 2), ("deep_extra", 2), ("huge_number", 5), ("unicode_ok", 8), ("unicode_bad", 5),
            ("unicode_either", 3), ("oversized", 1), ("bad_ts", 6), ("late", 4), ("duplicate", 3),
            ("array", 6), ("ndjson", 3), ("valid", 6), ("internal_key", 0.3),
        ]
        unknown = set(skip) - {k for k, _ in self.kinds}
        if unknown:
            raise SystemExit(f"--skip: unknown kinds {sorted(unknown)}; kinds: {', '.join(k for k, _ in self.kinds)}")
        self._names = [k for k, _ in self.kinds if k not in skip]
        self._weights = [w for k, w in self.kinds if k not in skip]

    # -- helpers ---------------------------------------------------------------------
    def mark(self) -> str:
        self.n += 1
        return f"fzm-{self.n:08d}"

    def key(self) -> bytes | None:
        r = self.rng.random()
        if r < 0.3:
            return None
        if r < 0.9:
            return self.rng.randbytes(self.rng.randint(0, 40))
        return self.rng.randbytes(self.rng.randint(1000, 5000))

    def ts(self, ms: int | None = None) -> Any:
        """A valid event time for ``ms`` (default now) in one of the contract's forms."""
        ms = now_ms() - self.rng.randint(0, 2000) if ms is None else ms
        r = self.rng.random()
        if r < 0.4:
            return iso(ms)
        if r < 0.7:
            return iso(ms, self.rng.choice((-720, -300, 60, 330, 345, 840)))
        return ms

    def account(self) -> tuple[str, str]:
        if self.rng.random() < 0.6:
            p = self.rng.choice(GEN_PLATFORMS)
            return p, f"{p[:2]}-brand-{self.rng.randint(1, 3)}"
        return self.rng.choice(PLATFORMS), f"fz-acct-{self.rng.randint(1, 200)}"

    def event(self, topic: str, mark: str | None = None, ts: Any = NOW) -> dict[str, Any]:
        """A valid event for ``topic`` whose event_id is its marker (``ts`` default: now)."""
        rng = self.rng
        m = mark or self.mark()
        ev: dict[str, Any] = {"event_id": m, "ts": self.ts() if ts is NOW else ts, "mark": m}
        platform, account = self.account()
        if topic != "orders":
            ev |= {"platform": platform, "account_id": account}
        if topic == "likes":
            ev |= {"post_id": f"p{rng.randint(1, 50)}", "actor_id": f"fz-u{rng.randint(1, 5000)}",
                   "kind": rng.choice(("like", "comment", "share", "save", "reaction"))}
        elif topic == "impressions":
            ev |= {"post_id": f"p{rng.randint(1, 50)}", "count": rng.randint(1, 500)}
        elif topic == "audience":
            ev |= {"followers": rng.randint(0, 1_000_000)}
        elif topic == "clicks":
            ev |= {"actor_id": f"fz-u{rng.randint(1, 5000)}", "post_id": f"p{rng.randint(1, 50)}",
                   "campaign_id": f"c{rng.randint(1, 5)}", "click_id": f"ck-{m}"}
        elif topic == "messages":
            d = rng.choice(("inbound", "outbound"))
            ev |= {"conversation_id": f"conv-{rng.randint(1, 3000)}", "direction": d,
                   "author_id": f"fz-u{rng.randint(1, 5000)}" if d == "inbound" else "agent-fz"}
            if d == "outbound":
                ev |= {"agent_id": "agent-fz", "automated": rng.random() < 0.2}
        elif topic == "orders":
            ev |= {"order_id": f"ord-{m}", "actor_id": f"fz-u{rng.randint(1, 5000)}",
                   "amount": rng.choice((f"{rng.uniform(0, 500):.2f}", rng.randint(0, 900), "0.000001")),
                   "currency": rng.choice(("USD", "EUR", "GBP", "JPY")), "status": "placed"}
        elif topic == "spend":
            ev |= {"campaign_id": f"c{rng.randint(1, 5)}", "amount": f"{rng.uniform(0, 50):.2f}", "currency": "USD"}
        return ev

    def topic(self) -> str:
        return self.rng.choice(INPUT_TOPICS)

    def pooled(self) -> tuple[str, bytes]:
        if self.pool:
            return self.pool.popleft()
        t = self.topic()  # the pool ran dry: an event of our own, marker-free
        ev = self.event(t)
        ev["event_id"] = "gen-" + ev.pop("mark")[4:] + f"-{self.rng.getrandbits(24):06x}"
        return t, orjson.dumps(ev)

    def broken(self, topic: str, ev: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """``ev`` with one field the contract forbids (-> invalid)."""
        rng = self.rng
        common = [
            ("no_event_id", lambda e: e.pop("event_id")),
            ("empty_event_id", lambda e: e.__setitem__("event_id", "")),
            ("long_event_id", lambda e: e.__setitem__("event_id", e["mark"] + "x" * 121)),
            ("int_event_id", lambda e: e.__setitem__("event_id", rng.randint(0, 10**6))),
            ("null_event_id", lambda e: e.__setitem__("event_id", None)),
            ("no_ts", lambda e: e.pop("ts")),
        ]
        per_topic = {
            "likes": [("bad_kind", "kind", "dislike"), ("no_post_id", "post_id", KeyError), ("list_actor", "actor_id", [])],
            "impressions": [("count_0", "count", 0), ("count_neg", "count", -1), ("count_str", "count", "5"),
                            ("count_float", "count", 1.5), ("count_bool", "count", True), ("no_count", "count", KeyError)],
            "audience": [("followers_neg", "followers", -1), ("followers_str", "followers", "100"),
                         ("no_followers", "followers", KeyError)],
            "clicks": [("no_actor", "actor_id", KeyError), ("null_actor", "actor_id", None)],
            "messages": [("bad_direction", "direction", "sideways"), ("automated_str", "automated", "yes"),
                         ("no_conversation", "conversation_id", KeyError), ("dict_author", "author_id", {})],
            "orders": [("amount_neg", "amount", "-1"), ("amount_text", "amount", "abc"), ("amount_nan", "amount", "NaN"),
                       ("amount_inf", "amount", "Infinity"), ("currency_4", "currency", "EURO"),
                       ("bad_status", "status", "shipped"), ("no_order_id", "order_id", KeyError),
                       ("null_actor", "actor_id", None), ("no_currency", "currency", KeyError)],
            "spend": [("amount_neg", "amount", "-0.01"), ("currency_empty", "currency", ""),
                      ("no_campaign", "campaign_id", KeyError)],
        }[topic]
        if topic != "orders":
            per_topic = per_topic + [("bad_platform", "platform", "myspace"), ("caps_platform", "platform", "Instagram"),
                                     ("null_platform", "platform", None), ("no_account", "account_id", KeyError)]
        ev = dict(ev)
        if rng.random() < 0.3:
            name, fn = rng.choice(common)
            fn(ev)
            return ev, name
        name, fld, val = rng.choice(per_topic)
        if val is KeyError:
            ev.pop(fld, None)
        else:
            ev[fld] = val
        return ev, name

    # -- kinds -------------------------------------------------------------------------
    def make(self) -> list[Msg]:
        kind = self.rng.choices(self._names, self._weights)[0]
        return getattr(self, "k_" + kind)()

    def one(self, kind: str, topic: str, value: bytes | None, expect: str, reasons: tuple[str, ...] = (),
            mark: str | None = None, case: str = "") -> list[Msg]:
        return [Msg(topic, value, [Unit(kind, expect, frozenset(reasons), mark, case)], self.key())]

    def k_random_bytes(self) -> list[Msg]:
        body = self.rng.randbytes(self.rng.randint(0, 2000)).replace(b"\n", b"\x80")
        return self.one("random_bytes", self.topic(), b"\xff" + body, REJECT, ("not_utf8",))

    def k_ascii_noise(self) -> list[Msg]:
        chars = string.printable.replace("\n", "").replace("\r", "")
        body = "".join(self.rng.choice(chars) for _ in range(self.rng.randint(0, 500)))
        return self.one("ascii_noise", self.topic(), ("~" + body).encode(), REJECT, ("not_json",))

    def k_empty(self) -> list[Msg]:
        return self.one("empty", self.topic(), b"", REJECT, ("not_json", "invalid"))

    def k_tombstone(self) -> list[Msg]:
        msgs = self.one("tombstone", self.topic(), None, REJECT, ("not_json", "invalid"))
        msgs[0].key = msgs[0].key or b"tombstone"  # a null value needs a key
        return msgs

    def k_truncated(self) -> list[Msg]:
        topic, payload = self.pooled()
        cut = self.rng.randint(1, len(payload) - 1)
        return self.one("truncated", topic, payload[:cut], REJECT, ("not_json",))

    def k_broken_field(self) -> list[Msg]:
        if self.rng.random() < 0.5:
            topic, payload = self.pooled()
            ev = orjson.loads(payload)
            m = self.mark()
            ev["mark"] = m
        else:
            topic = self.topic()
            ev = self.event(topic)
            m = ev["mark"]
        bad, _name = self.broken(topic, ev)
        return self.one("broken_field", topic, dumps(bad, self.rng), REJECT, ("invalid",), m)

    def k_byte_flip(self) -> list[Msg]:
        topic, payload = self.pooled()
        buf = bytearray(payload)
        start = payload.find(b'"ts":')
        end = payload.find(b",", start) if start >= 0 else -1
        banned = set(range(start, end + 1)) if start >= 0 else set()
        spots = [i for i in range(1, len(buf) - 1) if i not in banned]  # never the braces, never ts
        for i in self.rng.sample(spots, min(len(spots), self.rng.randint(1, 3))):
            b = self.rng.randrange(256)
            buf[i] = b if b != 0x0A else 0x0B  # a newline would make it NDJSON (several units)
        return self.one("byte_flip", topic, bytes(buf), EITHER)

    def k_wrong_topic(self) -> list[Msg]:
        target = {"likes": "orders", "impressions": "messages", "audience": "clicks", "clicks": "audience",
                  "messages": "spend", "orders": "likes", "spend": "impressions"}
        topic = self.topic()
        ev = self.event(topic)
        return self.one("wrong_topic", target[topic], dumps(ev, self.rng), REJECT, ("invalid",), ev["mark"])

    def k_non_object(self) -> list[Msg]:
        topic = self.topic()
        items: list[Any] = [None, True, False, 0, -1.5, "event", "", {}, [], [[]], {"event_id": None}]
        r = self.rng.random()
        if r < 0.4:  # one top-level non-object (or an empty object)
            v = self.rng.choice([x for x in items if x != []])
            return self.one("non_object", topic, orjson.dumps(v), REJECT, ("invalid",))
        if r < 0.55:  # an empty array: no event in it, still one rejection
            return self.one("non_object", topic, b"[]", REJECT, ("invalid",))
        arr = [self.rng.choice(items) for _ in range(self.rng.randint(1, 12))]
        return [Msg(topic, orjson.dumps(arr), [Unit("non_object", REJECT, frozenset({"invalid"})) for _ in arr], self.key())]

    def k_deep_nesting(self) -> list[Msg]:
        topic = self.topic()
        d = self.rng.randint(1025, 2400)
        value = b"[" * d + b"]" * d if self.rng.random() < 0.5 else b'{"a":' * d + b"1" + b"}" * d
        return self.one("deep_nesting", topic, value, REJECT, ("not_json", "invalid"))

    def k_deep_extra(self) -> list[Msg]:
        """A valid event with an unknown field nested 50-200 deep: ignored, so accepted."""
        topic = self.topic()
        ev = self.event(topic)
        d = self.rng.randint(50, 200)
        nest: Any = "bottom"
        for i in range(d):
            nest = [nest] if i % 2 else {"n": nest}
        ev["extra"] = nest
        return self.one("deep_extra", topic, dumps(ev, self.rng), ACCEPT, (), ev["mark"])

    def k_huge_number(self) -> list[Msg]:
        rng = self.rng
        cases: list[tuple[str, str, bytes, str, tuple[str, ...]]] = [
            # (topic, field, literal, expect, reasons)
            ("impressions", "count", b"1" + b"0" * 30, REJECT, ("invalid", "not_json")),  # > 64 bits: not an int any more
            ("impressions", "count", b"-" + b"9" * 25, REJECT, ("invalid", "not_json")),
            ("impressions", "count", b"9223372036854775808", EITHER, ()),  # an int >= 1, beyond any sane count
            ("audience", "followers", b"18446744073709551615", EITHER, ()),
            ("audience", "followers", b"1e400", REJECT, ("invalid", "not_json")),  # infinite, not an int
            ("likes", "ts", b"100000000000000000000", REJECT, ("invalid", "not_json")),  # far future
            ("likes", "ts", b"1e300", REJECT, ("invalid", "not_json")),
            ("clicks", "ts", b"-9223372036854775809", REJECT, ("invalid", "not_json")),
            ("orders", "amount", b"1e308", EITHER, ()),
            ("orders", "amount", b'"1e999999999"', EITHER, ()),
            ("orders", "amount", b'"1E-999999999"', EITHER, ()),
            ("spend", "amount", b"-1e308", REJECT, ("invalid", "not_json")),
            ("spend", "extra", b"1" + b"0" * 400, EITHER, ()),  # an unknown field, valid JSON, no double can hold it
            ("messages", "extra", b"-0.0000000000000000000000000000000000001e-400", EITHER, ()),
        ]
        topic, fld, literal, expect, reasons = rng.choice(cases)
        ev = self.event(topic)
        ev[fld] = "@@NUM@@"
        value = orjson.dumps(ev).replace(b'"@@NUM@@"', literal)
        case = f"{topic}.{fld} = {literal[:24].decode()}{'...' if len(literal) > 24 else ''}"
        return self.one("huge_number", topic, value, expect, reasons, ev["mark"], case if expect == EITHER else "")

    def _id_fields(self, topic: str) -> list[str]:
        return {"likes": ["account_id", "post_id", "actor_id"], "impressions": ["account_id", "post_id"],
                "audience": ["account_id"], "clicks": ["account_id", "actor_id", "campaign_id", "click_id"],
                "messages": ["account_id", "conversation_id", "author_id"], "orders": ["order_id", "actor_id"],
                "spend": ["account_id", "campaign_id"]}[topic]

    def k_unicode_ok(self) -> list[Msg]:
        topic = self.topic()
        ev = self.event(topic)
        fields = self._id_fields(topic)
        for fld in self.rng.sample(fields, min(len(fields), self.rng.randint(1, 2))):
            ev[fld] = self.rng.choice(WEIRD_OK)
        if self.rng.random() < 0.3:
            ev["event_id"] = ev["mark"] + self.rng.choice(["\u202e", "\u0000", "\U0001f600", "|x", "\n"])
        ev["note"] = self.rng.choice(WEIRD_OK)
        if any(isinstance(ev.get(f), str) and CTL_RE.search(ev[f]) for f in CTL_FIELDS):
            # a control character in an id that becomes a state key: invalid for certain
            return self.one("ctl_id", topic, dumps(ev, self.rng), REJECT, ("invalid",), ev["mark"])
        return self.one("unicode_ok", topic, dumps(ev, self.rng), ACCEPT, (), ev["mark"])

    def k_unicode_bad(self) -> list[Msg]:
        topic = self.topic()
        ev = self.event(topic)
        ev["note"] = "@@X@@"
        text = orjson.dumps(ev)
        cases = [
            (b"raw\x00nul", ("not_json",)),  # control characters must be escaped in JSON strings
            (b"raw\x01ctl", ("not_json",)),
            (b"raw\x1btab", ("not_json",)),
            (b"bad\xffbyte", ("not_utf8",)),
            (b"overlong\xc0\xaf", ("not_utf8",)),
            (b"cesu\xed\xa0\x80", ("not_utf8",)),  # a surrogate encoded in UTF-8 is not UTF-8
            (b"cut\xe2\x82", ("not_utf8",)),
            (b"latin1 caf\xe9", ("not_utf8",)),
        ]
        raw, reasons = self.rng.choice(cases)
        if self.rng.random() < 0.15:  # UTF-16 with a byte-order mark: not UTF-8
            return self.one("unicode_bad", topic, b"\xff\xfe" + orjson.dumps(ev).decode().encode("utf-16-le"),
                            REJECT, ("not_utf8",))
        return self.one("unicode_bad", topic, text.replace(b'"@@X@@"', b'"' + raw + b'"'), REJECT, reasons, ev["mark"])

    def k_unicode_either(self) -> list[Msg]:
        topic = self.topic()
        ev = self.event(topic)
        r = self.rng.random()
        if r < 0.5:  # lone surrogates, escaped: valid JSON grammar, not Unicode text
            fld = self.rng.choice(["note", *self._id_fields(topic)])
            ev[fld] = "@@S@@"
            sur = self.rng.choice([b"\\ud800", b"\\udfff", b"x\\udc00y", b"\\ud83d"])
            value = orjson.dumps(ev).replace(b'"@@S@@"', b'"' + sur + b'"')
            case = "lone surrogate (escaped) in " + ("an unknown field" if fld == "note" else "an id")
        elif r < 0.7:  # a UTF-8 byte-order mark before the JSON
            value, case = b"\xef\xbb\xbf" + orjson.dumps(ev), "UTF-8 byte-order mark before the JSON"
        elif r < 0.85:  # 257 characters: over the models' limit, the contract names none
            ev[self.rng.choice(self._id_fields(topic))] = "\u00e9" * 257
            value, case = dumps(ev, self.rng), "id of 257 characters"
        else:  # a time with a space instead of T, or fractional epoch milliseconds
            ev["ts"] = self.rng.choice([iso(now_ms()).replace("T", " "), now_ms() + 0.5])
            value = dumps(ev, self.rng)
            case = "ts with a space for T" if isinstance(ev["ts"], str) else "ts as fractional epoch ms"
        return self.one("unicode_either", topic, value, EITHER, (), ev["mark"], case)

    def k_internal_key(self) -> list[Msg]:
        """Orders whose shopper id looks like the stage's internal watermark key: it starts with
        a control character (\\x00), so it is invalid and must never reach the state."""
        ev = self.event("orders")
        ev["actor_id"] = self.rng.choice(["\u0000watermark|0", "\u0000watermark|1", "\u0000watermark|x",
                                          "\u0000watermark|99", "\u0000watermark|-1"])
        return self.one("internal_key", "orders", orjson.dumps(ev), REJECT, ("invalid",), ev["mark"])

    def k_oversized(self) -> list[Msg]:
        topic = self.topic()
        size = self.rng.randint(self.max_bytes + 1, 3 * self.max_bytes)
        if self.rng.random() < 0.5:
            ev = self.event(topic)
            base = len(orjson.dumps(ev | {"pad": ""}))
            ev["pad"] = "p" * max(size - base, 1)
            return self.one("oversized", topic, orjson.dumps(ev), REJECT, ("too_large",), ev["mark"])
        return self.one("oversized", topic, self.rng.randbytes(size), REJECT, ("too_large",))

    def k_bad_ts(self) -> list[Msg]:
        rng = self.rng
        now = now_ms()
        cases: list[Any] = [
            iso(now + rng.randint(2 * 3_600_000, 400 * 86_400_000)),  # hours to a year ahead
            "9999-12-31T23:59:59.999Z", "3000-01-01T00:00:00+14:00",
            now + rng.randint(2 * 3_600_000, 10**12),
            "1999-12-31T23:59:59Z", "1970-01-01T00:00:00Z", "0001-01-01T00:00:00+00:00",
            946_684_799_999, 0, -1, now // 1000,  # epoch seconds, read as milliseconds: 1970
            iso(now)[:-1], iso(now)[:10], iso(now)[11:],  # no offset, date only, time only
            True, False, None, [], {}, "", "now", "yesterday", "2024-13-45T25:61:61Z",
        ]
        topic = self.topic()
        ev = self.event(topic, ts=rng.choice(cases))
        return self.one("bad_ts", topic, dumps(ev, rng), REJECT, ("invalid",), ev["mark"])

    def k_late(self) -> list[Msg]:
        rng = self.rng
        topic = self.topic()
        behind = rng.choice([rng.randint(GRACE_MS + 120_000, 3 * 86_400_000), now_ms() - 978_307_200_000])  # or 2001
        ev = self.event(topic, ts=self.ts(now_ms() - behind))
        return self.one("late", topic, dumps(ev, rng), REJECT, ("late",), ev["mark"])

    def k_duplicate(self) -> list[Msg]:
        topic = self.topic()
        ev = self.event(topic)
        m = ev["mark"]
        value = dumps(ev, self.rng)
        return [
            Msg(topic, value, [Unit("duplicate", ACCEPT, frozenset(), m)], self.key()),
            Msg(topic, value, [Unit("duplicate", REJECT, frozenset({"duplicate"}), m)], self.key()),
        ]

    def k_valid(self) -> list[Msg]:
        topic = self.topic()
        ev = self.event(topic)
        if self.rng.random() < 0.3:
            del ev["mark"]
        return self.one("valid", topic, dumps(ev, self.rng), ACCEPT, (), ev["event_id"])

    def _element(self, topic: str, kind: str) -> tuple[list[Any], list[Unit]]:
        """Elements of an array (or lines of NDJSON): good, broken, late, non-object, duplicated."""
        rng = self.rng
        r = rng.random()
        if r < 0.4:
            ev = self.event(topic)
            return [ev], [Unit(kind, ACCEPT, frozenset(), ev["mark"])]
        if r < 0.65:
            bad, _ = self.broken(topic, self.event(topic))
            return [bad], [Unit(kind, REJECT, frozenset({"invalid"}), bad["mark"])]
        if r < 0.75:
            ev = self.event(topic, ts=iso(now_ms() - rng.randint(GRACE_MS + 120_000, 86_400_000)))
            return [ev], [Unit(kind, REJECT, frozenset({"late"}), ev["mark"])]
        if r < 0.85:
            ev = self.event(topic)
            m = ev["mark"]
            return [ev, ev], [Unit(kind, ACCEPT, frozenset(), m), Unit(kind, REJECT, frozenset({"duplicate"}), m)]
        if r < 0.92:
            ev = self.event(topic, ts=rng.choice(["1999-01-01T00:00:00Z", iso(now_ms() + 3 * 3_600_000), True]))
            return [ev], [Unit(kind, REJECT, frozenset({"invalid"}), ev["mark"])]
        return [rng.choice([None, 7, "str", [], [1], True])], [Unit(kind, REJECT, frozenset({"invalid"}))]

    def k_array(self) -> list[Msg]:
        topic = self.topic()
        items: list[Any] = []
        units: list[Unit] = []
        for _ in range(self.rng.randint(1, 25)):
            its, us = self._element(topic, "array")
            candidate = orjson.dumps(items + its)
            if len(candidate) > self.max_bytes and items:
                break
            items += its
            units += us
        value = dumps(items, self.rng)
        if len(value) > self.max_bytes:  # one element alone too big (should not happen): skip
            return []
        return [Msg(topic, value, units, self.key())]

    def k_ndjson(self) -> list[Msg]:
        topic = self.topic()
        lines: list[bytes] = []
        units: list[Unit] = []
        while len(lines) < 2 or (self.rng.random() < 0.85 and len(lines) < 20):
            r = self.rng.random()
            if r < 0.12:
                lines.append(b'{"event_id": "broken' + self.mark().encode())
                units.append(Unit("ndjson", REJECT, frozenset({"not_json"})))
                continue
            its, us = self._element(topic, "ndjson")
            if isinstance(its[0], list):  # an array on one line is one (invalid) value
                us = [Unit("ndjson", REJECT, frozenset({"invalid"}))]
            lines += [orjson.dumps(x) for x in its]
            units += us
        sep = b"\r\n" if self.rng.random() < 0.2 else b"\n"
        value = sep.join(lines) + (sep if self.rng.random() < 0.5 else b"")
        if len(value) > self.max_bytes:
            return []
        return [Msg(topic, value, units, self.key())]


# -- the run -----------------------------------------------------------------------
def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except OSError:
        return 0, b""


def events_by(m: dict[str, list[tuple[dict[str, str], float]]], name: str, label: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for labels, v in m.get(name, []):
        out[labels.get(label, "")] += int(v)
    return out


class Run:
    def __init__(self, args: argparse.Namespace, bootstrap: str, base: str, worker: subprocess.Popen[bytes]) -> None:
        self.args = args
        self.bootstrap = bootstrap
        self.base = base
        self.worker = worker
        self.rng = random.Random(args.seed)
        self.ledger = Ledger()
        self.pool: deque[tuple[str, bytes]] = deque(maxlen=5000)
        self.builder = Builder(self.rng, self.pool, args.max_event_bytes, tuple(args.skip))
        self.baseline = Traffic(args.valid_rate, seed=args.seed + 1000, noise=False)
        self.source = Traffic(max(args.rate / 4, 20), seed=args.seed + 2000, noise=False)

    def _baseline_msgs(self) -> list[Msg]:
        """Valid generator traffic, kept on the wall clock (so it is never late)."""
        out: list[Msg] = []
        while self.baseline.now <= now_ms():
            for topic, value, _ in self.baseline.second():
                out.append(Msg(topic, value, [Unit("generator", ACCEPT)]))
        while self.source.now <= now_ms():
            for topic, value, _ in self.source.second():
                self.pool.append((topic, value))
        return out

    async def send(self, producer: AIOKafkaProducer, msgs: list[Msg]) -> None:
        futures = []
        for msg in msgs:
            futures.append(await producer.send(PREFIX + msg.topic, msg.value, key=msg.key))
            self.ledger.add(msg)
        if futures:
            await asyncio.gather(*futures)

    async def wait_watermarks(self, producer: AIOKafkaProducer, timeout: float = 120) -> None:
        """Valid traffic until every keyed partition's watermark is current: from then on,
        an event more than the grace behind now is late for certain."""
        deadline = time.monotonic() + timeout
        while True:
            await self.send(producer, self._baseline_msgs())
            with contextlib.suppress(OSError, ValueError):
                m = scrape(self.base + "/metrics")
                marks = {(lb["stream"], lb["partition"]): v for lb, v in m.get("socialpulse_watermark_timestamp_seconds", [])}
                fresh = [k for k, v in marks.items() if v >= time.time() - 60]
                accepted = sum(v for lb, v in m.get("socialpulse_events_total", []) if lb["outcome"] == "accepted")
                if len(fresh) >= 2 * PARTITIONS and accepted > 0:
                    print(f"warm-up done: {len(fresh)} keyed partitions with a current watermark, "
                          f"{accepted:,.0f} events accepted", file=sys.stderr)
                    return
            if self.worker.poll() is not None:
                raise SystemExit(f"worker exited with {self.worker.returncode} during warm-up")
            if time.monotonic() > deadline:
                raise SystemExit("keyed partitions have no current watermark after the warm-up")
            await asyncio.sleep(1.0)

    async def fuzz(self) -> None:
        producer = clients.producer(
            Settings(broker=f"kafka://{self.bootstrap}"), linger_ms=5, max_request_size=8 * 1024 * 1024,
            max_batch_size=1_048_576, request_timeout_ms=60_000,
        )
        await producer.start()
        try:
            await self.wait_watermarks(producer)
            seconds = int(self.args.minutes * 60)
            began = time.monotonic()
            for sec in range(seconds):
                msgs = self._baseline_msgs()
                for _ in range(self.args.rate):
                    msgs.extend(self.builder.make())
                self.rng.shuffle(msgs)
                await self.send(producer, msgs)
                if sec % 10 == 9 or sec == seconds - 1:
                    alive = "alive" if self.worker.poll() is None else f"EXITED {self.worker.returncode}"
                    lg = self.ledger
                    print(f"fuzz {sec + 1}/{seconds} s: {sum(lg.values.values()):,} values, {lg.total_units:,} units "
                          f"(accept {lg.accept:,}, reject {sum(lg.reject_exact.values()) + sum(lg.reject_multi.values()):,}, "
                          f"either {lg.either:,}), worker {alive}", flush=True)
                await asyncio.sleep(max(0.0, began + sec + 1 - time.monotonic()))
        finally:
            await producer.stop()

    def wait_counted(self, timeout: float) -> dict[str, list[tuple[dict[str, str], float]]]:
        """Until the worker counted every unit (and the count holds still)."""
        want = self.ledger.total_units
        deadline = time.monotonic() + timeout
        last, m, stable_since = -1, {}, time.monotonic()
        while time.monotonic() < deadline and self.worker.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                m = scrape(self.base + "/metrics")
                total = sum(v for lb, v in m.get("socialpulse_events_total", []) if lb["topic"] in INPUT_TOPICS)
                if total != last:
                    last, stable_since = total, time.monotonic()
                    print(f"catching up: counted {total:,.0f}/{want:,}", file=sys.stderr)
                if total >= want and time.monotonic() - stable_since >= 5:
                    break
                if total < want and time.monotonic() - stable_since >= 60:
                    break  # nothing more for a minute: it is not coming
            time.sleep(1)
        return m

    async def read_dlq(self, expect: int, timeout: float) -> list[tuple[int, bytes | None]]:
        consumer = clients.consumer(Settings(broker=f"kafka://{self.bootstrap}"), enable_auto_commit=False,
                                    max_partition_fetch_bytes=16 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024)
        await consumer.start()
        out: list[tuple[int, bytes | None]] = []
        try:
            topic = PREFIX + DLQ
            parts = consumer.partitions_for_topic(topic) or set()
            if not parts:
                await consumer._client.force_metadata_update()  # noqa: SLF001
                parts = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            deadline = time.monotonic() + timeout
            quiet_since = time.monotonic()
            while time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=1000, max_records=20_000)
                n = sum(len(v) for v in batches.values())
                for recs in batches.values():
                    out.extend((r.partition, r.value) for r in recs)
                if n:
                    quiet_since = time.monotonic()
                elif (len(out) >= expect and time.monotonic() - quiet_since >= 3) or time.monotonic() - quiet_since >= 20:
                    break
        finally:
            await consumer.stop()
        return out


def check(run: Run, m: dict[str, list[tuple[dict[str, str], float]]], dlq: list[tuple[int, bytes | None]],
          healthz: int, metrics_ok: str) -> tuple[bool, list[str]]:
    lg = run.ledger
    lines: list[str] = []
    fails: list[str] = []

    def ok(cond: bool, text: str) -> None:
        lines.append(f"[{'ok' if cond else 'FAIL'}] {text}")
        if not cond:
            fails.append(text)

    alive = run.worker.poll() is None
    ok(alive, f"worker alive (exit code {run.worker.returncode})" if not alive else "worker alive")
    ok(healthz == 200, f"/healthz answered {healthz}")
    ok(metrics_ok == "", "/metrics parses" + (f": {metrics_ok}" if metrics_ok else ""))

    counted = Counter()
    outcomes = Counter()
    for labels, v in m.get("socialpulse_events_total", []):
        if labels["topic"] in INPUT_TOPICS:
            counted[labels["topic"]] += int(v)
            outcomes[labels["outcome"]] += int(v)
    for topic in INPUT_TOPICS:
        ok(counted[topic] == lg.by_topic[topic],
           f"{topic}: sent {lg.by_topic[topic]:,} units, socialpulse_events_total {counted[topic]:,}")
    accepted = outcomes["accepted"]
    ok(lg.accept <= accepted <= lg.accept + lg.either,
       f"accepted {accepted:,} within [{lg.accept:,}, {lg.accept + lg.either:,}] (certain accepts .. + either)")

    dead_metric = events_by(m, "socialpulse_dead_letters_total", "reason")
    rejected_metric = sum(v for k, v in outcomes.items() if k != "accepted")
    ok(rejected_metric == sum(dead_metric.values()),
       f"rejected on socialpulse_events_total {rejected_metric:,} = socialpulse_dead_letters_total {sum(dead_metric.values()):,}")

    # the dead-letter topic
    records: list[DeadLetter] = []
    bad_records = 0
    derived = 0
    for _partition, value in dlq:
        try:
            rec = DeadLetter.model_validate_json(value or b"")
        except Exception:
            bad_records += 1
            continue
        if rec.partition < 0:  # a derived record (e.g. a late attribution credit), not an input value
            derived += 1
        records.append(rec)
    ok(bad_records == 0, f"{bad_records} DLQ records that are not valid dead-letter records")
    ok(len(records) == sum(dead_metric.values()),
       f"DLQ holds {len(records):,} records, socialpulse_dead_letters_total {sum(dead_metric.values()):,}")
    if derived:
        lines.append(f"[info] {derived} DLQ records derived from accepted events (partition -1), not sent values")
    no_detail = sum(1 for r in records if not r.detail or not r.reason)
    ok(no_detail == 0, f"{no_detail} DLQ records without a reason or detail")
    wrong_topic = sum(1 for r in records if r.source_topic not in {PREFIX + t for t in INPUT_TOPICS})
    ok(wrong_topic == 0, f"{wrong_topic} DLQ records naming a topic that is not an input topic")
    dlq_by = Counter((r.source_topic.removeprefix(PREFIX), r.reason) for r in records)
    metric_by = Counter()
    for labels, v in m.get("socialpulse_dead_letters_total", []):
        if v:
            metric_by[(labels["topic"], labels["reason"])] += int(v)
    ok(dlq_by == metric_by, "DLQ records per (topic, reason) = socialpulse_dead_letters_total{topic,reason}"
       + ("" if dlq_by == metric_by else f": DLQ {dict(dlq_by - metric_by)} vs /metrics {dict(metric_by - dlq_by)}"))

    # per reason: what was sent allows [exact, exact + multi-reason units + either]
    dlq_reason = Counter(r.reason for r in records)
    reason_rows = []
    for reason in REASONS:
        lo = lg.reject_exact[reason]
        hi = lo + sum(n for rs, n in lg.reject_multi.items() if reason in rs) + lg.either
        got = dead_metric[reason]
        reason_rows.append((reason, lo, hi, got, dlq_reason[reason]))
        ok(lo <= got <= hi, f"reason {reason}: {got:,} dead letters within [{lo:,}, {hi:,}]")
    unknown = set(dead_metric) - set(REASONS)
    ok(not unknown, f"no unknown reasons ({sorted(unknown)})")

    # markers: exactly one DLQ record per rejected unit of each marked value
    found: Counter[str] = Counter()
    found_reasons: dict[str, set[str]] = defaultdict(set)
    for rec in records:
        raw = rec.raw.encode() if rec.raw_encoding == "utf-8" else base64.b64decode(rec.raw)
        for mk in set(MARK_RE.findall(raw)):
            found[mk.decode()] += 1
            found_reasons[mk.decode()].add(rec.reason)
    wrong_count, wrong_reason, examples = 0, 0, []
    wrong_kinds: Counter[str] = Counter()
    for mk, (lo, hi) in lg.marks.items():
        n = found.get(mk, 0)
        if not lo <= n <= hi:
            wrong_count += 1
            wrong_kinds[lg.mark_kind.get(mk, "?")] += 1
            if len(examples) < 5:
                examples.append(f"{mk} ({lg.mark_kind.get(mk)}): {n} records, expected {lo}..{hi}")
        elif n and not found_reasons[mk] <= lg.mark_reasons[mk]:
            wrong_reason += 1
            if len(examples) < 5:
                examples.append(f"{mk} ({lg.mark_kind.get(mk)}): reasons {sorted(found_reasons[mk])}, "
                                f"allowed {sorted(lg.mark_reasons[mk])}")
    ok(wrong_count == 0 and wrong_reason == 0,
       f"{len(lg.marks):,} marked values: {wrong_count} with a wrong number of DLQ records, {wrong_reason} with a "
       f"reason not allowed" + (f" by kind {dict(wrong_kinds)}; e.g. " + "; ".join(examples) if examples else ""))
    cases: dict[str, Counter[str]] = defaultdict(Counter)
    for mk, case in lg.mark_case.items():
        cases[case][",".join(sorted(found_reasons[mk])) if found.get(mk) else "accepted"] += 1
    if cases:
        lines.append("")
        lines.append("| either case (contract silent) | what the worker did |")
        lines.append("|---|---|")
        for case in sorted(cases):
            lines.append(f"| {case} | " + ", ".join(f"{k} {n:,}" for k, n in cases[case].most_common()) + " |")
    lines.append("")
    lines.append("| reason | expected (certain) | allowed up to | socialpulse_dead_letters_total | DLQ records |")
    lines.append("|---|---:|---:|---:|---:|")
    for reason, lo, hi, got, dl in reason_rows:
        lines.append(f"| {reason} | {lo:,} | {hi:,} | {got:,} | {dl:,} |")
    lines.append(f"| **accepted** | {lg.accept:,} | {lg.accept + lg.either:,} | {accepted:,} (events_total) | |")
    return not fails, lines


def kinds_table(lg: Ledger) -> list[str]:
    kinds = sorted({k for k, _ in lg.units})
    out = ["| kind | messages | units | accept | reject | either |", "|---|---:|---:|---:|---:|---:|"]
    for k in kinds:
        a, r, e = lg.units[(k, ACCEPT)], lg.units[(k, REJECT)], lg.units[(k, EITHER)]
        out.append(f"| {k} | {lg.values[k]:,} | {a + r + e:,} | {a:,} | {r:,} | {e:,} |")
    a, r, e = lg.accept, lg.total_units - lg.accept - lg.either, lg.either
    out.append(f"| **all** | {sum(lg.values.values()):,} | {lg.total_units:,} | {a:,} | {r:,} | {e:,} |")
    return out


def worker_errors(log: Path) -> list[str]:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    return [ln for ln in text.splitlines() if "Traceback" in ln or " ERROR " in ln or "CRITICAL" in ln or "Error:" in ln]


def start_worker(env: dict[str, str], web_port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker", "--web-port", str(web_port)],
        cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )


def wait_ready(proc: subprocess.Popen[bytes], base: str, log: Path, timeout: float) -> float:
    began = time.monotonic()
    while http_get(base + "/readyz", 2)[0] != 200:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        if time.monotonic() - began > timeout:
            raise RuntimeError(f"worker not ready after {timeout:.0f} s; see {log}")
        time.sleep(0.5)
    return time.monotonic() - began


def state_keys(base: str) -> dict[str, float]:
    with contextlib.suppress(OSError, ValueError):
        return {lb["stage"]: v for lb, v in scrape(base + "/metrics").get("socialpulse_state_keys", [])}
    return {}


def restart_check(env: dict[str, str], web_port: int, base: str, log: Path, worker: subprocess.Popen[bytes],
                  procs: list[subprocess.Popen[bytes]]) -> bool:
    """Stop the worker (SIGTERM) and start it on the same data dir: it must recover every key
    it held (no new traffic meanwhile) without an error in its log."""
    before = state_keys(base)
    stop(worker)
    offset = log.stat().st_size
    worker = start_worker(env, web_port, log)
    procs.append(worker)
    try:
        took = wait_ready(worker, base, log, 180)
    except RuntimeError as exc:
        print(f"[FAIL] restart on the same data dir: {exc}")
        return False
    time.sleep(15)  # a few ticks, so the state gauges are current
    after = state_keys(base)
    alive = worker.poll() is None and http_get(base + "/healthz")[0] == 200
    with log.open("rb") as f:
        f.seek(offset)
        new_log = f.read().decode(errors="replace")
    errors = [ln for ln in new_log.splitlines() if "Traceback" in ln or "[ERROR]" in ln or "Error:" in ln]
    lost = {k: (before.get(k, 0), after.get(k, 0)) for k in before if after.get(k, 0) < before.get(k, 0)}
    ok = alive and not errors and not lost
    print(f"[{'ok' if alive else 'FAIL'}] restart on the same data dir: ready in {took:.1f} s, "
          f"{'alive' if alive else 'not alive'} 15 s later")
    print(f"[{'ok' if not lost else 'FAIL'}] state keys before/after the restart: "
          + ", ".join(f"{k} {before.get(k, 0):,.0f}/{after.get(k, 0):,.0f}" for k in sorted(before)))
    print(f"[{'ok' if not errors else 'FAIL'}] worker log after the restart: {len(errors)} error lines"
          + (": " + " | ".join(e[:200] for e in errors[:3]) if errors else ""))
    if errors:
        tail = new_log[new_log.find("Traceback"):][:1500] if "Traceback" in new_log else ""
        print(tail)
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--rate", type=int, default=100, help="hostile values per second")
    ap.add_argument("--valid-rate", type=float, default=40.0, help="valid generator events per second alongside")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-event-bytes", type=int, default=16_384, help="SOCIALPULSE_MAX_EVENT_BYTES for the worker")
    ap.add_argument("--broker-port", type=int, default=39220)
    ap.add_argument("--web-port", type=int, default=39221)
    ap.add_argument("--skip", action="append", default=[], metavar="KIND", help="leave out a kind of value (repeatable)")
    ap.add_argument("--restart", action="store_true", help="afterwards restart the worker on its data dir and check it recovers")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (worker log, data)")
    args = ap.parse_args()

    def on_term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    broker_port, web_port = pick_ports([args.broker_port, args.web_port])
    tmp = Path(tempfile.mkdtemp(prefix="socialpulse-fuzz-"))
    bootstrap = f"127.0.0.1:{broker_port}"
    base = f"http://127.0.0.1:{web_port}"
    env = worker_env(bootstrap, PREFIX, str(tmp / "data")) | {
        "SOCIALPULSE_APP_ID": f"fuzz-{time.time_ns()}",
        "SOCIALPULSE_PARTITIONS": str(PARTITIONS),
        "SOCIALPULSE_MAX_EVENT_BYTES": str(args.max_event_bytes),
    }
    log = tmp / "worker.log"
    procs: list[subprocess.Popen[bytes]] = []
    passed = False
    try:
        broker = start_broker(broker_port)
        procs.append(broker)
        worker = start_worker(env, web_port, log)
        procs.append(worker)
        print(f"broker {bootstrap} (pid {broker.pid}), worker {base} (pid {worker.pid}), log {log}", file=sys.stderr)
        print(f"worker ready in {wait_ready(worker, base, log, 120):.1f} s", file=sys.stderr)
        run = Run(args, bootstrap, base, worker)
        asyncio.run(run.fuzz())
        m = run.wait_counted(timeout=240)
        expect_dead = sum(v for _, v in m.get("socialpulse_dead_letters_total", []))
        dlq = asyncio.run(run.read_dlq(int(expect_dead), timeout=180))
        healthz = http_get(base + "/healthz")[0]
        metrics_ok = ""
        try:
            m = scrape(base + "/metrics")
        except Exception as exc:  # noqa: BLE001
            metrics_ok = f"{type(exc).__name__}: {exc}"
        passed, lines = check(run, m, dlq, healthz, metrics_ok)
        lg = run.ledger
        print()
        print(f"fuzz: {args.minutes:g} min, {args.rate} hostile values/s + {args.valid_rate:g} valid/s, seed {args.seed}, "
              f"max event bytes {args.max_event_bytes:,}; {sum(lg.values.values()):,} messages, {lg.total_units:,} units, "
              f"{lg.sent_bytes / 1e6:,.1f} MB")
        print()
        print("\n".join(kinds_table(lg)))
        print()
        print("\n".join(lines))
        errors = worker_errors(log)
        if errors:
            print(f"\n[info] worker log: {len(errors)} error lines, first: {errors[0][:300]}")
        if args.restart and run.worker.poll() is None:
            passed = restart_check(env, web_port, base, log, worker, procs) and passed
        print(f"\nverdict: {'PASS' if passed else 'FAIL'}")
    except KeyboardInterrupt:
        print("\ninterrupted: stopping worker and broker", file=sys.stderr)
    finally:
        for proc in reversed(procs):
            stop(proc)
    if args.keep or not passed:
        print(f"work dir kept (worker log): {tmp}", file=sys.stderr)
        shutil.rmtree(tmp / "data", ignore_errors=True)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
