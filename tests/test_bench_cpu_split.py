"""The benchmark harness's account of where the machine's CPU went between two readings of ``/proc``."""

from __future__ import annotations

import os

import pytest

from bench.harness import _TICKS, CpuSnapshot, cpu_snapshot, cpu_split, load_cpu_ms, per_request_ms


def test_each_group_gets_what_its_processes_spent_and_the_rest_is_the_machines_remainder() -> None:
    t = _TICKS
    before = CpuSnapshot(
        by_pid={10: ("workers", 5 * t, 1 * t), 20: ("postgres", 2 * t, 0), 30: ("postgres", 1 * t, 0)},
        busy=100 * t,
        ended_children=1.0,
    )
    after = CpuSnapshot(
        by_pid={
            10: ("workers", 8 * t, 2 * t),  # 3 s in Python, 1 s in the kernel
            20: ("postgres", 4 * t, 1 * t),  # 3 s
            40: ("postgres", 1 * t, 0),  # a backend started meanwhile: all of its 1 s
            50: ("redis", 0, 0),
            # 30 ended meanwhile: what it spent is in the machine's busy time, so in the rest
        },
        busy=112 * t,
        ended_children=2.5,  # the load generator
    )
    split = cpu_split(before, after)
    assert split == {
        "workers": 4.0,
        "workers_system": 1.0,
        "postgres": 4.0,
        "redis": 0.0,
        "load_generator": 1.5,
        "rest_of_machine": 2.5,
    }
    assert split is not None
    assert per_request_ms(split, 500) == {k: v * 2 for k, v in split.items()}  # seconds / 500 requests, in ms
    assert cpu_split(None, after) is None and per_request_ms(None, 10) is None


def test_a_load_reports_the_load_generators_timed_part_beside_all_it_spent() -> None:
    """``load_generator`` holds the load generator's start-up too (once per chunk of a chunked load); its own
    reading of its timed part is reported beside it."""
    measured = {
        "requests": 1000,
        "client_cpu_seconds": 0.07,
        "cpu_seconds": {"workers": 0.45, "postgres": 0.18, "load_generator": 0.14},
    }
    assert load_cpu_ms(measured) == {
        "workers": 0.45,
        "postgres": 0.18,
        "load_generator": 0.14,
        "load_generator_timed_phase": 0.07,
    }
    assert load_cpu_ms({**measured, "cpu_seconds": None}) is None


def test_a_reading_of_this_machine_finds_this_process_children_as_workers() -> None:
    """Read for real: processes whose parent is the given pid are its workers; nothing is negative."""
    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc on this system")
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        first = cpu_snapshot(os.getpid())
        assert first is not None
        assert first.by_pid.get(child.pid, ("",))[0] == "workers"
        second = cpu_snapshot(os.getpid())
        split = cpu_split(first, second)
        assert split is not None and all(v >= 0 for v in split.values())
    finally:
        child.kill()
        child.wait()
