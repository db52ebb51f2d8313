"""Reject request bodies larger than allowed, before the app reads them (413, our error shape)."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.kit.asgi import buffer_body

_BODY = json.dumps(
    {"error": "PayloadTooLarge", "message": "提交的内容太大了", "detail": None}, ensure_ascii=False
).encode()


class BodySizeLimitMiddleware:
    def __init__(
        self, app: ASGIApp, *, default_limit: int, upload_limit: int, upload_prefixes: tuple[str, ...]
    ) -> None:
        self.app = app
        self.default_limit = default_limit
        self.upload_limit = upload_limit
        self.upload_prefixes = upload_prefixes

    def _limit(self, path: str) -> int:
        return self.upload_limit if path.startswith(self.upload_prefixes) else self.default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope.get("path", ""))
        declared: int | None = None
        for name, value in scope.get("headers") or []:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                if declared is not None and declared > limit:
                    await self._reject(send)
                    return
        if declared is None and limit == self.default_limit:
            # No declared length (chunked): read up to the limit first, then hand the body on.
            buffered = await buffer_body(receive, limit=limit)
            if buffered is None:
                await self._reject(send)
                return
            await self.app(scope, buffered[1], send)
            return
        received = 0
        too_large = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise _TooLarge
            return message

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(send)

    @staticmethod
    async def _reject(send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(_BODY)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _BODY})


class _TooLarge(Exception):
    pass
