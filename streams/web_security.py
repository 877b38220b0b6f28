"""The web port's security: ``SOCIALPULSE_WEB_CONFIG``, a web.config.yml in the Prometheus
exporter-toolkit convention.

It owns the file's format (TLS with an optional client CA, basic-auth users with bcrypt
hashes, and two additions of ours: API bearer tokens and the TLS a worker uses to call its
peers), the server and peer TLS contexts, and the middleware that answers 401 to a request
without valid credentials. Everything but the kubelet's probes (``OPEN_PATHS``) is guarded.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import hmac
import os
import re
import secrets
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import bcrypt
import yaml
from aiohttp import ClientSession, TCPConnector, web
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

__all__ = ["OPEN_PATHS", "Credentials", "WebConfig", "guard", "load_web_config"]

#: answered without credentials: the kubelet's probes cannot easily send them (no account data there)
OPEN_PATHS = frozenset({"/healthz", "/readyz"})

_BCRYPT = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
_TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                 "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_TLSName = Literal["TLS10", "TLS11", "TLS12", "TLS13"]
# exporter-toolkit's names; RequestClientCert and RequireAnyClientCert (a certificate taken
# without verifying it) have no equivalent in Python's ssl module, so they are refused
_CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
# checked for an unknown user name, so that a wrong name costs as long as a wrong password
_DUMMY_HASH = b"$2b$10$cNA9GrVNd6V6gWYqTe2j0..FBcRQxPVCig5Y9o/h8g35/y0BHDFEe"  # of a random, forgotten password
_CACHE_SIZE = 256


def _readable(path: str) -> str:
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise ValueError(f"no readable file at {path}")
    return path


def _hashes(value: object) -> object:
    if not isinstance(value, dict):
        return value or {}  # None is no users; anything else pydantic refuses
    for name, hashed in value.items():
        if not isinstance(hashed, str) or not _BCRYPT.match(hashed):
            # the value itself is not echoed: it may be a password pasted by mistake
            raise ValueError(f"{name}: not a bcrypt hash ($2a$, $2b$ or $2y$; htpasswd -nBC 12 {name})")
    return value


class _Strict(BaseModel):
    # unknown keys are refused (as exporter-toolkit does): a misspelt security setting must not be ignored
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSServerConfig(_Strict):
    cert_file: str
    key_file: str
    client_auth_type: Literal["NoClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"] = "NoClientCert"
    client_ca_file: str | None = None
    min_version: _TLSName = "TLS12"
    max_version: _TLSName | None = None

    @field_validator("cert_file", "key_file", "client_ca_file")
    @classmethod
    def _file(cls, value: str | None) -> str | None:
        return _readable(value) if value is not None else None

    @model_validator(mode="after")
    def _client_ca(self) -> TLSServerConfig:
        if self.client_auth_type != "NoClientCert" and not self.client_ca_file:
            raise ValueError(f"client_auth_type {self.client_auth_type} needs client_ca_file")
        if self.client_ca_file and self.client_auth_type == "NoClientCert":
            raise ValueError("client_ca_file is set but client_auth_type is NoClientCert")
        return self


class PeerTLSConfig(_Strict):
    """How a worker calls the worker that owns an account (the API forwards there)."""

    ca_file: str | None = None  # the CA that signed the peers' certificates; default: the system's
    cert_file: str | None = None  # a client certificate; default: the server's, when it requires one
    key_file: str | None = None

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _file(cls, value: str | None) -> str | None:
        return _readable(value) if value is not None else None

    @model_validator(mode="after")
    def _pair(self) -> PeerTLSConfig:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together")
        return self


class WebConfig(_Strict):
    """The parsed web.config.yml (``load_web_config``)."""

    tls_server_config: TLSServerConfig | None = None
    basic_auth_users: dict[str, str] = {}
    #: ours: API (and /metrics) bearer tokens, name -> bcrypt hash of the token
    bearer_tokens: dict[str, str] = {}
    #: ours: TLS towards the other workers
    peer_tls_config: PeerTLSConfig | None = None

    @field_validator("basic_auth_users", "bearer_tokens", mode="before")
    @classmethod
    def _bcrypt(cls, value: object) -> object:
        return _hashes(value)

    @model_validator(mode="after")
    def _peer_needs_tls(self) -> WebConfig:
        if self.peer_tls_config is not None and self.tls_server_config is None:
            raise ValueError("peer_tls_config needs tls_server_config (the peers serve plain HTTP otherwise)")
        return self

    @property
    def scheme(self) -> str:
        return "https" if self.tls_server_config else "http"

    @property
    def auth_required(self) -> bool:
        return bool(self.basic_auth_users or self.bearer_tokens)

    def server_context(self) -> ssl.SSLContext | None:
        tls = self.tls_server_config
        if tls is None:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = _TLS_VERSIONS[tls.min_version]
        if tls.max_version:
            ctx.maximum_version = _TLS_VERSIONS[tls.max_version]
        _load(ctx.load_cert_chain, "tls_server_config: cert_file and key_file", tls.cert_file, tls.key_file)
        ctx.verify_mode = _CLIENT_AUTH[tls.client_auth_type]
        if tls.client_ca_file:
            _load(ctx.load_verify_locations, "tls_server_config.client_ca_file", tls.client_ca_file)
        return ctx

    def peer_context(self) -> ssl.SSLContext | None:
        tls = self.tls_server_config
        if tls is None:
            return None
        peer = self.peer_tls_config or PeerTLSConfig()
        ctx = ssl.create_default_context()
        if peer.ca_file:
            _load(ctx.load_verify_locations, "peer_tls_config.ca_file", peer.ca_file)
        if peer.cert_file or peer.key_file:
            _load(ctx.load_cert_chain, "peer_tls_config: cert_file and key_file", peer.cert_file, peer.key_file)
        elif tls.client_auth_type != "NoClientCert":
            _load(ctx.load_cert_chain, "tls_server_config: cert_file and key_file", tls.cert_file, tls.key_file)
        return ctx

    def peer_client(self) -> Callable[[], ClientSession]:
        """Faust's ``HttpClient``: the session ``app.router.route_req`` forwards requests with."""
        ctx = self.peer_context()
        return lambda: ClientSession(connector=TCPConnector(ssl=ctx if ctx is not None else True))


