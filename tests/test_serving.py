"""``sangyu serve --workers N`` on Linux: a SO_REUSEPORT socket per worker, so connections are spread evenly;
a worker that dies is replaced; SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from app.serving import reuse_port_supported
from tests.fixtures.environment import free_port

pytestmark = pytest.mark.skipif(not reuse_port_supported(), reason="SO_REUSEPORT balancing is Linux-only")


async def pid_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The smallest ASGI app that says which process answered."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(os.getpid()).encode()})


def _answering_pid(base: str) -> int:
    with httpx.Client(base_url=base, timeout=5) as client:  # a new connection each time
        return int(client.get("/").text)


def _wait_for(predicate: Any, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            found = predicate()
            if found:
                return found
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("timed out")


@contextmanager
def _two_workers() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``serve_workers(2)`` serving ``pid_app`` in a process of its own; killed if the test leaves it running."""
    port = free_port()
    code = (
        "from app.serving import serve_workers; "
        f"raise SystemExit(serve_workers(2, log_level_name='WARNING', app='tests.test_serving:pid_app', "
        f"host='127.0.0.1', port={port}, log_config=None))"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        yield parent, f"http://127.0.0.1:{port}"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_workers_share_connections_evenly_are_replaced_and_stop_together() -> None:
    with _two_workers() as (parent, base):
        _wait_for(lambda: _answering_pid(base), 60)
        # both workers listen before the burst (each binds its own socket when it starts)
        pids = _wait_for(lambda: len(seen := {_answering_pid(base) for _ in range(20)}) == 2 and seen, 60)
        burst = Counter(_answering_pid(base) for _ in range(60))
        assert set(burst) == pids
        assert min(burst.values()) >= 10, burst  # even by hash; a shared socket gave one worker 59 of 64

        victim = next(iter(pids))
        os.kill(victim, signal.SIGKILL)
        survivors = pids - {victim}
        replaced = _wait_for(lambda: ({_answering_pid(base) for _ in range(20)} - survivors) or None, 60)
        assert victim not in replaced

        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) == 0
        for pid in survivors | replaced:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1].startswith("Z")  # exited, waiting to be reaped
    except FileNotFoundError:
        return True


def test_workers_stop_when_their_supervisor_is_killed() -> None:
    with _two_workers() as (parent, base):
        pids = _wait_for(lambda: len(seen := {_answering_pid(base) for _ in range(20)}) == 2 and seen, 60)
        parent.kill()  # SIGKILL: no chance to stop its workers
        parent.wait()
        _wait_for(lambda: all(_gone(pid) for pid in pids), 30)
        with pytest.raises(httpx.HTTPError):
            _answering_pid(base)
