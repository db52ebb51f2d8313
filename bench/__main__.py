"""``python -m bench <scenario> [--quick]`` / ``python -m bench all [--quick]``.

Each scenario prints progress to stderr and ONE JSON object on the last line of stdout; ``all`` runs every
scenario in its own process and writes ``bench/results/latest.json``. ``ok`` is correctness (exact counts,
ledger check, no 5xx); ``targets`` / ``targets_met`` say whether each DESIGN.md performance target was reached.
Exit status 0 only when every ``ok`` holds (``--require-targets``: and every target is met).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
from typing import Any

SCENARIOS = ["booking_rush", "notify_storm", "donation_open", "feed_read", "reconcile_bill", "attribution"]


def _default_workers() -> int:
    return int(os.environ.get("BENCH_WORKERS", "2"))


def run_one(name: str, quick: bool, workers: int) -> dict[str, Any]:
    from bench.harness import Harness

    module = importlib.import_module(f"bench.scenarios.{name}")
    h = Harness(scenario=name, quick=quick, workers=workers)
    try:
        h.prepare()
        result: dict[str, Any] = module.run(h)
    except Exception as exc:  # a crashed scenario still answers with its one JSON line
        import traceback

        traceback.print_exc()
        result = {
            "scenario": name,
            "ok": False,
            "quick": quick,
            "error": f"{type(exc).__name__}: {exc}"[:500],
        }
    return result


def run_all(quick: bool, workers: int, require_targets: bool = False) -> int:
    from bench.harness import RESULTS

    results = []
    for name in SCENARIOS:
        cmd = [sys.executable, "-m", "bench", name, "--workers", str(workers)] + (
            ["--quick"] if quick else []
        )
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        # "\n" only: splitlines() would also end a line at U+2028 and the like inside the JSON
        lines = proc.stdout.strip().split("\n")
        try:
            result = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            result = {"scenario": name, "ok": False, "error": proc.stderr[-1000:]}
        print(
            f"bench: {name} ok={result.get('ok')} in {time.perf_counter() - started:.0f} s", file=sys.stderr
        )
        results.append(result)
    met = [r.get("targets_met") for r in results if r.get("targets_met") is not None]
    summary = {
        "scenario": "all",
        "ok": all(r.get("ok") for r in results),
        "targets_met": all(met) if met else None,
        "quick": quick,
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(
        json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    print(json.dumps(summary, ensure_ascii=False))
    return 0 if summary["ok"] and (summary["targets_met"] is not False or not require_targets) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Sangyu performance scenarios")
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    parser.add_argument("--quick", action="store_true", help="~10x smaller sizes (CI smoke)")
    parser.add_argument(
        "--workers",
        type=int,
        default=_default_workers(),
        help="uvicorn worker processes (default 2, BENCH_WORKERS)",
    )
    parser.add_argument(
        "--require-targets",
        action="store_true",
        help="exit 1 also when a performance target is missed (default: only when correctness fails)",
    )
    args = parser.parse_args(argv)
    if args.scenario == "all":
        return run_all(args.quick, args.workers, args.require_targets)
    result = run_one(args.scenario, args.quick, args.workers)
    from bench.harness import emit

    emit(result)
    targets_ok = result.get("targets_met") is not False or not args.require_targets
    return 0 if result.get("ok") and targets_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