def _load(method: Callable[..., Any], what: str, *files: str | None) -> None:
    try:
        method(*files)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"{what}: cannot load ({getattr(exc, 'reason', None) or exc.strerror or type(exc).__name__})") from None


@functools.cache
def load_web_config(path: str) -> WebConfig:
    """Read and check the file, TLS material included; ``ValueError`` says what is wrong (no secret in it)."""
    _readable(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: not a readable YAML file ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of tls_server_config, basic_auth_users, ...")
    try:
        config = WebConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        raise ValueError(f"{path}: {problems}") from None
    config.server_context()  # a certificate that does not load stops start-up here, not at the first request
    config.peer_context()
    return config


class Credentials:
    """Checks an ``Authorization`` header against the bcrypt hashes.

    bcrypt is slow on purpose (tens of milliseconds) and Prometheus scrapes every few
    seconds, so each outcome is cached, as exporter-toolkit does: the key is an HMAC of the
    credentials under a per-process random key, so no password is kept. One check runs at a
    time, in a thread, so a flood of wrong passwords cannot take every core or the event loop.
    """

    def __init__(self, users: Mapping[str, str], tokens: Mapping[str, str]) -> None:
        self._users = {name: h.encode() for name, h in users.items()}
        self._tokens = [(name, h.encode()) for name, h in tokens.items()]
        self._key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, str | None] = OrderedDict()
        self._lock = asyncio.Lock()

    async def identify(self, authorization: str | None) -> str | None:
        """Who the header proves to be (a user or token name), or None."""
        scheme, _, secret = (authorization or "").strip().partition(" ")
        scheme, secret = scheme.lower(), secret.strip()
        if scheme not in ("basic", "bearer") or not secret:
            return None
        digest = hmac.new(self._key, f"{scheme} {secret}".encode(), hashlib.sha256).digest()
        if digest in self._cache:
            self._cache.move_to_end(digest)
            return self._cache[digest]
        async with self._lock:
            who = await asyncio.to_thread(self._check, scheme, secret)
        self._cache[digest] = who
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return who

    def _check(self, scheme: str, secret: str) -> str | None:
        if scheme == "bearer":
            found = None
            for name, hashed in self._tokens:  # every hash, whichever matches: the time says nothing
                if _matches(secret.encode(), hashed):
                    found = name
            return found
        try:
            user, colon, password = base64.b64decode(secret, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        known = user in self._users
        ok = _matches(password.encode(), self._users.get(user, _DUMMY_HASH))
        return user if colon and known and ok else None


def _matches(secret: bytes, hashed: bytes) -> bool:
    # bcrypt reads 72 bytes at most (htpasswd and Go's bcrypt hash only those); bcrypt 5 refuses more
    return bcrypt.checkpw(secret[:72], hashed)


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def guard(config: WebConfig) -> Callable[[web.Request, _Handler], Awaitable[web.StreamResponse]]:
    """The aiohttp middleware: a request to a guarded path without valid credentials gets 401
    (when the file names users or tokens; TLS alone, client certificates included, guards nothing more)."""
    credentials = Credentials(config.basic_auth_users, config.bearer_tokens)
    challenge = 'Basic realm="socialpulse"' + (', Bearer realm="socialpulse"' if config.bearer_tokens else "")

    @web.middleware
    async def middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if not config.auth_required or request.path in OPEN_PATHS or await credentials.identify(request.headers.get("Authorization")):
            return await handler(request)
        # the same short body for every path, known or not: nothing about metrics or accounts
        return web.Response(status=401, text="401 Unauthorized\n", headers={"WWW-Authenticate": challenge})

    return middleware
