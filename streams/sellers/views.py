"""``GET /api/v1/sellers/{platform}/{account_id}/{author_id}``: one seller's numbers over the
trailing window (``SELLER_WINDOW``), answered by the worker that owns the seller's account
(the request is routed to it like the account API's)."""

from __future__ import annotations

import logging
import re
from typing import Any

import faust
from faust.web import Request, Response, View

from schemas.events import Platform, account_key

from ..ingest import partition_for

__all__ = ["register"]

log = logging.getLogger("socialpulse.web")
_ID = re.compile(r"^[^\x00-\x1f]{1,256}$")


def register(app: faust.App, pipeline: Any) -> None:
    """Add the seller route to the worker's web server (``streams.web.register_views``)."""

    @app.page("/api/v1/sellers/{platform}/{account_id}/{author_id}")
    async def seller(self: View, request: Request, platform: str, account_id: str, author_id: str) -> Response:
        if platform not in Platform.__members__:
            return self.error(400, f"unknown platform {platform!r}", platforms=sorted(Platform.__members__))
        if not _ID.match(account_id) or not _ID.match(author_id):
            return self.error(400, "bad account_id or author_id")
        key = account_key(platform, account_id)
        partition = partition_for(key, pipeline.settings.partitions)
        if partition not in pipeline.owned["account"]:
            try:
                return await app.router.route_req(pipeline.tables["account"].name, key.encode(), self.web, request)
            except Exception as exc:  # SameNode, ServiceUnavailable, connection errors
                log.warning("seller API: could not route (%s)", type(exc).__name__)
                return self.error(503, "the worker owning this account is not reachable; retry shortly")
        view = pipeline.view(platform, account_id)
        sellers = (view or {}).get("sellers", {})
        found = sellers.get("sellers", {}).get(author_id)
        if found is None:
            return self.error(404, "no recent activity of this seller", platform=platform, account_id=account_id,
                              author_id=author_id)
        board = sellers.get("leaderboard", [])
        return self.json({"platform": platform, "account_id": account_id, "author_id": author_id,
                          "partition": partition, "watermark": (view or {}).get("watermark"),
                          "window": sellers.get("window"), "rank": board.index(author_id) + 1,
                          "team_size": len(board)} | found)
