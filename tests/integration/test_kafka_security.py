"""Security on a broker that enforces it: Apache Kafka 4.1.1 with SASL/SCRAM-SHA-512 over TLS and
``StandardAuthorizer``, and a second cluster requiring client certificates (mutual TLS).

The test creates its SCRAM users through the cluster's plaintext admin listener (``User:ANONYMOUS``
is the only super user) and grants the workers' user exactly what ``streams.acls.needs`` lists,
the list ``docs/operations.md`` prints (``tests/unit/streams/test_acls.py`` keeps the two equal).
Everything runs as a user would: ``socialpulse worker`` and ``socialpulse generate`` processes
configured by ``SOCIALPULSE_*`` settings; results are read with librdkafka configured by
``streams.clients.confluent_config``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from schemas.events import INPUT_TOPICS
from streams import acls, clients
from streams.settings import Settings

from ..helpers import ROOT, metric_value, spawn_worker, stop_process, wait_until, web_certs, worker_env
from .test_tls import _pem_bundle

pytestmark = pytest.mark.integration
PREFIX = "sec."
APP_ID = f"{PREFIX}socialpulse"
WORKER, SHOP, READER = ("socialpulse", "w0rker-pw"), ("shop", "sh0p-pw"), ("reader", "r3ader-pw")
READER_GROUP = "reader-"


def _admin(cluster):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": cluster.internal})


def _bindings(user: str, needs: list[acls.Need]):
    from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

    return [AclBinding(ResourceType[n.resource.upper()], n.name,
                       ResourcePatternType.PREFIXED if n.prefixed else ResourcePatternType.LITERAL,
                       f"User:{user}", "*", AclOperation[op], AclPermissionType.ALLOW)
            for n in needs for op in n.operations]


def _grant(cluster, bindings) -> None:
    admin = _admin(cluster)  # kept alive until the futures are done
    for f in admin.create_acls(bindings).values():
        f.result()


def _revoke(cluster, binding) -> None:
    from confluent_kafka.admin import AclBindingFilter

    flt = AclBindingFilter(binding.restype, binding.name, binding.resource_pattern_type, binding.principal,
                           binding.host, binding.operation, binding.permission_type)
    admin = _admin(cluster)
    for f in admin.delete_acls([flt]).values():
        assert len(f.result()) == 1


def _settings(bootstrap: str, ca: Path, user: tuple[str, str]) -> Settings:
    return Settings(broker=f"kafka://{bootstrap}", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                    sasl_username=user[0], sasl_password=user[1], ssl_cafile=str(ca), topic_prefix=PREFIX, app_id=APP_ID)


def _env(bootstrap: str, ca: Path, data_dir: Path, user: tuple[str, str]) -> dict[str, str]:
    return worker_env(bootstrap, PREFIX, data_dir, SOCIALPULSE_SECURITY_PROTOCOL="SASL_SSL",
                      SOCIALPULSE_SASL_MECHANISM="SCRAM-SHA-512", SOCIALPULSE_SASL_USERNAME=user[0],
                      SOCIALPULSE_SASL_PASSWORD=user[1], SOCIALPULSE_SSL_CAFILE=str(ca))


def _cli(env: dict[str, str], *args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "streams.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    return done, time.monotonic() - began


@pytest.fixture(scope="module")
def sasl(tmp_path_factory):
    """SASL_SSL (SCRAM-SHA-512) client listener, StandardAuthorizer, the test's users and ACLs."""
    from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    from ..kafka import KafkaCluster

    folder = tmp_path_factory.mktemp("kafka-sasl")
    certs = web_certs(folder)
    cluster = KafkaCluster(folder / "cluster", external="SASL_SSL", props={
        "listener.name.external.sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.external.scram-sha-512.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "listener.name.external.ssl.keystore.type": "PEM",
        "listener.name.external.ssl.keystore.location": str(_pem_bundle(folder, certs["key"], certs["cert"])),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:ANONYMOUS",  # the plaintext admin listener only
    }).start()
    try:
        upserts = [UserScramCredentialUpsertion(name, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096),
                                                password.encode()) for name, password in (WORKER, SHOP, READER)]
        admin = _admin(cluster)
        for f in admin.alter_user_scram_credentials(upserts).values():
            f.result()
        settings = _settings(cluster.bootstrap, certs["ca"], WORKER)
        _grant(cluster, _bindings(WORKER[0], acls.needs(settings)))
        _grant(cluster, _bindings(SHOP[0], acls.needs(settings, "generator")))
        _grant(cluster, _bindings(READER[0], [acls.Need("topic", settings.topic("socialpulse.results"), ("READ",)),
                                              acls.Need("group", READER_GROUP, ("READ",), prefixed=True)]))
        # a user knows its password once the SCRAM credential reached the broker's metadata
        wait_until(lambda: asyncio.run(clients.preflight(settings)) is None, 30, interval=0.5, what="SCRAM user")
        yield cluster, certs["ca"]
    finally:
        cluster.stop()


