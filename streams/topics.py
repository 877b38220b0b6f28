"""Creating the input and output topics up front, with the configured partitions.

A broker that auto-creates topics on first produce would make them with one
partition; creating them first keeps every topic at ``PARTITIONS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from typing import Any

from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from schemas.events import INPUT_TOPICS

from . import clients
from .settings import Settings

__all__ = ["ensure_topics", "worker_internal_topics", "all_topics", "RESULTS", "BREACHES", "DLQ", "OUTPUT_TOPICS", "ACCOUNTS", "COMPACTED"]

#: the output topics (before TOPIC_PREFIX): the one place their names are written
RESULTS = "socialpulse.results"
BREACHES = "socialpulse.reply-breaches"
DLQ = "socialpulse.dlq"
OUTPUT_TOPICS = (RESULTS, BREACHES, DLQ)
#: per-account settings (key ``platform|account_id``; streams/accounts_reader.py reads it)
ACCOUNTS = "socialpulse.accounts"
#: topics whose last record per key is what counts
COMPACTED = frozenset({ACCOUNTS})


def all_topics(settings: Settings) -> list[str]:
    return [settings.topic(t) for t in (*INPUT_TOPICS, *OUTPUT_TOPICS, ACCOUNTS)]


#: Kafka's error code in a CreateTopics answer for a refusal by an ACL
_REFUSED = 29


def worker_internal_topics(settings: Settings, tables: Iterable[str]) -> tuple[list[str], list[str], list[str]]:
    """The topics Faust makes for a worker (each table's changelog, the assignor's leader topic)
    as (names, compacted, single-partition), so start-up can create them before Faust subscribes:
    Faust creates them itself just before, and a topic the broker's metadata does not show yet
    is left out of the subscription ("Ignoring missing topic"), its changelog never read back."""
    changelogs = [f"{settings.app_id}-{table}-changelog" for table in tables]
    leader = f"{settings.app_id}-__assignor-__leader"
    return [*changelogs, leader], changelogs, [leader]


async def ensure_topics(settings: Settings, names: list[str] | None = None, compacted: Iterable[str] = (),
                        single: Iterable[str] = (), visible_within: float = 30.0) -> None:
    """Create ``names`` (default: every topic of ``all_topics``) that do not exist yet (``compacted``
    ones compacted, ``single`` ones with one partition), then wait until the broker's metadata
    shows the ones it created. A topic the broker refuses to create stops start-up (``clients.Refused``): a
    worker without it would only log "Ignoring missing topic" and never read it."""
    admin = clients.admin(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        compact = {settings.topic(t) for t in COMPACTED} | set(compacted)
        one = set(single)
        names = all_topics(settings) if names is None else names
        wanted = [
            NewTopic(name, 1 if name in one else settings.partitions, settings.replication,
                     topic_configs={"cleanup.policy": "compact"} if name in compact else None)
            for name in names
            if name not in existing
        ]
        if wanted:
            created: set[str] = set()
            with contextlib.suppress(TopicAlreadyExistsError):
                response: Any = await admin.create_topics(wanted)
                for topic, error, *_ in getattr(response, "topic_errors", ()):
                    if error == _REFUSED:
                        raise clients.Refused(clients.refused(
                            "CREATE", "topic", topic, settings, "TopicAuthorizationFailed; or create it beforehand"))
                    if error == 0:
                        created.add(topic)
            # (only what was created here: a principal sees only the topics it may describe, and
            # one it may not see may well exist: the permission check after this names what it lacks)
            deadline = time.monotonic() + visible_within
            while not created <= set(await admin.list_topics()) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
    finally:
        await admin.close()
