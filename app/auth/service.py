from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit
from app.auth.repository import AuthRepository
from app.auth.schemas import Grant, GrantOut, GrantRole, LoginResult, Me, UserSummary
from app.auth.subject import Subject
from app.config import get_settings
from app.exceptions import Conflict, NotFound, Unprocessable
from app.kit.crypto import decrypt_pii, encrypt_pii, mask_phone, new_token, pii_lookup_hash, token_hash
from app.kit.time import utcnow
from app.models import AuthSession, Canteen, District, RoleGrant, User
from app.models.role_grant import Role
from app.wechat.miniprogram import MiniProgram

PHONE_CONTEXT = "user.phone"


class AuthService:
    async def login_with_wechat(self, session: AsyncSession, wechat: MiniProgram, code: str) -> LoginResult:
        code_session = await wechat.code_to_session(code)
        now = utcnow()
        repo = AuthRepository(session)
        user = await repo.upsert_user_by_openid(
            code_session.openid, unionid=code_session.unionid, login_at=now
        )
        token = new_token()
        expires_at = now + timedelta(days=get_settings().SESSION_TTL_DAYS)
        repo.add_session(
            AuthSession(
                user_id=user.id, token_hash=token_hash(token), expires_at=expires_at, last_seen_at=now
            )
        )
        await session.flush()
        grants = await repo.active_grants(user.id)
        summary = UserSummary(
            id=user.id,
            roles=_unique_roles(g.role for g in grants),
            grants=[Grant.model_validate(g) for g in grants],
        )
        return LoginResult(access_token=token, expires_at=expires_at, user=summary)

    async def bind_phone(
        self, session: AsyncSession, wechat: MiniProgram, subject: Subject, code: str
    ) -> str:
        phone = await wechat.get_phone_number(code)
        user = await AuthRepository(session).get_user(subject.user_id)
        assert user is not None
        user.phone_enc = encrypt_pii(phone, context=PHONE_CONTEXT)
        user.phone_hmac = pii_lookup_hash(phone, context=PHONE_CONTEXT)
        await session.flush()
        return mask_phone(phone)

    async def me(self, session: AsyncSession, subject: Subject) -> Me:
        user = await AuthRepository(session).get_user(subject.user_id)
        assert user is not None
        phone = decrypt_pii(user.phone_enc, context=PHONE_CONTEXT) if user.phone_enc else None
        return Me(
            id=user.id,
            openid=user.openid,
            nickname=user.nickname,
            phone_masked=mask_phone(phone) if phone else None,
            roles=subject.roles,
            grants=[
                Grant(id=g.id, role=g.role, canteen_id=g.canteen_id, district_code=g.district_code)
                for g in subject.grants
            ],
            session_expires_at=subject.session_expires_at,
        )

    async def logout(self, session: AsyncSession, subject: Subject, *, everywhere: bool = False) -> None:
        repo = AuthRepository(session)
        if everywhere:
            await repo.revoke_all_sessions(subject.user_id, utcnow())
        else:
            await repo.revoke_session(subject.session_id, utcnow())

    async def grant_role(
        self,
        session: AsyncSession,
        actor: Subject | None,
        payload: GrantRole,
        *,
        actor_label: str | None = None,
        channel: str = "api",
    ) -> GrantOut:
        canteen_id, district = payload.canteen_id, payload.district
        if payload.role == Role.operator:
            if canteen_id is None:
                raise Unprocessable("授予食堂工作人员角色时必须指定食堂", detail={"field": "canteen_id"})
            if await session.get(Canteen, canteen_id) is None:
                raise NotFound("找不到这个食堂", code="CanteenNotFound")
            district = None
        elif payload.role == Role.civil_affairs:
            if not district:
                raise Unprocessable("授予民政工作人员角色时必须指定区县", detail={"field": "district"})
            if await session.get(District, district) is None:
                raise NotFound("找不到这个区县", code="DistrictNotFound")
            canteen_id = None
        else:
            if canteen_id is not None or district is not None:
                raise Unprocessable(
                    "这个角色不需要指定食堂或区县", detail={"fields": ["canteen_id", "district"]}
                )
        repo = AuthRepository(session)
        user = await repo.get_or_create_user(payload.openid)
        if await repo.find_active_grant(user.id, payload.role, canteen_id, district):
            raise Conflict("该用户已经有这个角色了", code="RoleAlreadyGranted")
        grant = RoleGrant(
            user_id=user.id,
            role=payload.role.value,
            canteen_id=canteen_id,
            district_code=district,
            granted_by_id=actor.user_id if actor else None,
        )
        repo.add_grant(grant)
        await session.flush()
        await audit.record(
            session,
            actor_user_id=actor.user_id if actor else None,
            actor_label=actor_label or (actor.label if actor else "system"),
            action="role.grant",
            target_type="user",
            target_id=user.id,
            after={"role": payload.role.value, "canteen_id": canteen_id, "district_code": district},
            channel=channel,
        )
        return GrantOut(
            id=grant.id,
            role=Role(grant.role),
            canteen_id=canteen_id,
            district_code=district,
            user_id=user.id,
            openid=user.openid,
        )

    async def revoke_role(self, session: AsyncSession, actor: Subject, grant_id: uuid.UUID) -> None:
        repo = AuthRepository(session)
        grant = await repo.get_grant(grant_id)
        if grant is None or grant.revoked_at is not None:
            raise NotFound("找不到这个角色授权", code="GrantNotFound")
        if grant.user_id == actor.user_id and grant.role == Role.federation_admin:
            raise Conflict("不能撤销自己的管理员角色", code="CannotRevokeSelf")
        before = {"role": grant.role, "canteen_id": grant.canteen_id, "district_code": grant.district_code}
        grant.revoked_at = utcnow()
        await session.flush()
        await audit.record(
            session,
            actor_user_id=actor.user_id,
            actor_label=actor.label,
            action="role.revoke",
            target_type="user",
            target_id=grant.user_id,
            before=before,
        )

    async def list_grants(self, session: AsyncSession, openid: str) -> list[GrantOut]:
        user = (await session.execute(select(User).where(User.openid == openid))).scalar_one_or_none()
        if user is None:
            raise NotFound("找不到这个用户", code="UserNotFound")
        grants = await AuthRepository(session).active_grants(user.id)
        return [
            GrantOut(
                id=g.id,
                role=Role(g.role),
                canteen_id=g.canteen_id,
                district_code=g.district_code,
                user_id=user.id,
                openid=user.openid,
            )
            for g in grants
        ]

    async def purge_expired_sessions(self, session: AsyncSession) -> int:
        """Drop sessions that expired or were revoked more than 30 days ago (kept that long for audits)."""
        return await AuthRepository(session).delete_expired_sessions(utcnow() - timedelta(days=30))


def _unique_roles(roles: object) -> list[Role]:
    out: list[Role] = []
    for r in roles:  # type: ignore[attr-defined]
        role = Role(r)
        if role not in out:
            out.append(role)
    return out


auth_service = AuthService()