def test_worker_creates_its_topics_and_counts_over_sasl_scram_with_only_the_documented_acls(sasl, tmp_path):
    cluster, ca = sasl
    env = _env(cluster.bootstrap, ca, tmp_path / "data", WORKER)
    worker = spawn_worker(env, tmp_path, "sasl-worker")
    try:
        worker.wait_ready(120)
        meta = _admin(cluster).list_topics(timeout=10).topics
        assert {PREFIX + t for t in INPUT_TOPICS} | {f"{PREFIX}socialpulse.results", f"{APP_ID}-__assignor-__leader"} <= set(meta)

        start = int(time.time() * 1000) - 20 * 60_000  # twenty minutes of history: 1m windows close
        gen, _ = _cli(_env(cluster.bootstrap, ca, tmp_path / "gen", SHOP), "generate", "--rate", "20", "--duration",
                      "240", "--seed", "3", "--start", str(start), "--fast", timeout=120)
        assert gen.returncode == 0, gen.stderr[-2000:]
        counts = {k: int(v) for k, v in (p.split("=") for p in gen.stdout.split())}
        assert counts["likes"] > 100

        wait_until(lambda: metric_value(worker.metrics(), "socialpulse_events_total", topic="likes",
                                        outcome="accepted") == counts["likes"],
                   120, interval=1, what=f"{counts['likes']} likes accepted over SASL_SSL")

        from confluent_kafka import Consumer

        reader = Consumer(clients.confluent_config(_settings(cluster.bootstrap, ca, READER)) | {
            "group.id": f"{READER_GROUP}{time.time_ns()}", "auto.offset.reset": "earliest", "enable.auto.commit": False})
        reader.subscribe([f"{PREFIX}socialpulse.results"])
        latest: dict[str, tuple[int, float]] = {}
        try:
            def all_likes_published() -> bool:
                for _ in range(500):
                    msg = reader.poll(0.2)
                    if msg is None:
                        break
                    if msg.error():
                        assert "AUTHORIZATION" not in str(msg.error()), msg.error()
                        continue
                    r = orjson.loads(msg.value())
                    if r["metric"] == "engagements" and r["window"] == "1m" and (
                            r["key"] not in latest or r["revision"] >= latest[r["key"]][0]):
                        latest[r["key"]] = (r["revision"], r["value"])
                return sum(v for _, v in latest.values()) == counts["likes"]

            wait_until(all_likes_published, 120, interval=0.5, what="every like in closed 1m windows")
        finally:
            reader.close()
    finally:
        stop_process(worker.proc)
    assert worker.proc.returncode == 0, worker.log.read_text()[-2000:]


def test_a_wrong_password_stops_start_up_within_seconds_naming_the_sasl_settings(sasl, tmp_path):
    cluster, ca = sasl
    env = _env(cluster.bootstrap, ca, tmp_path / "d", (WORKER[0], "not-the-password"))
    for args in (("worker",), ("generate", "--rate", "1", "--duration", "1")):
        done, took = _cli(env, *args)
        assert done.returncode != 0, done.stdout[-1000:]
        assert took < 15, f"{args[0]} took {took:.1f}s to give up"
        for name in ("SOCIALPULSE_SASL_USERNAME", "SOCIALPULSE_SASL_PASSWORD", "SOCIALPULSE_SASL_MECHANISM"):
            assert name in done.stderr, done.stderr[-1500:]
        assert "refused the credentials" in done.stderr and "KeyError" not in done.stderr, done.stderr[-1500:]


