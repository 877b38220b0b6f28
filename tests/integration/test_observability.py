"""Prometheus, promtool, Grafana boards and the compose file, all for real:
a worker fed by the generator is scraped by a real Prometheus server, and every
panel query of every generated board must return data from it."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest

from deploy.grafana.dashboards import BOARDS, panel_queries, render_all
from streams import generator
from streams.settings import Settings

from ..helpers import ROOT, free_port, http_get, spawn_worker, stop_process, wait_until, worker_env

pytestmark = pytest.mark.integration
needs_prometheus = pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is not installed")
PREFIX = "obs."


@pytest.fixture(scope="module")
def fed_worker(broker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("obs")
    # short grace and checkout timeout: the Funnel board's checkout panels need judged checkouts within the run
    env = worker_env(broker, PREFIX, tmp / "data", SOCIALPULSE_APP_ID="obs-socialpulse", SOCIALPULSE_REPLY_SLO="15s",
                     SOCIALPULSE_GRACE="10s", SOCIALPULSE_CHECKOUT_TIMEOUT="30s")
    worker = spawn_worker(env, tmp)
    worker.wait_ready(60)
    settings = Settings(broker=f"kafka://{broker}", topic_prefix=PREFIX, partitions=2)
    done = threading.Event()

    def feed():
        asyncio.run(generator.run(settings, rate=400, duration=45, seed=11, progress=False, reply_median_s=6))
        done.set()

    threading.Thread(target=feed, daemon=True).start()
    wait_until(lambda: "socialpulse_engagement_rate{" in worker.metrics(), 60, what="engagement gauges")
    wait_until(lambda: 'result="breached"} 1' in worker.metrics() or 'result="breached"} 2' in worker.metrics(),
               90, what="a reply-SLA breach")
    yield worker
    done.wait(60)
    stop_process(worker.proc)


@pytest.fixture(scope="module")
def prom(fed_worker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prom")
    port = free_port()
    cfg = tmp / "prometheus.yml"
    cfg.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n  - job_name: socialpulse\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{fed_worker.web_port}']\n"
    )
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp / "prometheus.log").open("wb"), start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_get(url + "/-/ready")[0] == 200, 30, what="prometheus ready")
    yield url
    stop_process(proc)


def instant(prom_url: str, expr: str) -> list:
    status, body = http_get(f"{prom_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    data = json.loads(body)
    assert status == 200 and data["status"] == "success", (expr, data)
    return data["data"]["result"]


def concrete(expr: str) -> str:
    """A panel query as Grafana would send it with 'All' selected."""
    return (
        expr.replace("$platform", ".*").replace("$account", ".*").replace("$window", "5m")
        .replace("$__rate_interval", "1m").replace("$model", "last_touch")
    )


@needs_prometheus
def test_worker_output_passes_promtool_check_metrics(fed_worker):
    result = subprocess.run(["promtool", "check", "metrics"], input=fed_worker.metrics().encode(), capture_output=True)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_no_id_is_ever_a_label(fed_worker):
    text = fed_worker.metrics()
    for marker in ("post-", "conv-", "u1", "ord-", "ck-", "lk-"):
        assert f'="{marker}' not in text, marker


@needs_prometheus
def test_prometheus_scrapes_the_worker(prom):
    results = wait_until(lambda: instant(prom, 'sum(socialpulse_events_total{outcome="accepted"}) > 100'), 60,
                         what="accepted events in Prometheus")
    assert float(results[0]["value"][1]) > 100
    targets = json.loads(http_get(prom + "/api/v1/targets")[1])["data"]["activeTargets"]
    assert [t["health"] for t in targets] == ["up"]


@needs_prometheus
@pytest.mark.parametrize("board", sorted(BOARDS))
def test_every_panel_query_returns_data(prom, board):
    text = render_all()[f"{board}.json"]
    queries = list(panel_queries(text))
    assert len(queries) >= 6
    # rate() needs a few scrapes; wait for the slowest query, then require every one
    for title, expr in queries:
        got = wait_until(lambda e=expr: instant(prom, concrete(e)), 60, what=f"data for panel {title!r}: {expr}")
        assert got, title


def test_generated_dashboards_have_no_drift():
    folder = ROOT / "deploy" / "grafana" / "dashboards"
    rendered = render_all()
    assert {p.name for p in folder.glob("*.json")} == set(rendered), "run `make dashboards`"
    for name, text in rendered.items():
        assert (folder / name).read_text() == text, f"{name} drifted from its generator: run `make dashboards`"


@needs_prometheus
def test_prometheus_config_and_rules_are_valid_and_rule_tests_pass():
    prom_dir = ROOT / "deploy" / "prometheus"
    for cmd in (
        ["promtool", "check", "config", "--syntax-only", str(prom_dir / "prometheus.yml")],
        ["promtool", "check", "rules", *map(str, sorted((prom_dir / "rules").glob("*.yml")))],
        ["promtool", "test", "rules", *map(str, sorted((prom_dir / "tests").glob("*.yml")))],
    ):
        result = subprocess.run(cmd, capture_output=True, cwd=prom_dir)
        assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


@pytest.mark.skipif(shutil.which("amtool") is None, reason="Debian's prometheus-alertmanager is not installed")
def test_alertmanager_config_is_valid():
    result = subprocess.run(["amtool", "check-config", str(ROOT / "deploy/alertmanager/alertmanager.yml")], capture_output=True)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_compose_file_is_valid_against_the_compose_spec(tmp_path: Path):
    cmd = [str(Path(sys.executable).parent / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec"]
    ok = subprocess.run([*cmd, str(ROOT / "docker-compose.yml")], capture_output=True)
    assert ok.returncode == 0, ok.stdout.decode()
    bad = tmp_path / "compose.yml"
    bad.write_text("services:\n  worker:\n    image: 3\n    restart_policy: always\n")
    assert subprocess.run([*cmd, str(bad)], capture_output=True).returncode != 0  # the validator does reject
