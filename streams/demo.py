"""``socialpulse demo``: embedded broker + one worker + the generator + (when the machine
has it) a real Prometheus with the alert rules, and a live summary of every family.

The summary is read from the worker's ``/metrics`` (what it shows is what Prometheus
sees) and the alerts from Prometheus's own API. The traffic carries an incident: from
``INCIDENT_AT_S`` on, instagram/in-brand-1's team answers late, so its reply SLO alerts go
pending and then fire (the demo's reply SLO is 1 minute, its normal replies take seconds).

Ctrl-C (or SIGTERM) stops everything; each child runs in its own process group and is
terminated, then killed if it lingers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from schemas.events import INPUT_TOPICS
from schemas.results import OUTCOMES

from . import generator
from .broker import BrokerError, port_in_use, start_broker, stop_process, wait_for_port
from .settings import Settings

__all__ = ["run_demo", "scrape", "summary", "sellers_table", "alerts", "start_prometheus", "DEMO_ENV", "INCIDENT_AT_S"]

Metrics = dict[str, list[tuple[dict[str, str], float]]]

#: the demo's worker settings (a user's own SOCIALPULSE_* settings win): a reply SLO a
#: demo can breach within minutes
DEMO_ENV = {"SOCIALPULSE_REPLY_SLO": "1m"}
#: seconds of traffic before the slow-replies incident starts
INCIDENT_AT_S = 60
RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "rules"


def scrape(url: str, timeout: float = 2.0) -> Metrics:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        text = resp.read().decode()
    out: Metrics = defaultdict(list)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name].append((s.labels, s.value))
    return out


def alerts(prometheus_url: str, timeout: float = 2.0) -> list[dict[str, Any]]:
    """Pending and firing alerts, from Prometheus's API."""
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/alerts", timeout=timeout) as resp:
        return list(json.loads(resp.read())["data"]["alerts"])


