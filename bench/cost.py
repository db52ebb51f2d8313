"""``python -m bench.cost booking|refusal``: what one booking request costs the machine, by who spends it.

The lunch rush mixes two kinds of request, and its throughput is the machine's CPU divided between them; this
measures each alone, over HTTP against the real server, as the scenarios do:

- ``booking``: every request books (a slot with room for all), so each is the whole booking transaction;
- ``refusal``: the slot is full from the start, so each is answered 409 from the one read that refuses it.

Each request is a distinct elder with their own session and Idempotency-Key. Around the load it reads ``/proc``
as every scenario does (``bench.harness.cpu_split``): the CPU of the server's worker processes (and, of that, in
the kernel), of PostgreSQL's and Redis's processes where they run on this machine, of the load generator (its
start-up included, and its timed phase alone), and the rest of the machine (the kernel's work for the others,
anything else running) as the machine's busy time less all those. Printed per request, in milliseconds. With
``--py-spy DIR`` each worker is also sampled during the timed phase (py-spy's raw collapsed stacks, one file per
worker); py-spy pauses a worker for each sample and its own CPU counts in the rest of the machine, so take the
CPU figures from a run without it. One JSON object on the last line.

The machine's speed drifts from minute to minute: compare only runs made side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.fixtures import create_elders, lunch_menus, reset_settings, set_capacity
from bench.harness import Harness, emit, load_cpu_ms, worker_pids
from bench.scenarios.booking_rush import CONCURRENCY, booking_body


async def _arrange(requests: int, kind: str) -> tuple[dict[str, Any], list[tuple[Any, str]]]:
    from app.db import unit_of_work

    async with unit_of_work() as s:
        menu = (await lunch_menus(s, 1))[0]
        room = requests if kind == "booking" else 0
        await set_capacity(s, menu["canteen_id"], menu["date"], "lunch", room)
        people = await create_elders(s, requests, district_code=menu["district_code"])
    return menu, people


def run(kind: str, requests: int, workers: int, py_spy: Path | None) -> dict[str, Any]:
    h = Harness(scenario=f"cost_{kind}", quick=False, workers=workers)
    h.prepare()
    reset_settings()
    menu, people = asyncio.run(_arrange(requests, kind))
    load = [
        [
            kind,
            "POST",
            "/api/v1/bookings",
            {
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Idempotency-Key": f"cost-{i:06d}",
            },
            booking_body(elder_id, menu),
        ]
        for i, (elder_id, token) in enumerate(people)
    ]
    spy = shutil.which("py-spy", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    if py_spy is not None and spy is None:
        raise SystemExit("--py-spy: py-spy is not installed")
    with h.serving():
        assert h.server is not None
        time.sleep(1)  # the workers have started and imported everything
        samplers = []
        if py_spy is not None and spy is not None:
            py_spy.mkdir(parents=True, exist_ok=True)
            for pid in worker_pids(h.server.pid):
                out = py_spy / f"{kind}-{pid}.txt"
                cmd = [spy, "record", "-r", "100", "-f", "raw", "-o", str(out), "-p", str(pid)]
                samplers.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(1)
        measured = h.load(load, concurrency=CONCURRENCY)
        for sampler in samplers:
            sampler.send_signal(signal.SIGINT)
            sampler.wait(timeout=60)
    stats = measured["by_tag"][kind]
    expected = "201" if kind == "booking" else "409"
    per_request = load_cpu_ms(measured) or {}
    return {
        "scenario": f"cost_{kind}",
        "ok": stats["statuses"] == {expected: requests},
        "requests": requests,
        "throughput_rps": round(requests / measured["wall_seconds"], 1),
        "p50_ms": stats["p50_ms"],
        "p99_ms": stats["p99_ms"],
        "statuses": stats["statuses"],
        "errors": stats["errors"],
        "cpu_ms_per_request": per_request,
        "workers": workers,
        "concurrency": CONCURRENCY,
        "py_spy": str(py_spy) if py_spy is not None else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cost",
        description="CPU per booking request (the workers, PostgreSQL, Redis, the load generator, the rest of "
        "the machine), for requests that all book or all meet a full slot. Prints one JSON object last.",
    )
    parser.add_argument("kind", choices=["booking", "refusal"])
    parser.add_argument("--requests", type=int, default=3000, help="distinct elders, one request each")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (default 2)")
    parser.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        metavar="DIR",
        help="also sample each worker with py-spy into DIR (slows the run: take CPU figures from a run without)",
    )
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    result = run(args.kind, args.requests, args.workers, args.py_spy)
    emit(result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
