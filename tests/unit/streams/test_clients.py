"""One way to build every Kafka client: streams/clients.py."""

import ast
import asyncio
import ssl
import subprocess
from pathlib import Path

import pytest

from streams import clients
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
#: what builds a Kafka client: aiokafka's and confluent-kafka's classes, and Faust's app
CONSTRUCTORS = {
    "AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "AIOKafkaClient",
    "Producer", "Consumer", "AdminClient", "App",
}
#: the factory itself, and the App subclass it configures (streams/app.py passes the credentials)
ALLOWED = {ROOT / "streams" / "clients.py", ROOT / "streams" / "app.py"}


def sources():
    for folder in ("streams", "bench", "schemas"):
        for path in (ROOT / folder).rglob("*.py"):
            if ".venvs" in path.parts or "peers" in path.parts:  # peers: other products, in their own virtualenvs
                continue
            yield path


def test_no_module_builds_a_kafka_client_but_the_factory():
    offenders = []
    for path in sources():
        if path in ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
                if name in CONSTRUCTORS:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}(...)")
    assert offenders == [], "build Kafka clients with streams.clients: " + ", ".join(offenders)


def test_the_check_itself_catches_a_client_built_by_hand(tmp_path):
    tree = ast.parse("from aiokafka import AIOKafkaProducer\np = AIOKafkaProducer(bootstrap_servers='x')\n")
    calls = [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    assert "AIOKafkaProducer" in CONSTRUCTORS & set(calls)


@pytest.mark.parametrize("proto", ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_every_security_mode_reaches_aiokafka_and_librdkafka(proto):
    s = Settings(broker="kafka://a:9093,kafka://b", security_protocol=proto, sasl_mechanism="SCRAM-SHA-256",
                 sasl_username="svc", sasl_password="pw")
    kw = clients.aiokafka_kwargs(s)
    assert kw["bootstrap_servers"] == ["a:9093", "b:9092"] and kw["security_protocol"] == proto
    assert ("ssl_context" in kw) == proto.endswith("SSL")
    assert kw.get("sasl_plain_username") == ("svc" if proto.startswith("SASL") else None)
    assert kw.get("sasl_mechanism") == ("SCRAM-SHA-256" if proto.startswith("SASL") else None)
    conf = clients.confluent_config(s)
    assert conf["security.protocol"] == proto.lower() and conf["bootstrap.servers"] == "a:9093,b:9092"
    assert conf.get("sasl.password") == ("pw" if proto.startswith("SASL") else None)

    async def build():  # aiokafka accepts the combination
        producer = clients.producer(s)
        assert producer.client._security_protocol == proto
        await producer.client.close()

    asyncio.run(build())


def test_messages_name_the_setting_to_look_at():
    s = Settings(security_protocol="SSL")
    bad_ca = ssl.SSLCertVerificationError(1, "certificate verify failed")
    bad_ca.verify_message = "self-signed certificate"
    assert "SOCIALPULSE_SSL_CAFILE" in clients.explain(bad_ca, s) and "self-signed" in clients.explain(bad_ca, s)
    from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed

    sasl = Settings(security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_mechanism="SCRAM-SHA-512")
    refused = clients.explain(SaslAuthenticationFailed("Authentication failed"), sasl)
    assert "SOCIALPULSE_SASL_PASSWORD" in refused and "SCRAM-SHA-512" in refused
    plain = clients.explain(KafkaConnectionError("Unable to bootstrap from [('x', 9092)]"), Settings())
    assert "SOCIALPULSE_BROKER" in plain and "SOCIALPULSE_SECURITY_PROTOCOL=SSL" in plain


@pytest.fixture
def tls_server(tmp_path):
    """A TLS listener with a self-signed certificate (openssl)."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def test_preflight_reports_an_untrusted_certificate_and_passes_a_trusted_one(tls_server):
    cert, key = tls_server

    async def scenario():
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=ctx)
        port = server.sockets[0].getsockname()[1]
        try:
            untrusted = Settings(broker=f"kafka://127.0.0.1:{port}", security_protocol="SSL")
            with pytest.raises(ssl.SSLCertVerificationError) as err:
                await clients.preflight(untrusted)
            assert "SOCIALPULSE_SSL_CAFILE" in clients.explain(err.value, untrusted)
            # trusted: the handshake passes; then preflight speaks Kafka, which this stand-in does not
            from aiokafka.errors import KafkaConnectionError

            with pytest.raises(KafkaConnectionError):
                await clients.preflight(Settings(broker=f"kafka://127.0.0.1:{port}", security_protocol="SSL", ssl_cafile=str(cert)))
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())
