"""Every Kafka client socialpulse builds, built here from the settings.

Servers and security (``SOCIALPULSE_BROKER``, ``SECURITY_PROTOCOL``, ``SASL_*``,
``SSL_*``) reach a client in one place only, so no client (the Faust app, the
admin that creates topics, the generator's producer, a tool's consumer, the
changelog-end probe) can ever be built without them. ``tests/unit/streams/test_clients.py``
fails if a module builds a Kafka client any other way.

``explain`` turns a failed first contact into a message that names the setting
to look at (an untrusted certificate, refused credentials, a plaintext client
talking to a TLS port).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.conn import create_conn
from faust.types.auth import CredentialsT, SASLMechanism

from .settings import Settings

__all__ = [
    "servers", "ssl_context", "faust_credentials", "aiokafka_kwargs", "confluent_config", "Refused", "refused", "DOCS",
    "producer", "consumer", "reader", "admin", "client", "explain", "preflight",
]

_SCRAM = {
    "PLAIN": SASLMechanism.PLAIN,
    "SCRAM-SHA-256": SASLMechanism.SCRAM_SHA_256,
    "SCRAM-SHA-512": SASLMechanism.SCRAM_SHA_512,
}


def servers(settings: Settings) -> list[str]:
    """``host:port`` of every bootstrap server in ``SOCIALPULSE_BROKER``."""
    out = []
    for url in settings.broker.split(","):
        server = url.strip().split("://", 1)[-1]
        out.append(server if re.search(r":\d+$", server) else f"{server}:9092")
    return out


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of ``SSL`` / ``SASL_SSL`` (``SSL_CAFILE``, ``SSL_CERTFILE``, ``SSL_KEYFILE``)."""
    if settings.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(cafile=settings.ssl_cafile or None)
    if settings.ssl_certfile:
        context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile or None)
    return context


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """The same security for the Faust app's own consumer, producer and admin."""
    proto = settings.security_protocol
    if proto == "PLAINTEXT":
        return None
    context = ssl_context(settings)
    if proto == "SSL":
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=settings.sasl_username,
        password=settings.sasl_password,
        ssl_context=context,
        mechanism=_SCRAM[settings.sasl_mechanism],
    )


def aiokafka_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments every aiokafka client gets: servers and security."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": servers(settings),
        "security_protocol": settings.security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if settings.security_protocol.startswith("SASL"):
        kwargs.update(
            sasl_mechanism=settings.sasl_mechanism,
            sasl_plain_username=settings.sasl_username,
            sasl_plain_password=settings.sasl_password,
        )
    return kwargs


def confluent_config(settings: Settings) -> dict[str, Any]:
    """The same for a confluent-kafka (librdkafka) client, for tools and tests."""
    config: dict[str, Any] = {
        "bootstrap.servers": ",".join(servers(settings)),
        "security.protocol": settings.security_protocol.lower(),
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        if settings.ssl_cafile:
            config["ssl.ca.location"] = settings.ssl_cafile
        if settings.ssl_certfile:
            config["ssl.certificate.location"] = settings.ssl_certfile
        if settings.ssl_keyfile:
            config["ssl.key.location"] = settings.ssl_keyfile
    if settings.security_protocol.startswith("SASL"):
        config.update({
            "sasl.mechanism": settings.sasl_mechanism,
            "sasl.username": settings.sasl_username,
            "sasl.password": settings.sasl_password,
        })
    return config


def producer(settings: Settings, **kwargs: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(**aiokafka_kwargs(settings), **kwargs)


def consumer(settings: Settings, *topics: str, **kwargs: Any) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(*topics, **aiokafka_kwargs(settings), **kwargs)


def reader(settings: Settings, **kwargs: Any) -> AIOKafkaConsumer:
    """A consumer outside any group: it assigns itself partitions and commits nothing (every
    worker reads all of ``socialpulse.accounts`` from the start)."""
    return AIOKafkaConsumer(**aiokafka_kwargs(settings), **({
        "group_id": None, "enable_auto_commit": False, "auto_offset_reset": "earliest"} | kwargs))


def admin(settings: Settings, **kwargs: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**aiokafka_kwargs(settings), **kwargs)


def client(settings: Settings, **kwargs: Any) -> AIOKafkaClient:
    """aiokafka's low-level client, for a request the admin has no method for (streams/acls.py)."""
    return AIOKafkaClient(**aiokafka_kwargs(settings), **kwargs)


async def preflight(settings: Settings, timeout: float = 10.0) -> None:
    """Open one connection to the first reachable bootstrap server the way the clients will
    (TLS handshake included, then the SASL login), so a wrong CA, a TLS/plaintext mix-up or
    refused credentials fail with their real cause instead of aiokafka's "Unable to bootstrap"
    (its bootstrap logs the login error and tries the next server, then gives up)."""
    context = ssl_context(settings)
    last: BaseException | None = None
    for server in servers(settings):
        host, _, port = server.rpartition(":")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, int(port), ssl=context, server_hostname=host if context else None), timeout)
        except (TimeoutError, OSError) as exc:
            last = exc
            continue
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
        if settings.security_protocol != "PLAINTEXT":
            await _handshake(settings, host, int(port), timeout)
        return
    if last is not None:
        raise last


