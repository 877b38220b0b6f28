"""``socialpulse demo``: embedded broker + one worker + the generator, with a live summary.

Ctrl-C (or SIGTERM) stops all three; the broker and worker run in their own
process groups and are terminated, then killed if they linger.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.table import Table

from . import generator
from .broker import BrokerError, port_in_use, start_broker, stop_process
from .settings import Settings

__all__ = ["run_demo", "scrape", "summary_table"]


def scrape(url: str, timeout: float = 2.0) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        text = resp.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name].append((s.labels, s.value))
    return out


def summary_table(m: dict[str, list[tuple[dict[str, str], float]]], elapsed: float, first: float | None = None) -> Table:
    events: dict[str, dict[str, float]] = defaultdict(dict)
    for labels, v in m.get("socialpulse_events_total", []):
        events[labels["topic"]][labels["outcome"]] = v
    flowing = f"first events counted after {first:.1f}s" if first is not None else "waiting for the first events"
    table = Table(title=f"socialpulse demo - {elapsed:.0f}s - {flowing} - Ctrl-C stops everything", expand=False)
    table.add_column("topic")
    for col in ("accepted", "invalid", "duplicate", "late"):
        table.add_column(col, justify="right")
    for topic in sorted(events):
        row = events[topic]
        table.add_row(topic, *(f"{row.get(c, 0):,.0f}" for c in ("accepted", "invalid", "duplicate", "late")))
    rates: dict[str, list[float]] = defaultdict(list)
    for labels, v in m.get("socialpulse_engagement_rate", []):
        if labels.get("window") == "5m":
            rates[labels["platform"]].append(v)
    if rates:
        table.add_section()
        table.add_row("[b]engagement rate 5m[/b]", *[""] * 4)
        for platform in sorted(rates):
            vals = rates[platform]
            table.add_row(f"  {platform}", f"{sum(vals) / len(vals):.4%}", "", "", "")
    return table


def _stop_on(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_demo(settings: Settings, rate: float = 200.0, port: int = 9092) -> int:
    # Ctrl-C and SIGTERM both stop everything, even when started from a shell that made the
    # demo ignore SIGINT (a background job of a non-interactive shell inherits that)
    signal.signal(signal.SIGINT, _stop_on)
    signal.signal(signal.SIGTERM, _stop_on)
    console = Console()
    data_dir = tempfile.mkdtemp(prefix="socialpulse-demo-")
    env = os.environ | {
        "SOCIALPULSE_BROKER": f"kafka://127.0.0.1:{port}",
        "SOCIALPULSE_DATA_DIR": data_dir,
        "SOCIALPULSE_LOG_LEVEL": "warning",
    }
    procs: list[subprocess.Popen[Any]] = []
    started = time.monotonic()
    loop = asyncio.new_event_loop()
    gen: asyncio.Task[Any] | None = None
    first: float | None = None
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
        console.print(f"broker   Tansu on 127.0.0.1:{port} (embedded, [b]memory only[/b]: data is lost when it stops)")
        worker_log = open(os.path.join(data_dir, "worker.log"), "wb")  # noqa: SIM115
        worker = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--web-port", str(settings.web_port)],
            env=env, stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        procs.append(worker)
        base = f"http://localhost:{settings.web_port}"
        console.print(f"worker   {base}/metrics  {base}/readyz  {base}/api/v1/accounts/instagram/in-brand-1")
        console.print(f"         log: {worker_log.name}")
        gen_settings = settings.model_copy(update={"broker": f"kafka://127.0.0.1:{port}"})
        gen = loop.create_task(generator.run(gen_settings, rate, 10**9, seed=7, progress=False))
        console.print(f"generate {rate:.0f} events/s of synthetic social traffic (seed 7)")
        with Live(console=console, refresh_per_second=1, transient=False) as live:
            while True:
                loop.run_until_complete(asyncio.sleep(1.0))
                if gen.done():
                    gen.result()
                if worker.poll() is not None:
                    console.print(f"[red]worker exited with code {worker.returncode}; see {worker_log.name}[/red]")
                    return 1
                with contextlib.suppress(Exception):
                    metrics = scrape(f"{base}/metrics")
                    if first is None and any(v for _, v in metrics.get("socialpulse_events_total", [])):
                        first = time.monotonic() - started
                    live.update(summary_table(metrics, time.monotonic() - started, first))
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

