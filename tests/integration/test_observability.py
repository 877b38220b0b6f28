"""Prometheus, promtool, Grafana boards and the compose file, all for real:
a worker fed by the generator is scraped by a real Prometheus server, and every
panel query of every generated board must return data from it."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import orjson
import pytest
import yaml
from confluent_kafka import Producer

from deploy.grafana.dashboards import BOARDS, panel_queries, render_all
from streams import generator
from streams.settings import Settings
from streams.windows import iso

from ..helpers import ROOT, free_port, http_get, spawn_worker, stop_process, wait_until, worker_env

pytestmark = pytest.mark.integration
needs_prometheus = pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is not installed")
PREFIX = "obs."
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def accounts_file(path: Path) -> Path:
    """SLA policies for the generator's instagram, tiktok and facebook accounts (linkedin and x keep
    the default policy), so the Replies board's policy panels and alerts see several policies; the
    instagram accounts are open all week in business hours, so the business-time histograms exist."""
    accounts = []
    for platform in ("instagram", "tiktok", "facebook"):
        for i in (1, 2, 3):
            account: dict = {"platform": platform, "account_id": f"{platform[:2]}-brand-{i}", "sla_policies": [
                {"name": "dm", "channels": ["dm"], "first_reply": "15s", "next_reply": "30s"},
                {"name": "comments", "channels": ["comment", "mention"], "first_reply": "20s"}]}
            if platform == "instagram":
                account["business_hours"] = dict.fromkeys(DAYS, "open")
                account["sla_policies"][0]["hours"] = "business"
            accounts.append(account)
    path.write_text(yaml.safe_dump({"accounts": accounts}))
    return path


def scripted_messages(now_ms: int) -> list[dict]:
    """Conversations 45 s of generated traffic rarely holds, for the panels that need them: answered
    outreach (a prospect answers in minutes, so the generator's rarely do within the run) and a
    follow-up reply on an account with business hours."""
    def msg(cid: str, n: int, at_s: int, direction: str, agent: str | None = None) -> dict:
        return {"event_id": f"obs-{cid}-{n}", "ts": iso(now_ms + at_s * 1000), "platform": "instagram",
                "account_id": "in-brand-2", "conversation_id": cid, "direction": direction,
                "author_id": agent or f"{cid}-customer"} | ({"agent_id": agent} if agent else {})
    out = []
    for i in range(3):  # the seller writes first, the prospect answers 2 s later, the seller replies
        cid = f"obs-out-{i}"
        out += [msg(cid, 1, i, "outbound", "ana"), msg(cid, 2, 2 + i, "inbound"), msg(cid, 3, 4 + i, "outbound", "ana")]
    cid = "obs-followup"  # first response, then a follow-up question and its reply
    out += [msg(cid, 1, 0, "inbound"), msg(cid, 2, 2, "outbound", "ben"), msg(cid, 3, 3, "inbound"),
            msg(cid, 4, 5, "outbound", "ben")]
    return out


def scripted_sellers(now_ms: int) -> list[tuple[str, dict]]:
    """A seller's post, its engagement, a click that buys, a connection and a referred order: the Sellers
    board's revenue and referral panels need them within the run (the generator's are minutes apart)."""
    acct = {"platform": "instagram", "account_id": "in-brand-2"}
    at = lambda s: iso(now_ms + s * 1000)  # noqa: E731
    return [
        ("posts", {"event_id": "obs-sp-1", "ts": at(0), **acct, "post_id": "obs-seller-post", "author_id": "obs-seller"}),
        ("likes", {"event_id": "obs-sl-1", "ts": at(1), **acct, "post_id": "obs-seller-post", "actor_id": "obs-fan"}),
        ("impressions", {"event_id": "obs-si-1", "ts": at(1), **acct, "post_id": "obs-seller-post", "count": 300}),
        ("clicks", {"event_id": "obs-sc-1", "ts": at(2), **acct, "actor_id": "obs-buyer", "post_id": "obs-seller-post",
                    "click_id": "obs-click"}),
        ("orders", {"event_id": "obs-so-1", "ts": at(3), "order_id": "obs-order", "actor_id": "obs-buyer",
                    "amount": "80.00", "currency": "USD", "click_id": "obs-click"}),
        ("connections", {"event_id": "obs-cn-1", "ts": at(0), **acct, "author_id": "obs-seller", "actor_id": "obs-cto",
                         "status": "requested"}),
        ("connections", {"event_id": "obs-cn-2", "ts": at(1), **acct, "author_id": "obs-seller", "actor_id": "obs-cto",
                         "status": "accepted", "decision_maker": True}),
        ("leads", {"event_id": "obs-rl-1", "ts": at(2), **acct, "actor_id": "obs-friend", "referrer_id": "obs-seller"}),
        ("orders", {"event_id": "obs-ro-1", "ts": at(3), "order_id": "obs-referred", "actor_id": "obs-friend",
                    "amount": "50.00", "currency": "USD", "referrer_id": "obs-seller"}),
    ]


@pytest.fixture(scope="module")
def fed_worker(broker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("obs")
    # short grace and checkout timeout: the Funnel board's checkout panels need judged checkouts within the run
    env = worker_env(broker, PREFIX, tmp / "data", SOCIALPULSE_APP_ID="obs-socialpulse", SOCIALPULSE_REPLY_SLO="15s",
                     SOCIALPULSE_GRACE="10s", SOCIALPULSE_CHECKOUT_TIMEOUT="30s",
                     SOCIALPULSE_ACCOUNTS_FILE=str(accounts_file(tmp / "accounts.yaml")))
    worker = spawn_worker(env, tmp)
    worker.wait_ready(60)
    settings = Settings(broker=f"kafka://{broker}", topic_prefix=PREFIX, partitions=2)
    done = threading.Event()

    def feed():
        asyncio.run(generator.run(settings, rate=400, duration=45, seed=11, progress=False, reply_median_s=6))
        done.set()

    threading.Thread(target=feed, daemon=True).start()
    # stamped from now on (never behind the watermark, so never late); the generator's traffic then
    # carries the watermark past them
    producer = Producer({"bootstrap.servers": broker})
    for event in scripted_messages(int(time.time() * 1000)):  # keyed by conversation, as a desk's producer does
        producer.produce(PREFIX + "messages", orjson.dumps(event), key=event["conversation_id"].encode())
    for topic, event in scripted_sellers(int(time.time() * 1000)):
        producer.produce(PREFIX + topic, orjson.dumps(event))
    assert producer.flush(15) == 0
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
    # the replies rules too: the board's burn-rate panel reads their recording rules
    cfg.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{ROOT / 'deploy' / 'prometheus' / 'rules' / 'replies.yml'}']\n"
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
        .replace("$__rate_interval", "1m").replace("$model", "last_touch").replace("$channel", ".*")
        .replace("$policy", ".*").replace("$seller", ".*")
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


@needs_prometheus
@pytest.mark.parametrize("board", sorted(BOARDS))
def test_every_variable_query_returns_values(prom, board):
    """``label_values(metric{matchers}, label)`` as Grafana asks it: the label's values on the series."""
    for var in json.loads(render_all()[f"{board}.json"]).get("templating", {}).get("list", []):
        if var["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+), *(\w+)\)", var["query"])
        assert match, var["query"]
        selector, label = concrete(match[1]), match[2]

        def values(selector: str = selector, label: str = label) -> list[str]:
            url = f"{prom}/api/v1/label/{label}/values?" + urllib.parse.urlencode({"match[]": selector})
            return json.loads(http_get(url)[1])["data"]

        got = wait_until(values, 60, what=f"values of ${var['name']}: {var['query']}")
        assert got, var["name"]
        if (board, var["name"]) == ("replies", "policy"):  # the accounts file's policies and the default
            assert {"comments", "default", "dm"} <= set(got)


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
