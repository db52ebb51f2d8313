"""``sangyu reconcile --date YYYY-MM-DD [--file F]``: reconcile one bill date from the command line.

Exit status: 0 reconciled, 1 discrepancies are open, 2 the bill was refused or could not be fetched."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from typing import IO, Any


async def _reconcile(bill_date: date, stream: IO[bytes] | None, sha1: str | None) -> dict[str, Any]:
    from app.db import unit_of_work
    from app.reconciliation.service import Actor, reconciliation_service
    from app.wechat.pay import get_wechatpay

    actor = Actor(user_id=None, label="cli:sangyu-reconcile", channel="system")
    async with unit_of_work() as session:
        if stream is None:
            run = await reconciliation_service.run_from_api(session, get_wechatpay(), bill_date, actor)
        else:
            run = await reconciliation_service.run(
                session, stream, bill_date=bill_date, source="upload", actor=actor, expected_sha1=sha1
            )
        return run.model_dump(mode="json")


def _parse_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("日期格式应为 YYYY-MM-DD") from exc


def _cmd_reconcile(args: argparse.Namespace) -> int:
    from app.cli import run_async
    from app.db import resolve_database_url
    from app.exceptions import SangyuError

    resolve_database_url()
    try:
        if args.file is None:
            report = run_async(_reconcile, args.date, None, args.sha1)
        else:
            with open(args.file, "rb") as stream:
                report = run_async(_reconcile, args.date, stream, args.sha1)
    except SangyuError as exc:
        print(f"对账失败：{exc.message}", file=sys.stderr)
        if exc.detail:
            print(json.dumps(exc.detail, ensure_ascii=False), file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"读取账单文件失败：{exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        bill, counts = report["bill"], report["counts"]
        print(
            f"{report['bill_date']} 账单 {bill['rows']} 行（支付 {bill['payment_rows']}，退款 {bill['refund_rows']}），"
            f"应结 ¥{bill['settled_fen'] / 100:.2f}，退款 ¥{bill['refund_fen'] / 100:.2f}，"
            f"手续费 ¥{bill['fee_fen'] / 100:.2f}；第 {report['run_count']} 次对账"
        )
        print(
            f"  一致 {counts['matched']}，金额不一致 {counts['amount_mismatch']}，微信有我们没有 "
            f"{counts['missing_in_ledger']}，我们有账单没有 {counts['missing_in_bill']}，状态不一致 "
            f"{counts['status_mismatch']}"
        )
        print(
            "  当日已对平"
            if report["day_status"] == "reconciled"
            else f"  未处理的差异 {report['open_discrepancies']} 条：请在后台 /admin 处理"
        )
    return 0 if report["day_status"] == "reconciled" else 1


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "reconcile", help="reconcile one WeChat Pay trade bill date (download or --file)"
    )
    p.add_argument("--date", required=True, type=_parse_date, help="bill date, YYYY-MM-DD (Asia/Shanghai)")
    p.add_argument("--file", help="a trade bill file (CSV or gzip) instead of downloading it")
    p.add_argument("--sha1", help="with --file: the SHA1 the uncompressed file must have")
    p.add_argument("--json", action="store_true", help="print the run as JSON")
    p.set_defaults(func=_cmd_reconcile)
