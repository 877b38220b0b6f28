"""A secured cluster end to end: worker, generator and a results reader over TLS, on Apache
Kafka's own TLS listener (``[kafka]``) and on the embedded Tansu behind a TLS proxy (``[tansu]``).

Tansu 0.6.0 cannot serve TLS itself (``--cert`` and ``--key`` are refused together), so a
real TLS endpoint, Debian's stunnel, stands in front of it, and Tansu advertises that
endpoint: every connection a client makes after bootstrap goes through TLS too. Everything
is started as a user would: ``socialpulse worker`` and ``socialpulse generate`` with
``SOCIALPULSE_SECURITY_PROTOCOL=SSL`` and ``SOCIALPULSE_SSL_CAFILE``. The results are read
with librdkafka (confluent-kafka), an independent client, configured by streams.clients.
SASL, mutual TLS and ACLs are proven on Kafka in test_kafka_security.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from schemas.events import INPUT_TOPICS
from streams import clients
from streams.broker import start_broker, stop_process, wait_for_port
from streams.settings import Settings

from ..helpers import ROOT, free_port, metric_value, spawn_worker, wait_until, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.kafka]
STUNNEL = shutil.which("stunnel4") or shutil.which("stunnel")
PREFIX = "tls."


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_certs(folder: Path) -> tuple[Path, Path, Path, Path]:
    """A CA, a server certificate it signed (localhost, 127.0.0.1), and an unrelated CA."""
    ca, ca_key = folder / "ca.crt", folder / "ca.key"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=socialpulse test CA",
            "-keyout", str(ca_key), "-out", str(ca), "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    key, csr, cert = folder / "server.key", folder / "server.csr", folder / "server.crt"
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(csr))
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "2",
            "-extfile", str(ext), "-out", str(cert))
    other = folder / "other-ca.crt"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=someone else",
            "-keyout", str(folder / "other-ca.key"), "-out", str(other))
    return ca, cert, key, other


@pytest.fixture(scope="module", params=["tansu", "kafka"])
def tls_broker(request, tmp_path_factory):
    """A TLS-only client listener; yields (bootstrap, CA, other CA). ``kafka``: Apache Kafka's
    SSL listener (PEM certificate); ``tansu``: Tansu (plaintext, loopback) behind stunnel."""
    if request.param == "kafka":
        from ..kafka import KafkaCluster

        folder = tmp_path_factory.mktemp("kafka-tls")
        ca, cert, key, other = make_certs(folder)
        cluster = KafkaCluster(folder / "cluster", external="SSL", props={
            "listener.name.external.ssl.keystore.type": "PEM",
            "listener.name.external.ssl.keystore.location": str(_pem_bundle(folder, key, cert)),
        }).start()
        try:
            yield cluster.bootstrap, ca, other
        finally:
            cluster.stop()
        return
    if STUNNEL is None:
        pytest.fail("stunnel is not installed: `make test` installs Debian's stunnel4")
    folder = tmp_path_factory.mktemp("tls")
    ca, cert, key, other = make_certs(folder)
    plain, tls = free_port(), free_port()
    broker = start_broker(plain, advertised_port=tls)
    conf = folder / "stunnel.conf"
    conf.write_text(
        f"foreground = yes\npid = {folder / 'stunnel.pid'}\nsyslog = no\ndebug = 4\n\n"
        f"[kafka]\naccept = 127.0.0.1:{tls}\nconnect = 127.0.0.1:{plain}\ncert = {cert}\nkey = {key}\n"
        "sslVersionMin = TLSv1.2\n"
    )
    log = (folder / "stunnel.log").open("wb")
    stunnel = subprocess.Popen([STUNNEL, str(conf)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(tls)
        yield f"127.0.0.1:{tls}", ca, other
    finally:
        stop_process(stunnel)
        stop_process(broker)


def _pem_bundle(folder: Path, key: Path, cert: Path) -> Path:
    """Kafka's PEM key store: the (unencrypted PKCS#8) private key followed by the certificate."""
    pkcs8 = folder / "server.pk8"
    openssl("pkcs8", "-topk8", "-nocrypt", "-in", str(key), "-out", str(pkcs8))
    bundle = folder / "server.pem"
    bundle.write_text(pkcs8.read_text() + cert.read_text())
    return bundle


