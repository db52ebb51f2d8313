"""Public feed reads answered before FastAPI routes them.

A feed page or the stats are sent straight from this process's copy (``service.servable``: fresh, at most
``FEED_LOCAL_CACHE_SECONDS`` old, or just run out while its rebuild is on its way) when the request's path and
query string are exactly those of an earlier request that the endpoint validated and answered from that same
copy. Routing, query validation and dependency solving are then skipped; nothing else is. The request keeps its
id, its access-log line and its metrics (``RequestContextMiddleware`` sits outside this one) and is counted
against the public-read limit. A refused request goes on to the endpoint, which answers the 429 in the usual
shape without counting it again. Anything else (another path, a query string not seen yet, a copy that has run
out and is not being rebuilt) goes to FastAPI as before, and the endpoint starts the rebuild.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from app.feed.service import servable
from app.kit import ratelimit

MAX_KNOWN = 4096  # distinct (path, query string) pairs remembered; cursors make many


# (path, query string) → (cache key, the endpoint's route: the access log and the metrics label by its path)
_known: dict[tuple[str, bytes], tuple[str, Any]] = {}


def remember(scope: Scope, key: str) -> None:
    """The endpoint answered this exact request from the copy under ``key``: the same request can skip it."""
    if len(_known) >= MAX_KNOWN:
        _known.clear()
    _known[(scope["path"], scope.get("query_string", b""))] = (key, scope.get("route"))


def forget() -> None:
    _known.clear()


class FeedFront:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            known = _known.get((scope["path"], scope.get("query_string", b"")))
            if known is not None:
                encoded = servable(known[0])
                if encoded is not None:
                    client = scope.get("client")
                    if (
                        await ratelimit.check(ratelimit.PUBLIC_READ, client[0] if client else "unknown")
                        is None
                    ):
                        scope["route"] = known[1]
                        await send(
                            {
                                "type": "http.response.start",
                                "status": 200,
                                "headers": [
                                    (b"content-length", str(len(encoded)).encode()),
                                    (b"content-type", b"application/json"),
                                ],
                            }
                        )
                        await send({"type": "http.response.body", "body": encoded})
                        return
        await self.app(scope, receive, send)