def _by_platform(m: Metrics, name: str, **match: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for labels, v in m.get(name, []):
        if all(labels.get(k) == want for k, want in match.items()):
            out[labels["platform"]].append(v)
    return out


def _ratio(num: list[float], den: list[float]) -> str:
    return f"{sum(num) / sum(den):.2%}" if den and sum(den) else "-"


def _seconds(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}s" if v < 120 else f"{v / 60:.0f}m"


def summary(m: Metrics, elapsed: float, active: list[dict[str, Any]] | None, prometheus: str | None) -> Group:
    """The live summary: events, then each family per platform, then the alerts (80 columns)."""
    events: dict[str, dict[str, float]] = defaultdict(dict)
    for labels, v in m.get("socialpulse_events_total", []):
        events[labels["topic"]][labels["outcome"]] = v
    head = f"[b]socialpulse demo[/b] - {elapsed:.0f}s - Ctrl-C stops everything"
    ev = Table(expand=False, pad_edge=False, box=None)
    ev.add_column("events")
    for col in OUTCOMES:
        ev.add_column(col, justify="right")
    for topic in INPUT_TOPICS:
        row = events.get(topic, {})
        ev.add_row(topic, *(f"{row.get(c, 0):,.0f}" for c in OUTCOMES))

    platforms = sorted({labels["platform"] for labels, _ in m.get("socialpulse_impressions", [])})
    eng = _by_platform(m, "socialpulse_engagements", window="5m")
    imp = _by_platform(m, "socialpulse_impressions", window="5m")
    clk = _by_platform(m, "socialpulse_clicks", window="5m")
    rev = _by_platform(m, "socialpulse_attributed_revenue", window="5m", model="last_touch", currency="USD")
    spend = _by_platform(m, "socialpulse_spend", window="5m", currency="USD")
    leads = _by_platform(m, "socialpulse_leads", window="5m")
    customers = _by_platform(m, "socialpulse_new_customers", window="5m")
    sell = Table(title="engagement, funnel and conversion, last 5 minutes", title_justify="left", box=None, pad_edge=False)
    for col, just in (("platform", "left"), ("eng. rate", "right"), ("CTR", "right"), ("leads", "right"),
                      ("new cust.", "right"), ("revenue USD", "right"), ("spend USD", "right"), ("ROI", "right")):
        sell.add_column(col, justify=just)  # type: ignore[arg-type]
    for p in platforms:
        r, s = sum(rev.get(p, [])), sum(spend.get(p, []))
        sell.add_row(p, _ratio(eng.get(p, []), imp.get(p, [])), _ratio(clk.get(p, []), imp.get(p, [])),
                     f"{sum(leads.get(p, [])):,.0f}", f"{sum(customers.get(p, [])):,.0f}",
                     f"{r:,.0f}", f"{s:,.0f}", f"{(r - s) / s:+.0%}" if s else "-")

    p50 = _by_platform(m, "socialpulse_reply_latency_window_seconds", window="5m", quantile="0.5")
    p90 = _by_platform(m, "socialpulse_reply_latency_window_seconds", window="5m", quantile="0.9")
    waiting = _by_platform(m, "socialpulse_awaiting_reply")
    oldest = _by_platform(m, "socialpulse_oldest_awaiting_reply_timestamp_seconds")
    met = _by_platform(m, "socialpulse_reply_sla_total", result="met")
    breached = _by_platform(m, "socialpulse_reply_sla_total", result="breached")
    now = time.time()
    replies = Table(title="replies (p50/p90: slowest account, last 5 minutes)", title_justify="left", box=None, pad_edge=False)
    for col, just in (("platform", "left"), ("p50", "right"), ("p90", "right"), ("waiting", "right"),
                      ("oldest wait", "right"), ("SLA met", "right"), ("breached", "right")):
        replies.add_column(col, justify=just)  # type: ignore[arg-type]
    for p in platforms:
        old = oldest.get(p)
        replies.add_row(
            p, _seconds(max(p50[p]) if p50.get(p) else None), _seconds(max(p90[p]) if p90.get(p) else None),
            f"{sum(waiting.get(p, [])):.0f}", _seconds(now - min(old) if old else None),
            f"{sum(met.get(p, [])):,.0f}", f"{sum(breached.get(p, [])):,.0f}",
        )

    sellers = sellers_table(m)

    al = Table(title=f"alerts ({prometheus or 'no Prometheus: apt-get install prometheus'})", title_justify="left",
               box=None, pad_edge=False)
    for col in ("alert", "state", "where", "since"):
        al.add_column(col)
    if active is not None:
        for a in sorted(active, key=lambda a: (a.get("state") != "firing", a["labels"].get("alertname", ""))):
            labels = a["labels"]
            where = "/".join(x for x in (labels.get("platform"), labels.get("account")) if x) or "-"
            since = a.get("activeAt", "")[11:19]
            state = a.get("state", "?")
            al.add_row(labels.get("alertname", "?"), f"[b red]{state}[/b red]" if state == "firing" else state, where, since)
        if not active:
            al.add_row("none pending or firing", "", "", "")
    return Group(head, ev, "", sell, "", replies, "", sellers, "", al)


def sellers_table(m: Metrics, top: int = 2) -> Table:
    """The sellers with the highest selling index over 28 days (streams/sellers/), their pillars,
    influence and the USD revenue their posts and conversations brought plus their referred orders'."""
    def per_seller(name: str, **match: str) -> dict[tuple[str, str, str], float]:
        out: dict[tuple[str, str, str], float] = defaultdict(float)
        for labels, v in m.get(name, []):
            if labels.get("seller", "other") != "other" and all(labels.get(k) == want for k, want in match.items()):
                out[(labels["seller"], labels["platform"], labels["account"])] += v
        return out

    index = per_seller("socialpulse_selling_index")
    influence = per_seller("socialpulse_seller_influence")
    revenue = per_seller("socialpulse_seller_attributed_revenue", currency="USD")
    referred = per_seller("socialpulse_seller_referral_revenue", currency="USD")
    pillars = {p: per_seller("socialpulse_selling_index_pillar", pillar=p)
               for p in ("brand", "people", "insights", "relationships")}
    # the header is the section's title: a summary that fits 40 rows keeps room for the alerts
    table = Table(box=None, pad_edge=False)
    for col, just in (("sellers", "left"), ("account", "left"), ("index", "right"), ("brand", "right"),
                      ("people", "right"), ("insig.", "right"), ("relat.", "right"), ("infl.", "right"),
                      ("USD rev.", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for who in sorted(index, key=lambda k: (-index[k], k))[:top]:
        table.add_row(who[0], f"{who[1][:2]}/{who[2]}", f"{index[who]:.1f}",
                      *(f"{pillars[p].get(who, 0):.1f}" for p in pillars), f"{influence.get(who, 0):.0f}",
                      f"{revenue.get(who, 0) + referred.get(who, 0):,.0f}")
    if not index:
        table.add_row("none yet", "", "", "", "", "", "", "", "")
    return table


def _stop_on(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def free_port(preferred: int) -> int:
    import socket

    if not port_in_use(preferred):
        return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_prometheus(folder: str, targets: list[str]) -> tuple[subprocess.Popen[bytes], str] | None:
    """A real Prometheus scraping ``targets`` every 5 s with the shipped alert rules, or None
    when the machine has no ``prometheus``."""
    binary = shutil.which("prometheus")
    if binary is None:
        return None
    port = free_port(9090)
    config = Path(folder) / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 5s, evaluation_interval: 5s}\n"
        f"rule_files: [{json.dumps(str(RULES / '*.yml'))}]\n"
        "scrape_configs:\n"
        "  - job_name: socialpulse\n"
        f"    static_configs: [{{targets: {json.dumps(targets)}}}]\n"
    )
    log = open(Path(folder) / "prometheus.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={Path(folder) / 'prometheus-data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_for_port(port, timeout=20)
    except BrokerError:
        stop_process(proc)
        return None
    return proc, f"http://127.0.0.1:{port}"


def run_demo(settings: Settings, rate: float = 200.0, port: int = 9092) -> int:
    # Ctrl-C, SIGTERM and a closed terminal (SIGHUP) all stop everything, even when started from a shell that made the
    # demo ignore SIGINT (a background job of a non-interactive shell inherits that)
    signal.signal(signal.SIGINT, _stop_on)
    signal.signal(signal.SIGTERM, _stop_on)
    signal.signal(signal.SIGHUP, _stop_on)  # the terminal closed: nothing may outlive the demo
    console = Console()
    data_dir = tempfile.mkdtemp(prefix="socialpulse-demo-")
    env = DEMO_ENV | os.environ | {
        "SOCIALPULSE_BROKER": f"kafka://127.0.0.1:{port}",
        "SOCIALPULSE_DATA_DIR": data_dir,
        "SOCIALPULSE_LOG_LEVEL": "warning",
    }
    procs: list[subprocess.Popen[Any]] = []
    started = time.monotonic()
    loop = asyncio.new_event_loop()
    gen: asyncio.Task[Any] | None = None
    try:
        if port_in_use(settings.web_port):
            console.print(f"[red]web port {settings.web_port} is in use (set SOCIALPULSE_WEB_PORT to another)[/red]")
            return 2
        try:
            broker = start_broker(port)
        except BrokerError as exc:
            console.print(f"[red]broker: {exc}[/red]")
            return 2
        procs.append(broker)
        console.print(f"broker     Tansu 127.0.0.1:{port} (embedded, [b]memory only[/b]: lost when it stops)")
        worker_log = open(os.path.join(data_dir, "worker.log"), "wb")  # noqa: SIM115
        worker = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--web-port", str(settings.web_port)],
            env=env, stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        procs.append(worker)
        base = f"http://localhost:{settings.web_port}"
        console.print(f"worker     {base}/metrics  (reply SLO {env['SOCIALPULSE_REPLY_SLO']})")
        console.print(f"           {base}/api/v1/accounts/instagram/in-brand-1")
        console.print(f"           log: {worker_log.name}")
        prom = start_prometheus(data_dir, [f"127.0.0.1:{settings.web_port}"])
        prometheus_url = None
        if prom is None:
            console.print("prometheus not installed: no alerts (apt-get install prometheus, or `make demo`)")
        else:
            procs.append(prom[0])
            prometheus_url = prom[1]
            console.print(f"prometheus {prometheus_url}/alerts  (rules: deploy/prometheus/rules)")
        gen_settings = settings.model_copy(update={"broker": f"kafka://127.0.0.1:{port}"})
        gen = loop.create_task(generator.run(
            gen_settings, rate, 10**9, seed=7, progress=False, reply_median_s=8.0, answered=1.0,
            incident="slow-replies", incident_at_s=INCIDENT_AT_S,
        ))
        console.print(f"generate   {rate:.0f} events/s; from {INCIDENT_AT_S}s on, instagram/in-brand-1 answers late:")
        console.print("           its reply alerts go pending, then fire (within about 10 minutes)")
        with Live(console=console, refresh_per_second=1, transient=False) as live:
            active: list[dict[str, Any]] | None = None
            polled = 0.0
            while True:
                loop.run_until_complete(asyncio.sleep(1.0))
                if gen.done():
                    gen.result()
                if worker.poll() is not None:
                    console.print(f"[red]worker exited with code {worker.returncode}; see {worker_log.name}[/red]")
                    return 1
                if prometheus_url is not None and time.monotonic() - polled >= 5:
                    polled = time.monotonic()
                    with contextlib.suppress(Exception):
                        active = alerts(prometheus_url)
                with contextlib.suppress(Exception):
                    live.update(summary(scrape(f"{base}/metrics"), time.monotonic() - started, active, prometheus_url))
    except KeyboardInterrupt:
        console.print("stopping ...")
        return 0
    finally:
        if gen is not None:
            gen.cancel()
            with contextlib.suppress(BaseException):  # bounded: a stuck send must not hold Ctrl-C
                loop.run_until_complete(asyncio.wait_for(asyncio.gather(gen, return_exceptions=True), 10))
        loop.close()
        for proc in reversed(procs):
            stop_process(proc)
        shutil.rmtree(data_dir, ignore_errors=True)
