"""What socialpulse needs from a cluster that authorizes (Kafka ACLs), and the check at start-up.

``needs`` is the one list of permissions: ``docs/operations.md`` ("ACLs the worker needs")
prints the same table, ``tests/integration/test_kafka_security.py`` grants exactly it on a
broker running ``StandardAuthorizer`` and removes one at a time. ``check`` asks the broker,
before Faust starts, what this principal may do (Metadata v8's authorized operations per
topic, also for the topics Faust will create, and DescribeGroups v3's for the group), so a missing ACL stops start-up with ``Refused``, naming the operation and the
resource, instead of a worker that skips an unreadable topic ("Ignoring missing topic") or
crashes deep inside Faust. Kafka implies Describe from Read or Write, so it is never listed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from aiokafka.protocol.admin import DescribeGroupsResponse_v3
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Int16, Int32, Schema, String

from schemas.events import INPUT_TOPICS

from . import clients
from .clients import DOCS, Refused, refused
from .settings import Settings
from .topics import ACCOUNTS, OUTPUT_TOPICS

log = logging.getLogger("socialpulse")

__all__ = ["Need", "Refused", "needs", "missing", "refusal", "probe", "check", "OPERATIONS", "DOCS"]

#: Kafka's AclOperation codes: bit ``1 << code`` of an authorized-operations field
OPERATIONS = {"READ": 3, "WRITE": 4, "CREATE": 5, "DELETE": 6, "ALTER": 7, "DESCRIBE": 8,
              "CLUSTER_ACTION": 9, "DESCRIBE_CONFIGS": 10, "ALTER_CONFIGS": 11, "IDEMPOTENT_WRITE": 12}
#: Kafka's error codes for a refusal
TOPIC_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED, UNKNOWN_TOPIC = 29, 30, 3
Role = Literal["worker", "generator"]


@dataclass(frozen=True)
class Need:
    """Operations on one resource (``prefixed``: every name starting with ``name``)."""

    resource: Literal["topic", "group"]
    name: str
    operations: tuple[str, ...]
    prefixed: bool = False
    why: str = ""

    def covers(self, resource: str, name: str) -> bool:
        return resource == self.resource and (name.startswith(self.name) if self.prefixed else name == self.name)


def needs(settings: Settings, role: Role = "worker") -> list[Need]:
    """Every permission ``role`` needs. Create only matters while the topic does not exist."""
    inputs = [settings.topic(t) for t in INPUT_TOPICS]
    if role == "generator":
        return [Need("topic", t, ("WRITE", "CREATE"), why="input topic") for t in inputs]
    return [
        *(Need("topic", t, ("READ", "CREATE"), why="input topic") for t in inputs),
        Need("topic", settings.topic(ACCOUNTS), ("READ", "CREATE"), why="per-account settings, read outside the group"),
        *(Need("topic", settings.topic(t), ("WRITE", "CREATE"), why="output topic") for t in OUTPUT_TOPICS),
        Need("topic", settings.topic("socialpulse.by-"), ("READ", "WRITE", "CREATE"), prefixed=True,
             why="keyed topics between workers"),
        Need("topic", f"{settings.app_id}-", ("READ", "WRITE", "CREATE"), prefixed=True,
             why="table changelogs, the assignor's topic"),
        Need("group", settings.app_id, ("READ",), why="the workers' consumer group"),
    ]


def missing(need: Need, authorized: int, created: bool = False) -> list[str]:
    """The operations of ``need`` absent from an authorized-operations bit field (Create only
    while the topic does not exist: one created beforehand needs none)."""
    if authorized < 0:  # -2**31: the broker did not say
        return []
    allowed = {op for op, code in OPERATIONS.items() if authorized & (1 << code)}
    return [op for op in need.operations if op not in allowed and not (created and op == "CREATE")]


def refusal(operation: str, resource: str, name: str, settings: Settings, error: str | None = None,
            need: Need | None = None) -> str:
    """The message of a refused operation (``clients.refused``), naming the prefix an ACL covers."""
    prefix = need.name if need is not None and need.prefixed else None
    return refused(operation, resource, name, settings, error, prefix)


def _need(needs_: list[Need], resource: str, name: str) -> Need | None:
    return next((n for n in needs_ if n.covers(resource, name)), None)


# Metadata v8 (Kafka 2.3+): what aiokafka lacks, the authorized operations of each topic
class _MetadataResponse_v8(Response):
    API_KEY = 3
    API_VERSION = 8
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("brokers", Array(("node_id", Int32), ("host", String("utf-8")), ("port", Int32), ("rack", String("utf-8")))),
        ("cluster_id", String("utf-8")),
        ("controller_id", Int32),
        ("topics", Array(
            ("error_code", Int16), ("topic", String("utf-8")), ("is_internal", Boolean),
            ("partitions", Array(("error_code", Int16), ("partition", Int32), ("leader", Int32), ("leader_epoch", Int32),
                                 ("replicas", Array(Int32)), ("isr", Array(Int32)), ("offline_replicas", Array(Int32)))),
            ("topic_authorized_operations", Int32))),
        ("cluster_authorized_operations", Int32),
    )


class _MetadataRequest_v8(RequestStruct):
    API_KEY = 3
    API_VERSION = 8
    RESPONSE_TYPE = _MetadataResponse_v8
    SCHEMA = Schema(("topics", Array(String("utf-8"))), ("allow_auto_topic_creation", Boolean),
                    ("include_cluster_authorized_operations", Boolean), ("include_topic_authorized_operations", Boolean))


class _AuthorizedOperations(Request[_MetadataRequest_v8]):
    API_KEY: ClassVar[int] = 3

    def __init__(self, topics: list[str]) -> None:
        self._topics = topics

    def build(self, request_struct_class: type[_MetadataRequest_v8]) -> _MetadataRequest_v8:
        return request_struct_class(self._topics, False, False, True)


# DescribeGroups v3 (Kafka 2.3+): aiokafka's v3 request parses the answer as v2, dropping the field
class _DescribeGroupsRequest_v3(RequestStruct):
    API_KEY = 15
    API_VERSION = 3
    RESPONSE_TYPE = DescribeGroupsResponse_v3
    SCHEMA = Schema(("groups", Array(String("utf-8"))), ("include_authorized_operations", Boolean))


class _GroupOperations(Request[_DescribeGroupsRequest_v3]):
    API_KEY: ClassVar[int] = 15

    def __init__(self, groups: list[str]) -> None:
        self._groups = groups

    def build(self, request_struct_class: type[_DescribeGroupsRequest_v3]) -> _DescribeGroupsRequest_v3:
        return request_struct_class(self._groups, True)


def probe(need: Need) -> str:
    """A topic name under a prefix, asked about before Faust creates the real ones."""
    return need.name + ("account" if need.name.endswith("by-") else "__assignor-__leader")


async def _coordinator(admin: Any, group: Need, settings: Settings, wait: float | None = None) -> int:
    """The group's coordinator; a new cluster creates its offsets topic on first ask (not available
    yet, for tens of seconds on a busy machine): waited for up to ``SOCIALPULSE_BROKER_TIMEOUT``."""
    deadline = asyncio.get_running_loop().time() + (settings.broker_timeout / 1000 if wait is None else wait)
    told = False
    while True:
        try:
            return int(await admin.find_coordinator(group.name))
        except Exception as exc:  # FindCoordinator needs Describe, implied by Read
            name = type(exc).__name__
            if "GroupAuthorization" in name:
                raise Refused(refusal(group.operations[0], "group", group.name, settings)) from None
            if not ("NotAvailable" in name or "LoadInProgress" in name) or asyncio.get_running_loop().time() > deadline:
                raise
            if not told:
                log.info("waiting for the coordinator of group %s (%s: a new cluster is still creating "
                         "its offsets topic)", group.name, name)
                told = True
        await asyncio.sleep(0.5)


async def check(settings: Settings, role: Role = "worker") -> None:
    """Raise ``Refused`` for the first permission of ``needs`` the broker does not grant."""
    needs_ = needs(settings, role)
    admin = clients.admin(settings)
    client = clients.client(settings)
    await admin.start()
    try:
        await client.bootstrap()
        existing = set(await admin.list_topics())
        names = sorted({n.name for n in needs_ if n.resource == "topic" and not n.prefixed}
                       | {probe(n) for n in needs_ if n.prefixed}
                       | {t for t in existing if _need(needs_, "topic", t) is not None})
        # for a topic that does not exist yet, the broker still says what this principal may do
        topics: Any = await client.send(client.get_random_node(), _AuthorizedOperations(names))
        for error, topic, _internal, _parts, authorized in topics.topics:
            need = _need(needs_, "topic", topic)
            if need is None:
                continue
            if error == TOPIC_AUTHORIZATION_FAILED:
                raise Refused(refusal(need.operations[0], "topic", topic, settings, need=need))
            if error in (0, UNKNOWN_TOPIC) and (lacking := missing(need, authorized, created=error == 0)):
                raise Refused(refusal(lacking[0], "topic", topic, settings, need=need))
        for group in (n for n in needs_ if n.resource == "group"):
            coordinator = await _coordinator(admin, group, settings)
            described: Any = await client.send(coordinator, _GroupOperations([group.name]))
            for error, _name, *_rest, authorized in described.groups:
                if error == GROUP_AUTHORIZATION_FAILED:
                    raise Refused(refusal(group.operations[0], "group", group.name, settings))
                if lacking := missing(group, authorized):
                    raise Refused(refusal(lacking[0], "group", group.name, settings))
    finally:
        await client.close()
        await admin.close()
