"""``socialpulse demo`` as a new user runs it, in an 80x40 pseudo-terminal: the summary
shows every family's numbers (read from the screen, as the user sees it), Prometheus runs
with the alert rules, and Ctrl-C leaves no process behind. The incident's alert firing is
watched by ``bench/demo_incident.py`` (about ten minutes)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from schemas.events import INPUT_TOPICS
from streams.broker import port_in_use

from ..helpers import ROOT, free_port, http_get, wait_until
from ..tty import Terminal, row

pytestmark = pytest.mark.integration
PLATFORMS = ("facebook", "instagram", "linkedin", "tiktok", "x")


def accepted_by_topic(text: str) -> dict[str, float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "socialpulse_events_total" and s.labels["outcome"] == "accepted":
                out[s.labels["topic"]] = s.value
    return out


def families_on_screen(screen: str) -> bool:
    """Every family has numbers: events, engagement/conversion and replies per platform, the top sellers."""
    for topic in INPUT_TOPICS:
        cells = row(screen, topic)
        if cells is None or not re.fullmatch(r"[\d,]+", cells[1]) or cells[1] == "0":
            return False
    sell = screen.split("engagement, funnel and conversion", 1)[-1].split("replies", 1)[0]
    reply = screen.split("replies (", 1)[-1].split("alerts", 1)[0]
    for platform in PLATFORMS:
        s, r = row(sell, platform), row(reply, platform)
        if s is None or r is None:
            return False
        # eng. rate, CTR, then leads, new customers and revenue: numbers
        if not (s[1].endswith("%") and s[2].endswith("%") and all(re.fullmatch(r"[\d,]+", c) for c in s[3:6])):
            return False
    # the sellers with the highest index, with pillars, influence and revenue as numbers
    sellers = screen.split("\nsellers ", 1)[-1].split("alerts", 1)[0]  # its header is its title
    top = [line.split() for line in sellers.splitlines()[1:] if line.strip()]
    if not top or not all(len(cells) == 9 and all(re.fullmatch(r"[\d,.]+", c) for c in cells[2:]) for cells in top):
        return False
    # reply times measured for some platform (p50, p90 in seconds), SLA counted
    return any(re.fullmatch(r"\d+[sm]", (row(reply, p) or ["", "-"])[1]) for p in PLATFORMS)


def test_demo_summary_shows_every_family_with_prometheus_and_ctrl_c_stops_everything(tmp_path):
    broker_port, web_port = free_port(), free_port()
    # the terminal's own size, as a user's: not LINES/COLUMNS a test runner exported (pytest-xdist: 24x80)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCIALPULSE_") and k not in ("LINES", "COLUMNS")}
    env["SOCIALPULSE_WEB_PORT"] = str(web_port)
    term = Terminal([sys.executable, "-m", "streams.cli", "demo", "--port", str(broker_port), "--rate", "300"], env, str(ROOT))
    prometheus = shutil.which("prometheus")
    prom_url = None
    try:
        screen = term.wait_for(families_on_screen, 120, "every family's numbers on the summary")
        (tmp_path / "screen.txt").write_text(screen)
        assert "memory only" in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", term.transcript.decode(errors="replace"))
        url = f"http://127.0.0.1:{web_port}/metrics"
        counted = wait_until(lambda: (m := accepted_by_topic(http_get(url)[1].decode())) and
                             all(m.get(t, 0) > 0 for t in INPUT_TOPICS) and m, 30, what="every input topic counted")
        assert sum(counted.values()) > 0
        if prometheus is not None:
            screen = term.wait_for(lambda s: "alerts (http://127.0.0.1:" in s and ("none pending" in s or "Socialpulse" in s),
                                   60, "the alerts table, from Prometheus")
            prom_url = re.search(r"alerts \((http://127\.0\.0\.1:\d+)\)", screen).group(1)  # type: ignore[union-attr]
            # Prometheus scrapes the worker for real
            status, body = http_get(f"{prom_url}/api/v1/query?query=sum(socialpulse_events_total)")
            assert status == 200 and b'"result":[{' in body, body[:300]
        else:
            assert "no Prometheus" in screen
    finally:
        status = term.interrupt(60)
    assert status == 0, term.text()
    assert not port_in_use(broker_port) and not port_in_use(web_port)
    if prom_url is not None:
        assert not port_in_use(int(prom_url.rsplit(":", 1)[1]))
    leftovers = subprocess.run(["pgrep", "-f", f"--web-port {web_port}"], capture_output=True, text=True).stdout
    assert leftovers.strip() == "", leftovers
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", term.transcript.decode(errors="replace"))
    data_dir = re.search(r"log: (/\S*socialpulse-demo-[^/\s]+)/", plain)
    assert data_dir, "the demo prints its worker log"
    leftovers = subprocess.run(["pgrep", "-f", data_dir.group(1)], capture_output=True, text=True).stdout
    assert leftovers.strip() == "", leftovers  # Prometheus's storage is in there
    assert not os.path.exists(data_dir.group(1))
