"""The web port secured like an exporter (SOCIALPULSE_WEB_CONFIG, streams/web_security.py), with
real workers: two workers over TLS with basic auth and a bearer token (401 without credentials
and with a wrong password, plain HTTP refused, the account API forwarded between the workers
over https), a worker that requires client certificates, and a real Prometheus scraping over
TLS with basic auth."""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
from pathlib import Path

import bcrypt
import orjson
import pytest
from confluent_kafka import Producer

from streams.windows import iso

from ..helpers import Worker, free_port, http_get, spawn_worker, stop_process, wait_until, web_certs, worker_env

pytestmark = pytest.mark.integration
PREFIX = "websec."
PASSWORD, TOKEN = "scrape-Secret-7", "api-token-Secret-9"
BASIC = {"Authorization": "Basic " + base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()}
BEARER = {"Authorization": f"Bearer {TOKEN}"}
ACCOUNTS = [("instagram", f"shop-{i}") for i in range(6)]  # on both of the two partitions


def hashed(secret: str) -> str:
    return bcrypt.hashpw(secret.encode(), bcrypt.gensalt(6)).decode()


def trusting(certs: dict[str, Path], client: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs["ca"]))
    if client:
        ctx.load_cert_chain(str(certs["client_cert"]), str(certs["client_key"]))
    return ctx


def secured(worker: Worker, certs: dict[str, Path], headers: dict[str, str] | None = None) -> Worker:
    worker.scheme, worker.context, worker.headers = "https", trusting(certs), headers
    return worker


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return web_certs(tmp_path_factory.mktemp("webcerts"))


@pytest.fixture(scope="module")
def pair(broker, certs, tmp_path_factory):
    """Two workers over TLS with a basic-auth user and a bearer token, fed likes of ACCOUNTS."""
    tmp = tmp_path_factory.mktemp("websec")
    config = tmp / "web.config.yml"
    config.write_text(
        f"tls_server_config:\n  cert_file: {certs['cert']}\n  key_file: {certs['key']}\n"
        f"basic_auth_users:\n  prometheus: '{hashed(PASSWORD)}'\n"
        f"bearer_tokens:\n  dashboard: '{hashed(TOKEN)}'\n"
        f"peer_tls_config:\n  ca_file: {certs['ca']}\n"
    )
    workers = []
    for name in ("a", "b"):
        env = worker_env(broker, PREFIX, tmp / f"data-{name}", SOCIALPULSE_WEB_CONFIG=str(config),
                         SOCIALPULSE_TRAILING_WINDOWS="5m", SOCIALPULSE_BUCKET="10s")
        workers.append(secured(spawn_worker(env, tmp, name), certs, BASIC))
    for w in workers:
        w.wait_ready(90)
    producer = Producer({"bootstrap.servers": broker})
    now = int(time.time() * 1000)
    for i, (platform, account) in enumerate(ACCOUNTS):
        for n in range(i + 1):
            event = {"event_id": f"ws-{account}-{n}", "ts": iso(now), "platform": platform, "account_id": account,
                     "post_id": "p1", "actor_id": f"u{n}"}
            producer.produce(PREFIX + "likes", orjson.dumps(event))
    assert producer.flush(15) == 0
    yield workers
    for w in workers:
        stop_process(w.proc)


def test_without_credentials_metrics_and_the_api_are_401_and_leak_nothing(pair):
    a = pair[0]
    wrong = {"Authorization": "Basic " + base64.b64encode(b"prometheus:guess").decode()}
    for path in ("/metrics", "/api/v1/accounts/instagram/shop-1", "/api/v1/accounts/instagram/shop-1/settings",
                 "/table/", "/router/"):
        for headers in ({}, wrong, {"Authorization": "Bearer guess"}):
            status, body = http_get(a.url + path, headers=headers, context=a.context)
            assert (status, body) == (401, b"401 Unauthorized\n"), (path, headers)
    # the probes stay open (over TLS): the kubelet cannot send credentials
    assert http_get(a.url + "/readyz", context=a.context)[0] == 200
    assert http_get(a.url + "/healthz", context=a.context)[0] == 200


