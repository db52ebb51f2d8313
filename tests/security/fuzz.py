"""Schemathesis over /openapi.json, once per role token: zero 5xx, every response matching its documented
schema. Used by tests/security/test_fuzz.py (bounded CI profile) and by ``make fuzz`` (FUZZ_EXAMPLES=…).

The app runs in this process (a uvicorn thread, the same one that hosts the WeChat simulator in tests), so
schemathesis's synchronous client talks to the real ASGI app with its real database and middleware."""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import schemathesis
from hypothesis import HealthCheck
from schemathesis.checks import not_a_server_error, response_schema_conformance

# Operations whose fuzzing would only exercise the WeChat simulator's failure modes or stream forever.
SKIP = {
    "GET /api/v1/feed/stream",  # SSE: an endless response
    "POST /api/v1/auth/logout",  # would revoke the very tokens the rest of the run uses (tests/auth covers it)
}


@dataclass
class FuzzReport:
    operations: int = 0
    calls: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def run_fuzz(
    base_url: str, tokens: dict[str, str | None], *, max_examples: int, seed: int = 20261128
) -> FuzzReport:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    report = FuzzReport()
    checks = [not_a_server_error, response_schema_conformance]
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        if label in SKIP:
            continue
        report.operations += 1
        for role, token in tokens.items():
            _probe(base_url, operation, label, role, token, max_examples, seed, report, checks)
    return report


def _probe(
    base_url: str,
    operation: Any,
    label: str,
    role: str,
    token: str | None,
    max_examples: int,
    seed: int,
    report: FuzzReport,
    checks: list[Any],
) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if True:
        if True:

            @hypothesis.seed(seed)
            @hypothesis.settings(
                max_examples=max_examples,
                deadline=None,
                database=None,
                derandomize=False,
                suppress_health_check=list(HealthCheck),
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            )
            @hypothesis.given(case=operation.as_strategy())
            def probe(case: Any) -> None:
                if headers:
                    case.headers = {**(case.headers or {}), **headers}
                response = case.call(base_url=base_url, timeout=30)
                report.calls += 1
                report.statuses[response.status_code] = report.statuses.get(response.status_code, 0) + 1
                try:
                    case.validate_response(response, checks=checks)
                except Exception as exc:  # collect every failing operation, not just the first
                    first = str(exc).strip().splitlines()[:6]
                    report.failures.append(f"[{role}] {label} -> {response.status_code}: {' | '.join(first)}")
                    raise

            try:
                probe()
            except Exception:
                if not report.failures or label not in report.failures[-1]:
                    report.failures.append(f"[{role}] {label}: {traceback.format_exc(limit=2)}")


def examples_from_env(default: int) -> int:
    return int(os.environ.get("FUZZ_EXAMPLES", default))
