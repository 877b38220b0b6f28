"""Creating the input and output topics up front, with the configured partitions.

A broker that auto-creates topics on first produce would make them with one
partition; creating them first keeps every topic at ``PARTITIONS``.
"""

from __future__ import annotations

import contextlib
from typing import Any

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


#: Kafka's error code in a CreateTopics answer for a refusal by an ACL
_REFUSED = 29


async def ensure_topics(settings: Settings, names: list[str] | None = None) -> None:
    """Create ``names`` (default: every topic of ``all_topics``) that do not exist yet. A topic
    the broker refuses to create stops start-up (``clients.Refused``): a worker without it would
    only log "Ignoring missing topic" and never read it."""
    admin = clients.admin(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        compacted = {settings.topic(t) for t in COMPACTED}
        wanted = [
            NewTopic(name, settings.partitions, settings.replication,
                     topic_configs={"cleanup.policy": "compact"} if name in compacted else None)
            for name in (all_topics(settings) if names is None else names)
            if name not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                response: Any = await admin.create_topics(wanted)
                for topic, error, *_ in getattr(response, "topic_errors", ()):
                    if error == _REFUSED:
                        raise clients.Refused(clients.refused(
                            "CREATE", "topic", topic, settings, "TopicAuthorizationFailed; or create it beforehand"))
    finally:
        await admin.close()
