"""Creating the input and output topics up front, with the configured partitions.

A broker that auto-creates topics on first produce would make them with one
partition; creating them first keeps every topic at ``PARTITIONS``.
"""

from __future__ import annotations

import contextlib

from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from schemas.events import INPUT_TOPICS

from . import clients
from .settings import Settings

__all__ = ["ensure_topics", "all_topics", "RESULTS", "BREACHES", "DLQ", "OUTPUT_TOPICS", "ACCOUNTS", "COMPACTED"]

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


async def ensure_topics(settings: Settings) -> None:
    admin = clients.admin(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        compacted = {settings.topic(t) for t in COMPACTED}
        wanted = [
            NewTopic(name, settings.partitions, settings.replication,
                     topic_configs={"cleanup.policy": "compact"} if name in compacted else None)
            for name in all_topics(settings)
            if name not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
    finally:
        await admin.close()
