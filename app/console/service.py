"""Console rules: staff accounts, password login with lockout, server-side sessions, CSRF tokens."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta
from functools import lru_cache
from typing import Any

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit
from app.config import Environment, get_settings
from app.console.repository import StaffRepository
from app.console.schemas import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    USERNAME_RE,
    StaffInput,
    StaffPrincipal,
    normalize_username,
)
from app.exceptions import Conflict, NotFound, TooManyRequests, Unauthorized, Unprocessable
from app.kit.crypto import new_token, token_hash
from app.kit.time import utcnow
from app.models import District, StaffAccount, StaffSession
from app.models.staff_account import StaffRole

log = structlog.get_logger("app.console")

MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=15)
IDLE_TIMEOUT = timedelta(hours=8)
TOUCH_EVERY = timedelta(minutes=1)
IP_FAILURE_LIMIT = 20
IP_WINDOW_SECONDS = 15 * 60

LOGIN_FAILED_MESSAGE = "用户名或密码不正确。连续输错 5 次，账号将被锁定 15 分钟。"
IP_LIMIT_MESSAGE = "这台电脑登录失败的次数太多了，请 15 分钟后再试。"


@lru_cache
def _password_hasher() -> PasswordHasher:
    """argon2id with the library's (RFC 9106 low-memory) defaults; the test suite uses a cheap setting so
    lockout tests do not spend seconds hashing."""
    if Environment.testing == get_settings().APP_ENV:
        return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    return PasswordHasher()


@lru_cache
def _dummy_hash() -> str:
    # Verified when the username does not exist, so a wrong username costs as much time as a wrong password.
    return _password_hasher().hash("sangyu-console-no-such-user")


class LoginFailed(Unauthorized):
    code = "LoginFailed"
    default_message = LOGIN_FAILED_MESSAGE


def hash_password(password: str) -> str:
    check_password(password)
    return _password_hasher().hash(password)


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Unprocessable(
            f"密码至少需要 {MIN_PASSWORD_LENGTH} 个字符",
            code="PasswordTooShort",
            detail={"field": "password"},
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise Unprocessable("密码太长了", code="PasswordTooLong", detail={"field": "password"})


def csrf_token_for(session_token: str) -> str:
    """The per-session CSRF token: derived from the session token, so nothing else needs storing."""
    key = get_settings().SECRET_KEY.encode()
    return hmac.new(key, b"console-csrf:" + session_token.encode(), hashlib.sha256).hexdigest()


def csrf_matches(expected: str | None, given: str | None) -> bool:
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def staff_snapshot(staff: StaffAccount) -> dict[str, Any]:
    """What the audit log keeps of a staff account (never the password hash)."""
    return {
        "username": staff.username,
        "display_name": staff.display_name,
        "role": staff.role,
        "district_code": staff.district_code,
        "user_id": staff.user_id,
        "is_active": staff.is_active,
    }


class ConsoleService:
    # ------------------------------------------------------------------ login and sessions

    async def login(
        self,
        session: AsyncSession,
        username: str,
        password: str,
        *,
        ip: str | None,
        user_agent: str | None,
    ) -> tuple[StaffAccount, str]:
        """Check the password and open a session; returns the account and the cookie token.

        Every failure raises ``LoginFailed`` with one message, whether the username exists or not. Failed
        attempts are counted on the account row (the caller must commit them even though it answers 401);
        the 5th failure locks the account for 15 minutes, during which even the right password is refused."""
        await self._check_ip(ip)
        username = normalize_username(username)
        repo = StaffRepository(session)
        staff = None
        if USERNAME_RE.match(username) and len(password) <= MAX_PASSWORD_LENGTH:
            staff = await repo.get_by_username(username, for_update=True)
        now = utcnow()
        if staff is None or not staff.is_active:
            _verify(_dummy_hash(), password)
            await self._count_ip_failure(ip)
            raise LoginFailed()
        if staff.locked_until is not None and staff.locked_until > now:
            _verify(_dummy_hash(), password)
            await self._count_ip_failure(ip)
            raise LoginFailed(detail={"locked": True})
        if not _verify(staff.password_hash, password):
            staff.failed_login_count += 1
            if staff.failed_login_count >= MAX_FAILED_LOGINS:
                staff.failed_login_count = 0
                staff.locked_until = now + LOCKOUT
                await audit.record(
                    session,
                    actor_user_id=None,
                    actor_label="system",
                    action="staff.lock",
                    target_type="staff_account",
                    target_id=staff.id,
                    after={"username": staff.username, "locked_until": staff.locked_until.isoformat()},
                    channel="console",
                )
            await session.flush()
            await self._count_ip_failure(ip)
            raise LoginFailed()
        if _password_hasher().check_needs_rehash(staff.password_hash):
            staff.password_hash = _password_hasher().hash(password)
        staff.failed_login_count = 0
        staff.locked_until = None
        staff.last_login_at = now
        token = new_token()
        repo.add_session(
            StaffSession(
                staff_id=staff.id,
                token_hash=token_hash(token),
                last_seen_at=now,
                ip=ip,
                user_agent=(user_agent or "")[:200] or None,
            )
        )
        await session.flush()
        await audit.record(
            session,
            actor_user_id=staff.user_id,
            actor_label=f"staff:{staff.username}",
            action="staff.login",
            target_type="staff_account",
            target_id=staff.id,
            channel="console",
        )
        return staff, token

    async def resolve(self, session: AsyncSession, token: str | None) -> StaffPrincipal | None:
        """The principal behind a session cookie, or None when it is unknown, revoked or idle too long."""
        if not token or len(token) > 128:
            return None
        found = await StaffRepository(session).get_session_by_token_hash(token_hash(token))
        if found is None:
            return None
        row, staff = found
        now = utcnow()
        if row.revoked_at is not None or not staff.is_active or now - row.last_seen_at > IDLE_TIMEOUT:
            return None
        if now - row.last_seen_at > TOUCH_EVERY:
            row.last_seen_at = now
            await session.flush()
        return StaffPrincipal(
            staff_id=staff.id,
            username=staff.username,
            display_name=staff.display_name,
            role=StaffRole(staff.role),
            district_code=staff.district_code,
            user_id=staff.user_id,
            session_id=row.id,
            csrf_token=csrf_token_for(token),
        )

    async def logout(self, session: AsyncSession, principal: StaffPrincipal) -> None:
        await StaffRepository(session).revoke_session(principal.session_id, utcnow())
        await audit.record(
            session,
            actor_user_id=principal.user_id,
            actor_label=principal.label,
            action="staff.logout",
            target_type="staff_account",
            target_id=principal.staff_id,
            channel="console",
        )

    async def _check_ip(self, ip: str | None) -> None:
        if not ip:
            return
        try:
            from app.redis import get_redis

            failures = await get_redis().get(_ip_key(ip))
        except Exception:  # Redis down: the per-account lockout in the database still applies.
            log.warning("console_ip_limit_unavailable")
            return
        if failures is not None and int(failures) >= IP_FAILURE_LIMIT:
            raise TooManyRequests(IP_LIMIT_MESSAGE, code="TooManyLoginFailures")

    async def _count_ip_failure(self, ip: str | None) -> None:
        if not ip:
            return
        try:
            from app.redis import get_redis

            redis = get_redis()
            count = await redis.incr(_ip_key(ip))
            if count == 1:
                await redis.expire(_ip_key(ip), IP_WINDOW_SECONDS)
        except Exception:
            log.warning("console_ip_limit_unavailable")

    # ------------------------------------------------------------------ staff accounts

    async def create_staff(
        self,
        session: AsyncSession,
        data: StaffInput,
        password: str,
        *,
        actor_label: str,
        actor_user_id: Any = None,
        channel: str = "console",
    ) -> StaffAccount:
        check_password(password)
        staff = StaffAccount(failed_login_count=0, password_hash="")
        await self._apply(session, staff, data)
        if await StaffRepository(session).get_by_username(staff.username) is not None:
            raise Conflict("这个用户名已经有人用了", code="UsernameTaken", detail={"field": "username"})
        staff.password_hash = _password_hasher().hash(password)
        staff.password_changed_at = utcnow()
        StaffRepository(session).add(staff)
        await _flush(session)
        await audit.record(
            session,
            actor_user_id=actor_user_id,
            actor_label=actor_label,
            action="staff.create",
            target_type="staff_account",
            target_id=staff.id,
            after=staff_snapshot(staff),
            channel=channel,
        )
        return staff

    async def update_staff(
        self,
        session: AsyncSession,
        staff: StaffAccount,
        data: StaffInput,
        new_password: str | None,
        *,
        actor: StaffPrincipal,
    ) -> StaffAccount:
        before = staff_snapshot(staff)
        if staff.id == actor.staff_id and (not data.is_active or data.role != StaffRole(staff.role)):
            raise Conflict("不能停用自己的账号或修改自己的角色", code="CannotChangeSelf")
        old_username = staff.username
        await self._apply(session, staff, data)
        if staff.username != old_username:
            raise Unprocessable(
                "用户名创建后不能修改", code="UsernameImmutable", detail={"field": "username"}
            )
        after: dict[str, Any] = staff_snapshot(staff)
        revoke = not staff.is_active or before["role"] != staff.role
        if new_password:
            check_password(new_password)
            staff.password_hash = _password_hasher().hash(new_password)
            staff.password_changed_at = utcnow()
            staff.failed_login_count = 0
            staff.locked_until = None
            after["password_changed"] = True
            revoke = True
        await _flush(session)
        if revoke:
            await StaffRepository(session).revoke_all_sessions(staff.id, utcnow())
        await audit.record(
            session,
            actor_user_id=actor.user_id,
            actor_label=actor.label,
            action="staff.update",
            target_type="staff_account",
            target_id=staff.id,
            before=before,
            after=after,
            channel="console",
        )
        return staff

    async def _apply(self, session: AsyncSession, staff: StaffAccount, data: StaffInput) -> None:
        username = normalize_username(data.username)
        if not USERNAME_RE.match(username):
            raise Unprocessable(
                "用户名只能用小写字母、数字和 . _ @ + -，长度 3 到 48 个字符",
                code="InvalidUsername",
                detail={"field": "username"},
            )
        display_name = data.display_name.strip()
        if not display_name or len(display_name) > 64:
            raise Unprocessable("请填写姓名（最多 64 个字）", detail={"field": "display_name"})
        district = (data.district_code or "").strip() or None
        if data.role == StaffRole.civil_affairs:
            if district is None:
                raise Unprocessable("民政工作人员必须指定区县", detail={"field": "district_code"})
            if await session.get(District, district) is None:
                raise NotFound("找不到这个区县", code="DistrictNotFound")
        elif district is not None:
            raise Unprocessable("慈善总会管理员不需要指定区县", detail={"field": "district_code"})
        user_id = None
        openid = (data.openid or "").strip()
        if openid:
            user = await StaffRepository(session).get_user_by_openid(openid)
            if user is None:
                raise NotFound("找不到这个微信用户（openid）", code="UserNotFound")
            user_id = user.id
        staff.username = username
        staff.display_name = display_name
        staff.role = data.role.value
        staff.district_code = district
        staff.user_id = user_id
        staff.is_active = data.is_active


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _password_hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def _flush(session: AsyncSession) -> None:
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        raise Conflict("保存失败：与已有数据冲突（例如用户名重复）", code="Conflict") from exc


def _ip_key(ip: str) -> str:
    return f"console:login-failures:{ip}"


console_service = ConsoleService()
