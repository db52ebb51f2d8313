"""``sangyu ledger-check``: verify the chain, the published daily roots and every ledger invariant."""

from __future__ import annotations

import argparse
import json
from typing import Any


async def _check() -> dict[str, Any]:
    from app.db import unit_of_work
    from app.ledger.service import ledger_service

    async with unit_of_work() as session:
        return await ledger_service.check(session)


def _cmd_ledger_check(args: argparse.Namespace) -> int:
    from app.cli import run_async
    from app.db import resolve_database_url

    resolve_database_url()
    report = run_async(_check)
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        head = report["chain_head"]
        print(
            f"分录 {report['entries_checked']} 笔，日摘要 {report['digests_checked']} 个，"
            f"账户 {report['accounts_checked']} 个；链头 #{head['seq']} {head['hash'][:16]}…"
        )
        for p in report["problems"]:
            where = (
                p.get("business_key")
                or p.get("account")
                or p.get("donation_id")
                or p.get("hold_key")
                or p.get("day")
            )
            seq = f" #{p['seq']}" if p.get("seq") else ""
            print(f"  ✗ [{p['check']}]{seq} {where}: {p['message']}")
        print("账本校验通过" if report["ok"] else f"账本校验失败：{len(report['problems'])} 个问题")
    return 0 if report["ok"] else 1


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("ledger-check", help="verify the ledger: hash chain, daily roots, invariants")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(func=_cmd_ledger_check)
