"""``socialpulse demo`` as a new user runs it: events flow, Ctrl-C leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from schemas.events import INPUT_TOPICS
from streams.broker import port_in_use

from ..conftest import ROOT, free_port, http_get, wait_until

pytestmark = pytest.mark.integration


def accepted_by_topic(text: str) -> dict[str, float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "socialpulse_events_total" and s.labels["outcome"] == "accepted":
                out[s.labels["topic"]] = s.value
    return out


def test_demo_shows_all_seven_topics_flowing_and_ctrl_c_stops_everything(tmp_path):
    broker_port, web_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCIALPULSE_")}
    env["SOCIALPULSE_WEB_PORT"] = str(web_port)
    began = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "demo", "--port", str(broker_port), "--rate", "300"],
        cwd=ROOT, env=env, stdout=(tmp_path / "demo.out").open("wb"), stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{web_port}/metrics"
        first = wait_until(
            lambda: (m := accepted_by_topic(http_get(url)[1].decode())) and sum(m.values()) > 0 and m, 60,
            what="first accepted events",
        )
        first_s = time.monotonic() - began
        print(f"first metrics after {first_s:.1f}s")
        later = wait_until(
            lambda: (m := accepted_by_topic(http_get(url)[1].decode())) and all(m.get(t, 0) > 0 for t in INPUT_TOPICS) and m,
            60, what="all seven topics counted",
        )
        time.sleep(3)
        last = accepted_by_topic(http_get(url)[1].decode())
        assert sum(last.values()) > sum(later.values()) >= sum(first.values())  # rising
        assert first_s < 60
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()  # never leave a demo (and its broker) running after a failure
            raise
    assert proc.returncode == 0, (tmp_path / "demo.out").read_text()[-2000:]
    assert not port_in_use(broker_port) and not port_in_use(web_port)
    leftovers = subprocess.run(["pgrep", "-f", f"--web-port {web_port}"], capture_output=True, text=True).stdout
    assert leftovers.strip() == "", leftovers
    assert "memory only" in (tmp_path / "demo.out").read_text()
