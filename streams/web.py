"""HTTP endpoints of each worker: /metrics, /healthz, /readyz and the account API."""

from __future__ import annotations

import logging
import re
from typing import Any, Protocol

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST

from schemas.events import DIRECT_KEY, SHOP_KEY, Platform, account_key

from .accounts import AccountBook
from .exporter import Metrics
from .health import Watchdog
from .ingest import partition_for
from .sellers.views import register as register_sellers
from .settings import Settings
from .web_security import guard, load_web_config

__all__ = ["register_views"]

log = logging.getLogger("socialpulse.web")
_ID = re.compile(r"^[^\x00-\x1f]{1,256}$")


class Served(Protocol):
    """What the endpoints read of a worker's pipeline (``streams.pipeline.Pipeline``)."""

    metrics: Metrics
    health: Watchdog
    settings: Settings
    tables: dict[str, Any]
    owned: dict[str, set[int]]  # keyed partitions this worker owns and has recovered, per stream
    ready: bool
    book: AccountBook  # every account's settings (each worker holds all of them)

    def event_time_known(self) -> bool: ...

    def view(self, platform: str, account_id: str) -> dict[str, Any] | None: ...


def register_views(app: faust.App, pipeline: Served) -> None:
    if pipeline.settings.web_config:
        # every path, Faust's own (/router, /table) included, except the probes (streams/web_security.py)
        app.web.web_app.middlewares.append(guard(load_web_config(pipeline.settings.web_config)))  # type: ignore[attr-defined]

    @app.page("/metrics")
    async def metrics(self: View, request: Request) -> Response:
        return self.bytes(pipeline.metrics.exposition(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/healthz")
    async def healthz(self: View, request: Request) -> Response:
        return self.json({"status": "alive"})

    @app.page("/readyz")
    async def readyz(self: View, request: Request) -> Response:
        ready = pipeline.ready and pipeline.health.fine()  # the broker checks are live, the rest per tick
        body = {
            "ready": ready,
            "recovered": app.tables.recovery.completed.is_set(),  # type: ignore[attr-defined]
            "rebalancing": bool(app.rebalancing),
            "broker": pipeline.health.broker.status(),
            # every input has marked each owned keyed partition: what event time may not run ahead of is known
            "event_time_known": pipeline.event_time_known(),
        }
        if pipeline.health.lost:
            body["problem"] = pipeline.health.lost
        return self.json(body, status=200 if ready else 503)

    @app.page("/api/v1/accounts/{platform}/{account_id}/settings")
    async def account_settings(self: View, request: Request, platform: str, account_id: str) -> Response:
        found = pipeline.book.entry(account_key(platform, account_id))
        if found is None:
            return self.error(404, "no settings for this account: the defaults apply", platform=platform,
                              account_id=account_id)
        return self.json(found.settings.model_dump(mode="json") | {
            "source": found.source, "version": pipeline.book.version})

    @app.page("/api/v1/accounts/{platform}/{account_id}")
    async def account(self: View, request: Request, platform: str, account_id: str) -> Response:
        if platform not in Platform.__members__ and account_key(platform, account_id) not in (SHOP_KEY, DIRECT_KEY):
            return self.error(400, f"unknown platform {platform!r}", platforms=sorted(Platform.__members__))
        if not _ID.match(account_id):
            return self.error(400, "bad account_id")
        key = account_key(platform, account_id)
        partition = partition_for(key, pipeline.settings.partitions)
        if partition not in pipeline.owned["account"]:
            # Another worker owns the key: ask it (Faust's router knows who).
            try:
                return await app.router.route_req(
                    pipeline.tables["account"].name, key.encode(), self.web, request
                )
            except Exception as exc:  # SameNode, ServiceUnavailable, connection errors
                log.warning("account API: could not route (%s)", type(exc).__name__)
                return self.error(503, "the worker owning this account is not reachable; retry shortly")
        view = pipeline.view(platform, account_id)
        if view is None:
            return self.error(404, "no recent data for this account", platform=platform, account_id=account_id)
        return self.json(
            {"platform": platform, "account_id": account_id, "partition": partition} | view
        )

    register_sellers(app, pipeline)  # /api/v1/sellers/{platform}/{account_id}/{author_id}
