"""The consumer group: which protocol the workers speak and the timeouts that suit the broker.

Workers use Kafka's **classic** group protocol (JoinGroup/SyncGroup/Heartbeat, with Faust's
own partition assignor, which keeps a key's partitions of every topic on one worker). aiokafka
does not speak the KIP-848 protocol (ConsumerGroupHeartbeat) that Kafka 4 brokers offer to the
clients that ask for it; a Kafka 4 broker serves classic groups as before.

The session timeout is how long a silent worker keeps its partitions. Tansu holds each
JoinGroup for half of it, so a short one (6 s, the broker's minimum) makes workers ready in
seconds there (heartbeat every second); on Apache Kafka 10 s (heartbeat every 3 s) detects a lost worker quickly and
rides out a loaded machine's pauses. ``SOCIALPULSE_SESSION_TIMEOUT`` overrides both.
"""

from __future__ import annotations

import logging

from . import clients
from .settings import Settings

__all__ = ["PROTOCOL", "timeouts", "with_timeouts"]

log = logging.getLogger("socialpulse.groups")
PROTOCOL = "classic"
TANSU_S = 6.0
KAFKA_S = 10.0


def timeouts(settings: Settings, cluster_id: str | None) -> tuple[float, float]:
    """(session timeout, heartbeat interval) in seconds for this broker."""
    if settings.session_timeout is not None:
        session = settings.session_timeout / 1000
        return session, min(3.0, session / 3)
    if (cluster_id or "").startswith("tansu"):
        return TANSU_S, 1.0  # heartbeats cost Tansu nothing; a rejoin is noticed within a second
    return KAFKA_S, 3.0


async def with_timeouts(settings: Settings) -> Settings:
    """The settings with the session timeout this cluster gets (its id tells Tansu apart)."""
    admin = clients.admin(settings)
    await admin.start()
    try:
        cluster_id = (await admin.describe_cluster()).get("cluster_id")
    finally:
        await admin.close()
    session, heartbeat = timeouts(settings, cluster_id)
    log.info("consumer group: %s protocol, session timeout %.0fs, heartbeat %.0fs (cluster %s)",
             PROTOCOL, session, heartbeat, cluster_id)
    return settings.model_copy(update={"session_timeout": int(session * 1000)})