def test_with_basic_auth_or_a_bearer_token_metrics_and_the_api_answer(pair):
    a = pair[0]
    status, body = http_get(a.url + "/metrics", headers=BASIC, context=a.context)
    assert status == 200 and b"socialpulse_events_total" in body
    status, body = http_get(a.url + "/metrics", headers=BEARER, context=a.context)
    assert status == 200 and b"socialpulse_events_total" in body


def test_tls_is_required(pair):
    a = pair[0]
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        http_get(f"http://127.0.0.1:{a.web_port}/metrics", headers=BASIC)
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        http_get(a.url + "/metrics", headers=BASIC, context=ssl.create_default_context())  # not our CA


def test_the_account_api_is_forwarded_between_workers_over_tls(pair):
    """Each worker owns one of the two partitions: one answers for every account, the other's
    accounts through the router, over https with the caller's credentials passed on."""
    def answers() -> dict[tuple[str, str, int], tuple[int, dict]]:
        out = {}
        for i, w in enumerate(pair):
            for n, (platform, account) in enumerate(ACCOUNTS):
                headers = BEARER if n % 2 else BASIC
                status, body = http_get(f"{w.url}/api/v1/accounts/{platform}/{account}", headers=headers,
                                        context=w.context, timeout=10)
                out[(platform, account, i)] = (status, orjson.loads(body) if status == 200 else {})
        return out

    seen: list = []

    def complete():
        seen[:] = [answers()]
        return all(status == 200 and body["engagement"]["windows"]["5m"]["engagements"] == int(acc[5:]) + 1
                   for (_, acc, _), (status, body) in seen[0].items())

    wait_until(complete, 90, interval=1, what="every account from both workers")
    got = seen[0]
    partitions = {got[(p, a, 0)][1]["partition"] for p, a in ACCOUNTS}
    assert partitions == {0, 1}  # both workers' keys were asked of both: half of them forwarded
    for platform, account in ACCOUNTS:
        assert got[(platform, account, 0)][1] == got[(platform, account, 1)][1]
    logs = "".join(w.log.read_text() for w in pair)
    assert "could not route" not in logs
    assert PASSWORD not in logs and TOKEN not in logs


def test_a_worker_requiring_client_certificates_refuses_a_client_without_one(broker, certs, tmp_path):
    config = tmp_path / "web.config.yml"
    config.write_text(
        f"tls_server_config:\n  cert_file: {certs['cert']}\n  key_file: {certs['key']}\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {certs['ca']}\n  min_version: TLS12\n"
        f"peer_tls_config:\n  ca_file: {certs['ca']}\n"
    )
    env = worker_env(broker, "websec-mtls.", tmp_path / "data", SOCIALPULSE_WEB_CONFIG=str(config))
    worker = spawn_worker(env, tmp_path, "mtls")
    worker.scheme, worker.context = "https", trusting(certs, client=True)
    try:
        worker.wait_ready(90)
        status, body = worker.get("/metrics")
        assert status == 200 and b"socialpulse_events_total" in body
        with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
            http_get(worker.url + "/metrics", context=trusting(certs))  # no client certificate
    finally:
        stop_process(worker.proc)


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is not installed")
def test_prometheus_scrapes_over_tls_with_basic_auth(pair, certs, tmp_path):
    a = pair[0]
    (tmp_path / "password").write_text(PASSWORD)
    config = tmp_path / "prometheus.yml"
    # as deploy/kubernetes/prometheus-scrape.yaml: the password and the CA are files
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n  - job_name: socialpulse\n    scheme: https\n"
        f"    basic_auth: {{username: prometheus, password_file: {tmp_path / 'password'}}}\n"
        f"    tls_config: {{ca_file: {certs['ca']}, server_name: localhost}}\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{a.web_port}']}}]\n"
    )
    check = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"), start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_get(url + "/-/ready")[0] == 200, 30, what="prometheus ready")

        def scraped():
            body = json.loads(http_get(url + "/api/v1/query?" + urllib.parse.urlencode(
                {"query": 'up{job="socialpulse"} == 1 and on() count(socialpulse_events_total) > 0'}))[1])
            return body["data"]["result"]

        assert wait_until(scraped, 30, what="up == 1 with the worker's metrics")
        targets = json.loads(http_get(url + "/api/v1/targets")[1])["data"]["activeTargets"]
        assert [(t["health"], t["scrapeUrl"].split(":")[0]) for t in targets] == [("up", "https")]
    finally:
        stop_process(proc)