def tls_env(bootstrap: str, data_dir: Path, cafile: Path | None, **extra: str) -> dict[str, str]:
    env = worker_env(bootstrap, PREFIX, data_dir, SOCIALPULSE_SECURITY_PROTOCOL="SSL", **extra)
    if cafile is not None:
        env["SOCIALPULSE_SSL_CAFILE"] = str(cafile)
    return env


def generate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams.cli", "generate", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_worker_generator_and_results_reader_over_tls_count_exactly(tls_broker, tmp_path):
    bootstrap, ca, _ = tls_broker
    env = tls_env(bootstrap, tmp_path / "data", ca)
    start = int(time.time() * 1000) - 20 * 60_000  # twenty minutes of history: every 1m window closes
    gen = generate(env, "--rate", "40", "--duration", "300", "--seed", "7", "--start", str(start), "--fast")
    assert gen.returncode == 0, gen.stderr[-2000:]
    counts = {k: int(v) for k, v in (p.split("=") for p in gen.stdout.split())}
    topics = INPUT_TOPICS  # the generator counts duplicates and malformed records over all of them
    accepted = sum(counts.get(t, 0) for t in topics)
    assert counts["likes"] > 100 and accepted > 1000

    worker = spawn_worker(env, tmp_path, "tls-worker")
    worker.wait_ready(90)

    def counted() -> bool:
        text = worker.metrics()
        got = sum(metric_value(text, "socialpulse_events_total", topic=t, outcome="accepted") or 0 for t in topics)
        return got == accepted

    wait_until(counted, 90, interval=1, what=f"{accepted} events accepted over TLS")
    text = worker.metrics()
    assert sum(metric_value(text, "socialpulse_events_total", topic=t, outcome="duplicate") or 0 for t in topics) == counts.get("duplicate", 0)
    assert sum(metric_value(text, "socialpulse_events_total", topic=t, outcome="invalid") or 0 for t in topics) == counts.get("malformed", 0)

    # the closed 1m windows, read over TLS by librdkafka configured by streams.clients
    from confluent_kafka import Consumer

    settings = Settings(broker=f"kafka://{bootstrap}", security_protocol="SSL", ssl_cafile=str(ca))
    consumer = Consumer(clients.confluent_config(settings) | {
        "group.id": f"tls-results-{time.time_ns()}", "auto.offset.reset": "earliest", "enable.auto.commit": False,
        "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
    })
    consumer.subscribe([PREFIX + "socialpulse.results"])
    latest: dict[str, tuple[int, float]] = {}
    try:
        def all_likes_published() -> bool:
            for _ in range(500):
                msg = consumer.poll(0.2)
                if msg is None:
                    break
                if msg.error():
                    continue
                r = orjson.loads(msg.value())
                newest = r["key"] not in latest or r["revision"] >= latest[r["key"]][0]
                if r["metric"] == "engagements" and r["window"] == "1m" and newest:
                    latest[r["key"]] = (r["revision"], r["value"])
            return sum(v for _, v in latest.values()) == counts["likes"]

        wait_until(all_likes_published, 120, interval=0.5, what=f"{counts['likes']} likes in closed windows over TLS")
    finally:
        consumer.close()
    stop_process(worker.proc)
    assert worker.proc.returncode == 0


def test_an_untrusted_certificate_or_plaintext_stops_start_up_naming_the_setting(tls_broker, tmp_path):
    bootstrap, _, other = tls_broker
    for cafile, fragment in ((other, "SOCIALPULSE_SSL_CAFILE"), (None, "SOCIALPULSE_SSL_CAFILE")):
        env = tls_env(bootstrap, tmp_path / "d", cafile)
        worker = subprocess.run([sys.executable, "-m", "streams.cli", "worker"], env=env, cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        assert worker.returncode != 0 and fragment in worker.stderr and "not trusted" in worker.stderr, worker.stderr[-1500:]
        gen = generate(env, "--rate", "1", "--duration", "1")
        assert gen.returncode != 0 and fragment in gen.stderr, gen.stderr[-1500:]
    plain = worker_env(bootstrap, PREFIX, tmp_path / "p")  # PLAINTEXT against the TLS port
    worker = subprocess.run([sys.executable, "-m", "streams.cli", "worker"], env=plain, cwd=ROOT,
                            capture_output=True, text=True, timeout=90)
    assert worker.returncode != 0 and "SOCIALPULSE_SECURITY_PROTOCOL" in worker.stderr, worker.stderr[-1500:]
