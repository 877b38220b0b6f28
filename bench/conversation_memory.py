"""What CONVERSATION_TTL costs: memory and changelog bytes per remembered conversation.

Feeds one account's Replies family N conversations (customer message, reply, follow-up
and its reply, spread over a day), then moves the watermark two days on (every message
older than the allowed lateness is folded) and measures the state: Python heap per
conversation (tracemalloc) and its changelog JSON per conversation, live (messages kept)
and folded (what the rest of the TTL costs).

    python bench/conversation_memory.py [--conversations 20000]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import orjson

from schemas.events import Message
from streams.replies import Replies
from streams.windows import WindowSpec

MIN = 60_000
DAY = 86_400_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conversations", type=int, default=20_000)
    n = ap.parse_args().conversations
    spec = WindowSpec(MIN, (5 * MIN, 60 * MIN), (MIN, 60 * MIN, DAY), 5 * MIN, DAY)
    fam = Replies(spec, slo_ms=15 * MIN)
    key = "instagram|acme"
    now = int(time.time() * 1000)
    t0 = now - now % DAY - 10 * DAY
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    state = fam.new_state()
    step = DAY // n
    for i in range(n):
        ts = t0 + i * step
        cid = f"conv-{i}"
        msgs = [Message(event_id=f"{cid}-{j}", ts=ts + off, platform="instagram", account_id="acme",
                        conversation_id=cid, direction=d, author_id="c" if d == "inbound" else "ana",
                        agent_id=None if d == "inbound" else f"agent-{i % 8}")
                for j, (off, d) in enumerate([(0, "inbound"), (4 * MIN, "outbound"), (70 * MIN, "inbound"),
                                              (80 * MIN, "outbound")])]
        fam.apply(key, state, msgs, ts)
        if i % 500 == 0:
            fam.close(key, state, ts)
    fam.close(key, state, t0 + DAY)
    live_heap = tracemalloc.get_traced_memory()[0] - base
    live_json = len(orjson.dumps(state["convs"]))
    fam.close(key, state, t0 + 3 * DAY)
    folded_heap = tracemalloc.get_traced_memory()[0] - base
    folded_json = len(orjson.dumps(state["convs"]))
    tracemalloc.stop()
    kept = len(state["convs"])
    print(f"{n:,} conversations (4 messages each over a day), {kept:,} remembered after 3 days (TTL 7 d)")
    print("| state | heap bytes/conversation | changelog JSON bytes/conversation |")
    print("|---|---:|---:|")
    print(f"| within the allowed lateness (messages kept) | {live_heap / n:,.0f} | {live_json / n:,.0f} |")
    print(f"| folded (the rest of the TTL) | {folded_heap / kept:,.0f} | {folded_json / kept:,.0f} |")


if __name__ == "__main__":
    main()
