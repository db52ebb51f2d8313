"""``sangyu create-staff``: a console account (the first federation admin, or any later one)."""

from __future__ import annotations

import argparse
import getpass
import sys

from app.console.schemas import StaffInput
from app.exceptions import SangyuError
from app.models.staff_account import StaffRole


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "create-staff", help="create a staff web console account (password login at /admin)"
    )
    p.add_argument(
        "--username", required=True, help="login name: lowercase letters, digits, . _ @ + - (or an email)"
    )
    p.add_argument("--name", dest="display_name", help="the person's name as shown in the console")
    p.add_argument("--role", required=True, choices=[r.value for r in StaffRole])
    p.add_argument("--district", help="6-digit district code (required for civil_affairs)")
    p.add_argument("--openid", help="link to an existing mini-program user (optional)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=_cmd_create_staff)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("密码（至少 10 位）: ")
    if getpass.getpass("再输一次: ") != first:
        raise SystemExit("两次输入的密码不一致")
    return first


def _cmd_create_staff(args: argparse.Namespace) -> int:
    from app.cli import run_async
    from app.db import resolve_database_url

    password = _read_password(args.password_stdin)
    data = StaffInput(
        username=args.username,
        display_name=args.display_name or args.username,
        role=StaffRole(args.role),
        district_code=args.district,
        openid=args.openid,
    )
    resolve_database_url()
    try:
        username = run_async(create_staff, data, password)
    except SangyuError as exc:
        print(f"没有创建：{exc.message}", file=sys.stderr)
        return 1
    print(f"已创建工作人员账号 {username}，可在 /admin 登录")
    return 0


async def create_staff(data: StaffInput, password: str) -> str:
    from app.console.service import console_service
    from app.db import unit_of_work

    async with unit_of_work() as session:
        staff = await console_service.create_staff(
            session, data, password, actor_label="cli", channel="system"
        )
        return staff.username
