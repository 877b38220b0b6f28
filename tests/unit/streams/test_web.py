"""The worker's endpoints (streams/web.py) on a real Faust web app, without a broker: what
/healthz, /readyz, /metrics and the account API answer for a given pipeline state."""

import asyncio
import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from streams.app import create_app
from streams.exporter import Metrics
from streams.health import Watchdog
from streams.settings import load_settings
from streams.web import register_views


class Served:
    """What the endpoints read of a pipeline, set by hand."""

    def __init__(self, app, settings):
        self.metrics, self.settings, self.tables = Metrics(), settings, {"account": type("T", (), {"name": "account-state"})()}
        self.owned = {"account": set(range(settings.partitions))}
        self.ready = False
        self.health = Watchdog(app, settings, self.metrics)
        self.known = True

    def event_time_known(self):
        return self.known

    def view(self, platform, account_id):
        return {"engagement": {"windows": {"5m": {"engagements": 3}}}} if account_id == "acme" else None


def answers(tmp_path, setup, *paths):
    async def run():
        settings = load_settings(store="memory://", data_dir=str(tmp_path), partitions=4)
        app = create_app(settings)
        served = Served(app, settings)
        setup(served)
        register_views(app, served)
        client = TestClient(TestServer(app.web.web_app))
        await client.start_server()
        try:
            out = []
            for path in paths:
                resp = await client.get(path)
                out.append((resp.status, await resp.text()))
            return out
        finally:
            await client.close()

    return asyncio.run(run())


def test_readyz_is_503_until_ready_and_names_a_lost_broker(tmp_path):
    (status, body), = answers(tmp_path, lambda s: None, "/readyz")
    assert status == 503 and json.loads(body) == {
        "ready": False, "recovered": False, "rebalancing": False, "broker": "reachable", "event_time_known": True}

    def lost(s):
        s.health.lost = "the broker lost data"
        s.known = False

    (status, body), = answers(tmp_path, lost, "/readyz")
    assert status == 503 and json.loads(body)["problem"] == "the broker lost data"
    assert json.loads(body)["event_time_known"] is False
    (status, body), (alive, _) = answers(tmp_path, lambda s: setattr(s, "ready", True), "/readyz", "/healthz")
    assert status == 200 and json.loads(body)["ready"] is True and alive == 200


def test_metrics_are_the_prometheus_text_format(tmp_path):
    def counted(s):
        s.metrics.events.labels("likes", "accepted").inc(7)

    (status, body), = answers(tmp_path, counted, "/metrics")
    assert status == 200 and 'socialpulse_events_total{outcome="accepted",topic="likes"} 7.0' in body


@pytest.mark.parametrize(("path", "status", "has"), [
    ("/api/v1/accounts/instagram/acme", 200, '"engagements":3'),
    ("/api/v1/accounts/instagram/nobody", 404, "no recent data"),
    ("/api/v1/accounts/myspace/acme", 400, "unknown platform 'myspace'"),
    ("/api/v1/accounts/instagram/%01evil", 400, "bad account_id"),
])
def test_the_account_api_answers_for_owned_keys_and_rejects_bad_ones(tmp_path, path, status, has):
    (got, body), = answers(tmp_path, lambda s: None, path)
    assert got == status and has in body


def test_a_key_another_worker_owns_that_cannot_be_reached_is_503_not_a_crash(tmp_path):
    def owns_nothing(s):
        s.owned = {"account": set()}

    (status, body), = answers(tmp_path, owns_nothing, "/api/v1/accounts/instagram/acme")
    assert status == 503 and "not reachable" in body
