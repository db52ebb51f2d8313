"""Reading a request's body in an ASGI layer and handing it on (``app.kit.asgi.buffer_body``)."""

from __future__ import annotations

from starlette.types import Message, Receive

from app.kit.asgi import buffer_body


def _server(messages: list[Message]) -> tuple[Receive, list[Message]]:
    """A server's ``receive`` over these messages; once they are used up it says the client went."""
    left = list(messages)

    async def receive() -> Message:
        return left.pop(0) if left else {"type": "http.disconnect", "from": "server"}

    return receive, left


def _part(body: bytes, more: bool) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


async def test_a_body_in_parts_is_handed_on_whole_then_the_server_takes_over() -> None:
    receive, left = _server([_part(b"ab", True), _part(b"", True), _part(b"cd", False), {"type": "next"}])
    body, replay = await buffer_body(receive)
    assert body == b"abcd"
    assert left == [{"type": "next"}]  # nothing read past the body's last part
    assert await replay() == _part(b"abcd", False)
    assert await replay() == {"type": "next"}
    assert await replay() == {"type": "http.disconnect", "from": "server"}


async def test_a_disconnect_inside_the_body_is_handed_on_after_what_came() -> None:
    receive, _ = _server([_part(b"ab", True), {"type": "http.disconnect"}])
    body, replay = await buffer_body(receive)
    assert body == b"ab"
    assert await replay() == _part(b"ab", False)
    assert await replay() == {"type": "http.disconnect"}
    assert await replay() == {"type": "http.disconnect", "from": "server"}


async def test_a_body_past_the_limit_is_none_and_one_at_the_limit_is_read() -> None:
    receive, left = _server([_part(b"x" * 6, True), _part(b"x" * 5, False)])
    assert await buffer_body(receive, limit=10) is None
    assert left == []
    receive, _ = _server([_part(b"x" * 6, True), _part(b"x" * 4, False)])
    at_limit = await buffer_body(receive, limit=10)
    assert at_limit is not None and at_limit[0] == b"x" * 10
