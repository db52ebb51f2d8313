"""The load generator: a separate process that replays a prepared list of HTTP requests against the server over
loopback with a fixed number of concurrent keep-alive HTTP/1.1 connections (a minimal asyncio client), and reports latencies, status codes and its own
CPU use (so a reader can see it was not the bottleneck).

Input (a JSON file): ``{"base_url", "concurrency", "timeout", "requests": [[tag, method, path, headers, body], ...]}``.
Requests are taken in order by ``concurrency`` workers, so neighbours in the list run at the same time.
Output: one JSON object, written to the file named by the second argument.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from collections import Counter, defaultdict
from typing import Any
from urllib.parse import urlsplit


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Connection:
    """One keep-alive HTTP/1.1 connection over asyncio streams. httpx spends milliseconds of CPU per request at
    this concurrency (its pool is the bottleneck long before the server); this costs tens of microseconds."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
        self.writer.write(head + (body or b""))
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length, chunked, close = 0, False, False
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                parts.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            content = b"".join(p[:-2] for p in parts)
        else:
            content = await self.reader.readexactly(length)
        if close:
            self.close()
        return status, content

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _error_code(content: bytes) -> str:
    try:
        body = json.loads(content)
    except ValueError:
        return "?"
    if isinstance(body, dict):
        return str(body.get("error") or body.get("code") or "?")
    return "?"


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    requests: list[list[Any]] = spec["requests"]
    concurrency = int(spec["concurrency"])
    timeout = float(spec.get("timeout", 60))
    latencies: dict[str, list[float]] = defaultdict(list)
    statuses: dict[str, Counter[str]] = defaultdict(Counter)
    errors: dict[str, Counter[str]] = defaultdict(Counter)
    responses: list[Any] = [None] * len(requests) if spec.get("keep_bodies") else []
    position = 0
    url = urlsplit(spec["base_url"])
    host, port = url.hostname or "127.0.0.1", url.port or 80
    connections = [Connection(host, port) for _ in range(concurrency)]

    async def worker(conn: Connection) -> None:
        nonlocal position
        while position < len(requests):
            i = position
            position += 1
            tag, method, path, headers, body = requests[i]
            content = body.encode() if isinstance(body, str) else None
            started = time.perf_counter()
            try:
                code, data = await asyncio.wait_for(conn.request(method, path, headers, content), timeout)
                status = str(code)
                if code >= 400:
                    errors[tag][f"{status}:{_error_code(data)}"] += 1
                if responses:
                    responses[i] = [code, data.decode("utf-8", "replace")]
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                conn.close()
                status = type(exc).__name__
            latencies[tag].append((time.perf_counter() - started) * 1000)
            statuses[tag][status] += 1

    warm = spec.get("warmup_path")
    if warm:  # open every connection outside the measurement
        await asyncio.gather(*(c.request("GET", warm, {}, None) for c in connections))
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    wall = time.perf_counter() - wall0
    cpu = _cpu_seconds() - cpu0
    for c in connections:
        c.close()

    by_tag = {}
    for tag, values in latencies.items():
        values.sort()
        by_tag[tag] = {
            "count": len(values),
            "p50_ms": round(values[len(values) // 2], 2),
            "p99_ms": round(values[min(len(values) - 1, int(len(values) * 0.99))], 2),
            "max_ms": round(values[-1], 2),
            "statuses": dict(statuses[tag]),
            "errors": dict(errors[tag]),
            "latencies_ms": [round(v, 3) for v in values] if spec.get("keep_latencies") else [],
        }
    return {
        "requests": len(requests),
        "wall_seconds": round(wall, 3),
        "throughput_rps": round(len(requests) / wall, 1) if wall else 0.0,
        "client_cpu_seconds": round(cpu, 3),
        "client_cpu_util": round(cpu / wall, 3) if wall else 0.0,
        "by_tag": by_tag,
        "responses": responses,
    }


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as fh:
        spec = json.load(fh)
    try:
        import uvloop

        out = uvloop.run(run(spec))
    except ImportError:  # pragma: no cover
        out = asyncio.run(run(spec))
    out["pid"] = os.getpid()
    with open(sys.argv[2], "w", encoding="utf-8") as fh:
        json.dump(out, fh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