def test_each_documented_acl_is_needed_and_its_absence_is_named(sasl):
    """Every ACL of the list removed in turn: the start-up check names it (in-process, fast)."""
    cluster, ca = sasl
    settings = _settings(cluster.bootstrap, ca, WORKER)
    asyncio.run(acls.check(settings))  # the full list passes
    existing = set(_admin(cluster).list_topics(timeout=10).topics)
    checked = 0
    for need in acls.needs(settings):
        for binding in _bindings(WORKER[0], [need]):
            probe = acls.probe(need) if need.prefixed else need.name
            if binding.operation.name == "CREATE" and probe in existing:
                continue  # Create matters only while the topic does not exist
            _revoke(cluster, binding)
            try:
                message = wait_until(lambda: _refused(settings), 15, interval=0.3, what=f"{binding} refused")
                op, kind = binding.operation.name, need.resource
                assert f"refused {op} on {kind} {need.name}" in message, message
                assert "docs/operations.md, 'ACLs the worker needs'" in message, message
                checked += 1
            finally:
                _grant(cluster, [binding])
    assert checked >= len(acls.needs(settings))
    wait_until(lambda: asyncio.run(acls.check(settings)) is None, 15, what="every ACL back")


@pytest.mark.parametrize(("resource", "operation", "fragment"), [
    ("topic", "WRITE", f"refused WRITE on topic {PREFIX}socialpulse.results (TopicAuthorizationFailed)"),
    ("group", "READ", f"refused READ on group {APP_ID} (GroupAuthorizationFailed)"),
])
def test_a_worker_missing_one_acl_stops_at_start_up_naming_it(sasl, tmp_path, resource, operation, fragment):
    cluster, ca = sasl
    settings = _settings(cluster.bootstrap, ca, WORKER)
    name = settings.topic("socialpulse.results") if resource == "topic" else APP_ID
    (binding,) = [b for b in _bindings(WORKER[0], acls.needs(settings))
                  if b.name == name and b.operation.name == operation]
    _revoke(cluster, binding)
    try:
        wait_until(lambda: _refused(settings), 15, interval=0.3, what="the broker applying the removal")
        done, took = _cli(_env(cluster.bootstrap, ca, tmp_path / "d", WORKER), "worker", timeout=90)
    finally:
        _grant(cluster, [binding])
    assert done.returncode != 0 and fragment in done.stderr, done.stderr[-2000:]
    assert "SASL user 'socialpulse'" in done.stderr and took < 30, (took, done.stderr[-500:])


def _refused(settings: Settings) -> str:
    """The start-up check's refusal, or "" when it passes."""
    try:
        asyncio.run(acls.check(settings))
    except acls.Refused as exc:
        return str(exc)
    return ""


@pytest.fixture(scope="module")
def mtls(tmp_path_factory):
    """An SSL client listener that requires a client certificate signed by the test CA."""
    from ..kafka import KafkaCluster

    folder = tmp_path_factory.mktemp("kafka-mtls")
    certs = web_certs(folder)
    cluster = KafkaCluster(folder / "cluster", external="SSL", props={
        "listener.name.external.ssl.keystore.type": "PEM",
        "listener.name.external.ssl.keystore.location": str(_pem_bundle(folder, certs["key"], certs["cert"])),
        "listener.name.external.ssl.truststore.type": "PEM",
        "listener.name.external.ssl.truststore.location": str(certs["ca"]),
        "listener.name.external.ssl.client.auth": "required",
    }).start()
    try:
        yield cluster, certs
    finally:
        cluster.stop()


def test_mutual_tls_works_with_a_client_certificate_and_names_the_setting_without_one(mtls, tmp_path):
    cluster, certs = mtls
    env = worker_env(cluster.bootstrap, PREFIX, tmp_path / "data", SOCIALPULSE_SECURITY_PROTOCOL="SSL",
                     SOCIALPULSE_SSL_CAFILE=str(certs["ca"]))
    done, took = _cli(env, "worker")
    assert done.returncode != 0 and took < 15, done.stderr[-1500:]
    assert "SOCIALPULSE_SSL_CERTFILE" in done.stderr and "client certificate" in done.stderr, done.stderr[-1500:]

    env |= {"SOCIALPULSE_SSL_CERTFILE": str(certs["client_cert"]), "SOCIALPULSE_SSL_KEYFILE": str(certs["client_key"])}
    worker = spawn_worker(env, tmp_path, "mtls-worker")
    try:
        worker.wait_ready(120)
        gen, _ = _cli(env, "generate", "--rate", "20", "--duration", "60", "--seed", "5", "--fast")
        assert gen.returncode == 0, gen.stderr[-2000:]
        likes = int(dict(p.split("=") for p in gen.stdout.split())["likes"])
        wait_until(lambda: metric_value(worker.metrics(), "socialpulse_events_total", topic="likes",
                                        outcome="accepted") == likes, 90, interval=1, what=f"{likes} likes over mTLS")
    finally:
        stop_process(worker.proc)
    assert worker.proc.returncode == 0, worker.log.read_text()[-2000:]
