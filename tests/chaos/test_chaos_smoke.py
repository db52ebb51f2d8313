"""The chaos smoke run (real PostgreSQL cluster, Redis, server and worker processes; about 1.5 minutes).
Opt-in: SANGYU_CHAOS=1 (``make chaos`` runs the full profile)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(os.environ.get("SANGYU_CHAOS") != "1", reason="set SANGYU_CHAOS=1 to run the chaos smoke")
def test_chaos_smoke(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "TEST_DATABASE_URL")}
    proc = subprocess.run(
        [sys.executable, "-m", "chaos", "--smoke", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["ok"] and figures["final"]["ledger_check_rc"] == 0
    assert figures["final"]["not_exactly_once"] == []
    assert figures["pg_restart"]["unclean"] == {}
    assert figures["redis_down"]["bookings_while_down"] == {"201": 10}
