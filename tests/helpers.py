"""Test helpers: real worker processes, HTTP, metrics and a librdkafka consumer (fixtures: conftest.py)."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from streams.broker import stop_process

__all__ = [
    "ROOT", "SPAWNED", "Worker", "consume_all", "free_port", "http_get", "metric_value", "spawn_worker",
    "stop_process", "wait_until", "web_certs", "worker_env",
]

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 3.0, headers: dict[str, str] | None = None,
             context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    try:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(check, timeout: float, interval: float = 0.25, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            last = check()
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The first sample of ``name`` whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


@dataclass
class Worker:
    proc: subprocess.Popen
    web_port: int
    env: dict[str, str]
    log: Path
    #: for a worker with SOCIALPULSE_WEB_CONFIG: https and what Worker.get sends
    scheme: str = "http"
    headers: dict[str, str] | None = None
    context: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.web_port}"

    def get(self, path: str) -> tuple[int, bytes]:
        return http_get(self.url + path, headers=self.headers, context=self.context)

    def metrics(self) -> str:
        return self.get("/metrics")[1].decode()

    def wait_ready(self, timeout: float = 45) -> float:
        began = time.monotonic()
        wait_until(lambda: self._alive() and self.get("/readyz")[0] == 200, timeout, what=f"worker ready ({self.log})")
        return time.monotonic() - began

    def _alive(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        return True


def worker_env(broker: str, prefix: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCIALPULSE_")}
    env |= {
        "SOCIALPULSE_BROKER": f"kafka://{broker}",
        "SOCIALPULSE_TOPIC_PREFIX": prefix,
        "SOCIALPULSE_APP_ID": f"{prefix}socialpulse",
        "SOCIALPULSE_DATA_DIR": str(data_dir),
        "SOCIALPULSE_PARTITIONS": "2",
        "SOCIALPULSE_LOG_LEVEL": "info",
    }
    return env | extra


#: every worker process a test started (stopped at session end by conftest.py)
SPAWNED: list[subprocess.Popen] = []


def spawn_worker(env: dict[str, str], log_dir: Path, name: str = "worker") -> Worker:
    """A real ``socialpulse worker`` process on a free web port (stopped at session end at the latest)."""
    port = free_port()
    log = log_dir / f"{name}-{port}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker", "--web-port", str(port)],
        env=env | {"SOCIALPULSE_WEB_HOST": "127.0.0.1"}, cwd=ROOT,
        stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    SPAWNED.append(proc)
    return Worker(proc, port, env, log)


def web_certs(folder: Path) -> dict[str, Path]:
    """A CA, a certificate it signed for localhost/127.0.0.1 (server and client use, as a worker
    calling its peers needs) and a client certificate: ``ca``, ``cert``, ``key``, ``client_cert``, ``client_key``."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    out = {"ca": folder / "ca.crt"}
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=socialpulse web test CA",
            "-keyout", str(folder / "ca.key"), "-out", str(out["ca"]), "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, cn in (("", "localhost"), ("client_", "prometheus")):
        key, csr, cert = folder / f"{name}tls.key", folder / f"{name}tls.csr", folder / f"{name}tls.crt"
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", str(key), "-out", str(csr))
        ext = folder / f"{name}ext.cnf"
        ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                       "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n")
        openssl("x509", "-req", "-in", str(csr), "-CA", str(out["ca"]), "-CAkey", str(folder / "ca.key"),
                "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert))
        out[f"{name}cert"], out[f"{name}key"] = cert, key
    return out


def consume_all(bootstrap: str, topic: str, expect: int, timeout: float = 30.0) -> list:
    """Read ``topic`` from the start with confluent-kafka (librdkafka) until ``expect`` records."""
    from confluent_kafka import Consumer

    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"test-{topic}-{time.monotonic_ns()}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
        # Tansu holds a JoinGroup for half the session timeout: keep it short
        "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
    })
    consumer.subscribe([topic])
    out: list = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(out) < expect:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            out.append(msg)
        # a little longer, to see anything beyond what was expected
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                out.append(msg)
    finally:
        consumer.close()
    return out
