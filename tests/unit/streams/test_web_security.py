"""SOCIALPULSE_WEB_CONFIG (streams/web_security.py): the file's checks, the bcrypt credentials
and their cache, and the guard on a real Faust web app (no broker): 401 without credentials,
with nothing of the metrics or accounts in it, 200 with them, probes open."""

import asyncio
import base64
import json
from pathlib import Path

import bcrypt
import pytest
from aiohttp.test_utils import TestClient, TestServer

from streams import web_security
from streams.app import create_app
from streams.settings import SettingsError, load_settings
from streams.web import register_views
from streams.web_security import Credentials, load_web_config

from ...helpers import web_certs
from .test_web import Served

PROM_HASH = bcrypt.hashpw(b"scrape-secret", bcrypt.gensalt(4)).decode()
TOKEN_HASH = bcrypt.hashpw(b"api-token-1", bcrypt.gensalt(4)).decode()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return web_certs(tmp_path_factory.mktemp("webcerts"))


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / f"web-{abs(hash(text))}.yml"
    path.write_text(text)
    return str(path)


def refusal(tmp_path: Path, text: str) -> str:
    with pytest.raises(SettingsError) as exc:
        load_settings(store="memory://", data_dir=str(tmp_path), web_config=write(tmp_path, text))
    return str(exc.value)


def test_a_full_config_loads_with_tls_users_tokens_and_peers(tmp_path, certs):
    path = write(tmp_path, f"""
tls_server_config:
  cert_file: {certs['cert']}
  key_file: {certs['key']}
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: {certs['ca']}
  min_version: TLS13
basic_auth_users:
  prometheus: {PROM_HASH}
bearer_tokens:
  dashboard: {TOKEN_HASH}
peer_tls_config:
  ca_file: {certs['ca']}
""")
    config = load_settings(store="memory://", data_dir=str(tmp_path), web_config=path)
    web = load_web_config(config.web_config)
    assert web.scheme == "https" and web.auth_required
    assert web.server_context().minimum_version.name == "TLSv1_3"
    assert set(web.basic_auth_users) == {"prometheus"} and set(web.bearer_tokens) == {"dashboard"}


def test_users_alone_need_no_tls_and_an_empty_file_guards_nothing(tmp_path):
    web = load_web_config(write(tmp_path, f"basic_auth_users: {{prometheus: '{PROM_HASH}'}}\n"))
    assert web.scheme == "http" and web.server_context() is None and web.auth_required
    assert not load_web_config(write(tmp_path, "{}\n")).auth_required


@pytest.mark.parametrize(("text", "says"), [
    ("tls_server_config: [\n", "not a readable YAML file"),
    ("basic_auth_users: {prometheus: hunter2-plain}\n", "prometheus: not a bcrypt hash"),
    ("bearer_tokens: {ci: 'sha256:abcd'}\n", "ci: not a bcrypt hash"),
    ("basic_auth_user: {}\n", "basic_auth_user: Extra inputs are not permitted"),
    ("tls_server_config: {cert_file: /nonexistent.crt, key_file: /nonexistent.key}\n", "no readable file at /nonexistent.crt"),
    ("- a list\n", "expected a mapping"),
])
def test_a_bad_file_stops_start_up_naming_the_setting(tmp_path, text, says):
    message = refusal(tmp_path, text)
    assert "SOCIALPULSE_WEB_CONFIG" in message and says in message, message


def test_a_plain_password_in_place_of_a_hash_is_never_echoed(tmp_path):
    message = refusal(tmp_path, "basic_auth_users: {prometheus: hunter2-plain}\n")
    assert "hunter2" not in message, message


def test_missing_file_and_unloadable_certificate_stop_start_up(tmp_path, certs):
    with pytest.raises(SettingsError, match="SOCIALPULSE_WEB_CONFIG: no readable file at /nowhere/web.yml"):
        load_settings(store="memory://", data_dir=str(tmp_path), web_config="/nowhere/web.yml")
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    message = refusal(tmp_path, f"tls_server_config: {{cert_file: {garbage}, key_file: {certs['key']}}}\n")
    assert "SOCIALPULSE_WEB_CONFIG" in message and "cert_file and key_file: cannot load" in message, message
    # the key of another certificate does not match
    message = refusal(tmp_path, f"tls_server_config: {{cert_file: {certs['cert']}, key_file: {certs['client_key']}}}\n")
    assert "cannot load" in message, message


@pytest.mark.parametrize(("tls", "says"), [
    ("client_auth_type: RequireAndVerifyClientCert", "needs client_ca_file"),
    ("client_auth_type: RequireAnyClientCert", "client_auth_type: Input should be"),
    ("client_ca_file: {ca}", "client_auth_type is NoClientCert"),
    ("min_version: TLS14", "min_version: Input should be"),
])
def test_inconsistent_client_auth_stops_start_up(tmp_path, certs, tls, says):
    message = refusal(tmp_path, f"tls_server_config:\n  cert_file: {certs['cert']}\n  key_file: {certs['key']}\n  "
                                f"{tls.format(ca=certs['ca'])}\n")
    assert "SOCIALPULSE_WEB_CONFIG" in message and says in message, message


