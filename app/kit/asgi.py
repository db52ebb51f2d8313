"""Reading a request's body in an ASGI layer, then handing the request on as if it had not been read."""

from __future__ import annotations

from typing import overload

from starlette.types import Message, Receive


@overload
async def buffer_body(receive: Receive, *, limit: None = None) -> tuple[bytes, Receive]: ...


@overload
async def buffer_body(receive: Receive, *, limit: int) -> tuple[bytes, Receive] | None: ...


async def buffer_body(receive: Receive, *, limit: int | None = None) -> tuple[bytes, Receive] | None:
    """The request's whole body, and a ``receive`` that hands it on as it came: the body as one message, then
    what ended the reading if it was not the body's last part (a disconnect), then the server's own
    ``receive``. None as soon as the body grows past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    after: list[Message] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            after.append(message)
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}, *after]

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return body, replay
