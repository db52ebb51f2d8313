"""Several uvicorn worker processes, each accepting on its own ``SO_REUSEPORT`` socket (Linux).

uvicorn's own ``--workers`` shares one listening socket between the processes, and whichever wakes first
accepts every connection waiting: a burst of 64 keep-alive connections was seen split 59 / 5 between two
workers, so one core served nearly everything while the other idled. With a socket per process in one
``SO_REUSEPORT`` group, the kernel spreads new connections over the processes evenly.

The parent only supervises: it starts the workers, starts a new one if one dies, and on SIGTERM / SIGINT stops
them all (each finishes its requests in flight, as uvicorn does on SIGTERM). A worker whose supervisor was
killed outright stops by itself within a second or two.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from multiprocessing.process import BaseProcess
from typing import Any

import structlog

log = structlog.get_logger("app.serving")

RESTART_PAUSE_SECONDS = 1.0


def reuse_port_supported() -> bool:
    """Linux balances connections over a SO_REUSEPORT group; elsewhere the option exists but does not."""
    return hasattr(socket, "SO_REUSEPORT") and sys.platform.startswith("linux")


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, reuse_port=True, backlog=2048)


def _leave_with_parent(parent_pid: int) -> None:
    """If the supervisor is killed outright (SIGKILL, OOM), stop too instead of serving on as an orphan."""
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    log.warning("supervisor_gone", parent_pid=parent_pid)
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown


def _worker(options: dict[str, Any]) -> None:
    import uvicorn

    from app.logging import configure_logging

    configure_logging(options.pop("log_level_name"))
    threading.Thread(target=_leave_with_parent, args=(options.pop("parent_pid"),), daemon=True).start()
    config = uvicorn.Config(**options)
    uvicorn.Server(config).run(sockets=[_listen(config.host, config.port)])


def serve_workers(workers: int, *, log_level_name: str, **uvicorn_options: Any) -> int:
    """Run ``workers`` uvicorn processes with ``uvicorn_options`` (``uvicorn.Config`` arguments) until
    SIGTERM / SIGINT. Returns the exit status."""
    # fail here, in the parent, if the address is not ours to take (another server, a bad host)
    _listen(uvicorn_options["host"], uvicorn_options["port"]).close()
    context = multiprocessing.get_context("spawn")
    options = {**uvicorn_options, "log_level_name": log_level_name, "parent_pid": os.getpid()}
    stopping = False

    def start() -> BaseProcess:
        process = context.Process(target=_worker, args=(dict(options),), daemon=False)
        process.start()
        return process

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    processes = [start() for _ in range(workers)]
    log.info("workers_started", workers=workers, pids=[p.pid for p in processes])
    while not stopping:
        time.sleep(0.2)
        for i, process in enumerate(processes):
            if not process.is_alive() and not stopping:
                log.error("worker_died", pid=process.pid, exitcode=process.exitcode)
                time.sleep(RESTART_PAUSE_SECONDS)
                processes[i] = start()
    for process in processes:
        if process.is_alive() and process.pid is not None:
            process.terminate()  # SIGTERM: uvicorn finishes the requests in flight, then exits
    for process in processes:
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
            process.join()
    log.info("workers_stopped")
    return 0