def test_peer_tls_without_server_tls_is_refused(tmp_path, certs):
    message = refusal(tmp_path, f"peer_tls_config: {{ca_file: {certs['ca']}}}\n")
    assert "peer_tls_config needs tls_server_config" in message


@pytest.mark.parametrize(("header", "who"), [
    (basic("prometheus", "scrape-secret"), "prometheus"),
    (basic("prometheus", "scrape-secreT"), None),
    (basic("nobody", "scrape-secret"), None),
    (basic("prometheus", ""), None),
    ("Bearer api-token-1", "dashboard"),
    ("bearer   api-token-1 ", "dashboard"),
    ("Bearer api-token-2", None),
    ("Basic not-base64!", None),
    ("Basic " + base64.b64encode(b"no colon").decode(), None),
    ("Digest abc", None),
    ("", None),
    (None, None),
])
def test_credentials_identify_users_and_tokens(header, who):
    creds = Credentials({"prometheus": PROM_HASH}, {"dashboard": TOKEN_HASH})
    assert asyncio.run(creds.identify(header)) == who


def test_a_long_password_is_compared_on_bcrypts_72_bytes():
    long = "x" * 100
    creds = Credentials({"u": bcrypt.hashpw(long[:72].encode(), bcrypt.gensalt(4)).decode()}, {})
    assert asyncio.run(creds.identify(basic("u", long))) == "u"


def test_outcomes_are_cached_so_a_scrape_costs_one_bcrypt(monkeypatch):
    calls = []
    real = bcrypt.checkpw
    monkeypatch.setattr(web_security.bcrypt, "checkpw", lambda p, h: calls.append(1) or real(p, h))
    creds = Credentials({"prometheus": PROM_HASH}, {})

    async def scrapes():
        return [await creds.identify(h) for h in [basic("prometheus", "scrape-secret")] * 5 + [basic("prometheus", "no")] * 3]

    assert asyncio.run(scrapes()) == ["prometheus"] * 5 + [None] * 3
    assert len(calls) == 2  # one for the right password, one for the wrong one


def answers(tmp_path, web_config, requests):
    """(status, headers, body) of each (path, headers) on a real Faust web app with the guard."""
    async def run():
        settings = load_settings(store="memory://", data_dir=str(tmp_path), partitions=4, web_config=web_config)
        app = create_app(settings)
        served = Served(app, settings)
        served.metrics.events.labels("likes", "accepted").inc(7)
        served.ready = True
        register_views(app, served)
        client = TestClient(TestServer(app.web.web_app))
        await client.start_server()
        try:
            out = []
            for path, headers in requests:
                resp = await client.get(path, headers=headers)
                out.append((resp.status, resp.headers, await resp.text()))
            return out
        finally:
            await client.close()

    return asyncio.run(run())


GUARDED = ["/metrics", "/api/v1/accounts/instagram/acme", "/api/v1/accounts/instagram/acme/settings",
           "/table/", "/router/", "/", "/no/such/path"]


def test_without_credentials_every_path_but_the_probes_is_401_and_says_nothing(tmp_path):
    config = write(tmp_path, f"basic_auth_users: {{prometheus: '{PROM_HASH}'}}\nbearer_tokens: {{dashboard: '{TOKEN_HASH}'}}\n")
    wrong = {"Authorization": basic("prometheus", "guess")}
    got = answers(tmp_path, config, [(p, {}) for p in GUARDED] + [(p, wrong) for p in GUARDED])
    for status, headers, body in got:
        assert status == 401 and body == "401 Unauthorized\n"
        assert headers["WWW-Authenticate"] == 'Basic realm="socialpulse", Bearer realm="socialpulse"'
    (alive, _, _), (ready, _, body) = answers(tmp_path, config, [("/healthz", {}), ("/readyz", {})])
    assert alive == 200 and ready == 200 and json.loads(body)["ready"] is True


def test_basic_auth_or_a_bearer_token_is_let_in(tmp_path):
    config = write(tmp_path, f"basic_auth_users: {{prometheus: '{PROM_HASH}'}}\nbearer_tokens: {{dashboard: '{TOKEN_HASH}'}}\n")
    got = answers(tmp_path, config, [
        ("/metrics", {"Authorization": basic("prometheus", "scrape-secret")}),
        ("/metrics", {"Authorization": "Bearer api-token-1"}),
        ("/api/v1/accounts/instagram/acme", {"Authorization": "Bearer api-token-1"}),
        ("/api/v1/accounts/instagram/acme", {"Authorization": basic("prometheus", "scrape-secret")}),
    ])
    assert [status for status, _, _ in got] == [200] * 4
    assert 'socialpulse_events_total{outcome="accepted",topic="likes"} 7.0' in got[0][2] == got[1][2]
    assert json.loads(got[2][2])["engagement"] == {"windows": {"5m": {"engagements": 3}}}


@pytest.mark.parametrize("config", [None, "{}\n"])
def test_without_users_or_tokens_nothing_is_guarded(tmp_path, config):
    (status, _, body), = answers(tmp_path, config and write(tmp_path, config), [("/metrics", {})])
    assert status == 200 and "socialpulse_events_total" in body