async def _handshake(settings: Settings, host: str, port: int, timeout: float) -> None:
    """One Kafka request over TLS (with TLS 1.3 a broker that requires a client certificate
    refuses only after the handshake) and the SASL login; a refusal raises (SaslAuthenticationFailedError
    from Kafka, or aiokafka's SCRAM client failing on a server-final message that carries
    ``e=...`` instead of ``v=...``)."""
    kwargs = aiokafka_kwargs(settings)
    del kwargs["bootstrap_servers"]
    conn = await asyncio.wait_for(create_conn(host, port, request_timeout_ms=int(timeout * 1000), **kwargs), timeout)
    conn.close()


def refused_login(exc: BaseException) -> bool:
    """Whether ``exc`` is the broker refusing the SASL credentials."""
    name = type(exc).__name__
    if "SaslAuthentication" in name or "Authentication" in name:
        return True
    # aiokafka's SCRAM client reads the server-final message as "v=<signature>"; a refusal is
    # "e=<error>" (RFC 5802), which surfaces as KeyError('v') or a wrong-signature ValueError
    if isinstance(exc, KeyError) and exc.args == ("v",):
        return True
    return isinstance(exc, ValueError) and "wrong signature" in str(exc)


class Refused(Exception):
    """The broker refused an operation socialpulse needs (``streams.acls``; the message says which
    and where)."""


#: where the ACLs a worker needs are listed
DOCS = "docs/operations.md, 'ACLs the worker needs'"
#: the error each refused operation comes back as
_ERRORS = {"topic": "TopicAuthorizationFailed", "group": "GroupAuthorizationFailed"}


def refused(operation: str, resource: str, name: str, settings: Settings, error: str | None = None,
            prefix: str | None = None) -> str:
    """The message of a refused operation: what, where, for whom, what to grant, where the list is."""
    who = f"SASL user {settings.sasl_username!r}" if settings.security_protocol.startswith("SASL") else (
        "the client certificate's principal" if settings.ssl_certfile else "this client's principal")
    error = error or _ERRORS.get(resource, "authorization failed")
    where = f"{resource}s with the prefix {prefix}" if prefix else f"{resource} {name}"
    return (f"the broker at {settings.broker} refused {operation} on {resource} {name} ({error}) for {who}: "
            f"grant {operation} on {where} ({DOCS})")


def explain(exc: BaseException, settings: Settings) -> str:
    """A failed first contact with the cluster, with the settings to look at."""
    text = f"{type(exc).__name__}: {exc}"
    where = f"the broker at {settings.broker} (SOCIALPULSE_BROKER)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"the TLS certificate of {where} is not trusted: {exc.verify_message or exc}. "
                "Set SOCIALPULSE_SSL_CAFILE to the CA that signed it")
    if isinstance(exc, ssl.SSLError):
        return (f"TLS with {where} failed: {text}. Check SOCIALPULSE_SECURITY_PROTOCOL (is the port a TLS "
                "listener?), SOCIALPULSE_SSL_CAFILE, SOCIALPULSE_SSL_CERTFILE and SOCIALPULSE_SSL_KEYFILE")
    if isinstance(exc, Refused):  # a missing ACL: the message already names it
        return str(exc)
    name = type(exc).__name__
    if refused_login(exc) or "authentication" in str(exc).lower():
        if isinstance(exc, KeyError | ValueError):
            text = f"the SCRAM exchange ended without the server's signature ({text})"
        return (f"{where} refused the credentials: {text}. Check SOCIALPULSE_SASL_USERNAME, "
                f"SOCIALPULSE_SASL_PASSWORD and SOCIALPULSE_SASL_MECHANISM ({settings.sasl_mechanism})")
    if "UnsupportedSaslMechanism" in name or "IllegalSaslState" in name:
        return (f"{where} does not accept SASL {settings.sasl_mechanism}: {text}. "
                "Check SOCIALPULSE_SASL_MECHANISM and SOCIALPULSE_SECURITY_PROTOCOL")
    hint = ""
    if settings.security_protocol in ("SSL", "SASL_SSL") and "closed" in str(exc):
        # TLS 1.3: a broker that requires a client certificate closes the connection after the handshake
        return (f"{where} closed the connection after the TLS handshake: {text}. If it requires a client "
                "certificate (mutual TLS), set SOCIALPULSE_SSL_CERTFILE and SOCIALPULSE_SSL_KEYFILE"
                + (" (the broker may not trust this one)" if settings.ssl_certfile else "")
                + "; check SOCIALPULSE_SECURITY_PROTOCOL too")
    if settings.security_protocol in ("PLAINTEXT", "SASL_PLAINTEXT"):
        hint = " (if it is a TLS listener, set SOCIALPULSE_SECURITY_PROTOCOL=SSL or SASL_SSL)"
    return f"cannot reach {where}{hint}: {text}. Check SOCIALPULSE_SECURITY_PROTOCOL too"
