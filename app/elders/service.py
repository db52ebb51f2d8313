"""Elders: registration (self, family, staff), PII protection, verification, roster import, family binding."""

from __future__ import annotations

import csv
import io
import secrets
import uuid
from datetime import date, datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit
from app.auth.repository import AuthRepository
from app.auth.subject import Subject
from app.elders.idcard import IdNumberError, parse_id_number
from app.elders.repository import ElderRepository
from app.elders.schemas import (
    BindOut,
    BindRequest,
    ElderCreate,
    ElderOut,
    InviteOut,
    RosterReport,
    RosterRowResult,
    VerifyRequest,
)
from app.exceptions import BadRequest, Conflict, Forbidden, NotFound
from app.kit.crypto import (
    decrypt_pii,
    encrypt_pii,
    mask_address,
    mask_id_number,
    mask_name,
    mask_phone,
    pii_lookup_hash,
)
from app.kit.pagination import Page, decode_cursor_as, encode_cursor
from app.kit.time import age_on, business_date, utcnow
from app.models import District, Elder, ElderInvite, FamilyBinding, RoleGrant
from app.models.elder import ElderCategory
from app.models.role_grant import Role

ID_CONTEXT = "elder.id_number"
PHONE_CONTEXT = "elder.phone"
ADDRESS_CONTEXT = "elder.address"
EMERGENCY_PHONE_CONTEXT = "elder.emergency_contact_phone"
INVITE_TTL = timedelta(days=7)
CONSENT_TEXT = "本人已获得长者同意，代其订餐、取消订餐并查看其订餐和就餐记录。"
_INVITE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
MAX_ROSTER_ROWS = 5000


def id_hmac(id_number: str) -> str:
    return pii_lookup_hash(id_number, context=ID_CONTEXT)


def decrypt_address(elder: Elder) -> str | None:
    return decrypt_pii(elder.address_enc, context=ADDRESS_CONTEXT) if elder.address_enc else None


def decrypt_phone(elder: Elder) -> str | None:
    return decrypt_pii(elder.phone_enc, context=PHONE_CONTEXT) if elder.phone_enc else None


def elder_age(elder: Elder, on: date | None = None) -> int:
    return age_on(elder.birth_date, on or business_date())


def effective_categories(elder: Elder, on: date) -> list[str]:
    """Categories count for subsidies only while the elder is verified and the eligibility is valid."""
    if elder.verification_status != "verified":
        return []
    if elder.eligibility_valid_until is not None and elder.eligibility_valid_until < on:
        return []
    return list(elder.categories)


def can_see_pii(subject: Subject | None, elder: Elder) -> bool:
    return subject is not None and subject.governs(elder.hukou_district_code)


def to_out(elder: Elder, subject: Subject | None) -> ElderOut:
    full = can_see_pii(subject, elder)
    id_number = decrypt_pii(elder.id_number_enc, context=ID_CONTEXT)
    phone = decrypt_phone(elder)
    address = decrypt_address(elder)
    ec_phone = (
        decrypt_pii(elder.emergency_contact_phone_enc, context=EMERGENCY_PHONE_CONTEXT)
        if elder.emergency_contact_phone_enc
        else None
    )
    age = elder_age(elder)
    return ElderOut(
        id=elder.id,
        name=elder.name if full else mask_name(elder.name),
        id_number=id_number if full else mask_id_number(id_number),
        phone=(phone if full else mask_phone(phone)) if phone else None,
        gender=elder.gender,
        age=age,
        is_80_plus=age >= 80,
        hukou_district_code=elder.hukou_district_code,
        street=elder.street,
        community=elder.community,
        address=(address if full else mask_address(address)) if address else None,
        categories=list(elder.categories),
        diet_tags=list(elder.diet_tags),
        allergens=list(elder.allergens),
        emergency_contact_name=(
            (elder.emergency_contact_name if full else mask_name(elder.emergency_contact_name))
            if elder.emergency_contact_name
            else None
        ),
        emergency_contact_phone=(ec_phone if full else mask_phone(ec_phone)) if ec_phone else None,
        verification_status=elder.verification_status,
        eligibility_valid_until=elder.eligibility_valid_until,
        has_own_account=elder.user_id is not None,
        created_at=elder.created_at,
    )


async def ensure_role(
    session: AsyncSession, user_id: uuid.UUID, role: Role, granted_by: uuid.UUID | None
) -> None:
    repo = AuthRepository(session)
    if await repo.find_active_grant(user_id, role.value, None, None) is None:
        repo.add_grant(RoleGrant(user_id=user_id, role=role.value, granted_by_id=granted_by))
        await session.flush()


class ElderService:
    async def register(self, session: AsyncSession, subject: Subject, payload: ElderCreate) -> ElderOut:
        repo = ElderRepository(session)
        if payload.registrant == "staff" and not (
            subject.is_admin or subject.governs(payload.hukou_district_code)
        ):
            raise Forbidden("只有该区县的民政工作人员或慈善总会管理员可以代为登记", code="NotDistrictStaff")
        if payload.registrant == "family":
            if not payload.consent:
                raise BadRequest("家属代为登记需要长者本人同意，请勾选同意后再提交", code="ConsentRequired")
            if not payload.relationship:
                raise BadRequest("请填写您与长者的关系", code="RelationshipRequired")
        if payload.registrant == "self" and await repo.get_by_user(subject.user_id) is not None:
            raise Conflict("您已经登记过长者信息了", code="AlreadyRegistered")
        if await session.get(District, payload.hukou_district_code) is None:
            raise NotFound("找不到这个户籍区县", code="DistrictNotFound")
        parsed = parse_id_number(payload.id_number, today=business_date())
        if age_on(parsed.birth_date, business_date()) < 60:
            raise Conflict("助餐服务面向60周岁及以上的老年人", code="TooYoung")
        lookup = id_hmac(parsed.value)
        if await repo.get_by_id_hmac(lookup) is not None:
            raise Conflict("这个身份证号已经登记过了；如需绑定，请向长者或社区索取邀请码", code="ElderExists")
        elder = Elder(
            user_id=subject.user_id if payload.registrant == "self" else None,
            name=payload.name,
            id_number_enc=encrypt_pii(parsed.value, context=ID_CONTEXT),
            id_number_hmac=lookup,
            birth_date=parsed.birth_date,
            gender=parsed.gender,
            phone_enc=encrypt_pii(payload.phone, context=PHONE_CONTEXT) if payload.phone else None,
            hukou_district_code=payload.hukou_district_code,
            street=payload.street,
            community=payload.community,
            address_enc=encrypt_pii(payload.address, context=ADDRESS_CONTEXT) if payload.address else None,
            categories=sorted({c.value for c in payload.categories}),
            diet_tags=sorted({d.value for d in payload.diet_tags}),
            allergens=payload.allergens,
            emergency_contact_name=payload.emergency_contact_name,
            emergency_contact_phone_enc=(
                encrypt_pii(payload.emergency_contact_phone, context=EMERGENCY_PHONE_CONTEXT)
                if payload.emergency_contact_phone
                else None
            ),
            verification_status="pending",
            registered_by_id=subject.user_id,
            registration_channel={"self": "self", "family": "proxy", "staff": "counter"}[payload.registrant],
        )
        repo.add(elder)
        try:
            async with session.begin_nested():
                await session.flush()
        except IntegrityError as exc:
            raise Conflict("这个身份证号已经登记过了", code="ElderExists") from exc
        if payload.registrant == "self":
            await ensure_role(session, subject.user_id, Role.elder, subject.user_id)
        elif payload.registrant == "family":
            repo.add(
                FamilyBinding(
                    elder_id=elder.id,
                    user_id=subject.user_id,
                    relationship=payload.relationship or "家属",
                    consent_text=CONSENT_TEXT,
                    consented_at=utcnow(),
                )
            )
            await session.flush()
            await ensure_role(session, subject.user_id, Role.family, subject.user_id)
        else:
            await audit.record(
                session,
                actor_user_id=subject.user_id,
                actor_label=subject.label,
                action="elder.register",
                target_type="elder",
                target_id=elder.id,
                after={"name": elder.name, "id_number": parsed.value, "district": elder.hukou_district_code},
                channel="counter",
            )
        return to_out(elder, subject)

    async def list_elders(
        self, session: AsyncSession, subject: Subject, *, cursor: str | None, limit: int
    ) -> Page[ElderOut]:
        after = decode_cursor_as(
            cursor, lambda raw: (datetime.fromisoformat(str(raw["t"])), uuid.UUID(str(raw["id"])))
        )
        rows = await ElderRepository(session).list_readable(subject, limit=limit + 1, after=after)
        items = [to_out(e, subject) for e in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_cursor({"t": last.created_at.isoformat(), "id": str(last.id)})
        return Page[ElderOut](items=items, next_cursor=next_cursor)

    async def get(self, session: AsyncSession, subject: Subject, elder_id: uuid.UUID) -> ElderOut:
        elder = await ElderRepository(session).get_readable(subject, elder_id)
        if elder is None:
            raise NotFound("找不到这位长者", code="ElderNotFound")
        return to_out(elder, subject)

    async def create_invite(self, session: AsyncSession, subject: Subject, elder_id: uuid.UUID) -> InviteOut:
        repo = ElderRepository(session)
        elder = await repo.get_readable(subject, elder_id)
        if elder is None:
            raise NotFound("找不到这位长者", code="ElderNotFound")
        staff = subject.is_admin or subject.governs(elder.hukou_district_code)
        if (
            not staff
            and elder.user_id != subject.user_id
            and not await repo.is_family(subject.user_id, elder.id)
        ):
            raise NotFound("找不到这位长者", code="ElderNotFound")
        code = "".join(secrets.choice(_INVITE_ALPHABET) for _ in range(8))
        invite = ElderInvite(
            elder_id=elder.id, code=code, created_by_id=subject.user_id, expires_at=utcnow() + INVITE_TTL
        )
        repo.add(invite)
        await session.flush()
        if staff and elder.user_id != subject.user_id:
            await audit.record(
                session,
                actor_user_id=subject.user_id,
                actor_label=subject.label,
                action="elder.invite",
                target_type="elder",
                target_id=elder.id,
                channel="counter",
            )
        return InviteOut(invite_code=code, expires_at=invite.expires_at)

    async def bind(self, session: AsyncSession, subject: Subject, payload: BindRequest) -> BindOut:
        if not payload.consent:
            raise BadRequest("绑定长者需要长者本人同意，请勾选同意后再提交", code="ConsentRequired")
        repo = ElderRepository(session)
        invite = await repo.get_invite_for_update(payload.invite_code.upper())
        now = utcnow()
        if invite is None or invite.used_at is not None or invite.expires_at <= now:
            raise NotFound("邀请码无效或已过期，请向长者重新索取", code="InviteInvalid")
        elder = await repo.get(invite.elder_id)
        assert elder is not None
        if elder.user_id == subject.user_id:
            raise Conflict("不能绑定您自己", code="CannotBindSelf")
        if await repo.is_family(subject.user_id, elder.id):
            raise Conflict("您已经绑定了这位长者", code="AlreadyBound")
        invite.used_at = now
        invite.used_by_id = subject.user_id
        binding = FamilyBinding(
            elder_id=elder.id,
            user_id=subject.user_id,
            relationship=payload.relationship,
            consent_text=CONSENT_TEXT,
            consented_at=now,
            invite_id=invite.id,
        )
        repo.add(binding)
        await session.flush()
        await ensure_role(session, subject.user_id, Role.family, subject.user_id)
        return BindOut(elder_id=elder.id, relationship=binding.relationship, consented_at=now)

    async def verify(
        self, session: AsyncSession, subject: Subject, elder_id: uuid.UUID, payload: VerifyRequest
    ) -> ElderOut:
        repo = ElderRepository(session)
        elder = await repo.get(elder_id, for_update=True)
        if elder is None or not subject.governs(elder.hukou_district_code):
            raise NotFound("找不到这位长者（或不在您管辖的区县）", code="ElderNotFound")
        before = {
            "verification_status": elder.verification_status,
            "categories": list(elder.categories),
            "valid_until": elder.eligibility_valid_until,
        }
        elder.verification_status = payload.decision
        if payload.categories is not None:
            elder.categories = sorted({c.value for c in payload.categories})
        if payload.valid_until is not None:
            elder.eligibility_valid_until = payload.valid_until
        elder.verified_at = utcnow()
        elder.verified_by_id = subject.user_id
        elder.verification_note = payload.note
        await session.flush()
        await audit.record(
            session,
            actor_user_id=subject.user_id,
            actor_label=subject.label,
            action=f"elder.{payload.decision}",
            target_type="elder",
            target_id=elder.id,
            before=before,
            after={
                "verification_status": elder.verification_status,
                "categories": list(elder.categories),
                "valid_until": elder.eligibility_valid_until,
            },
        )
        return to_out(elder, subject)

    async def import_roster(self, session: AsyncSession, subject: Subject, content: bytes) -> RosterReport:
        """Apply an eligibility roster (CSV: id_number, categories, valid_until). Each row is applied whole
        in its own savepoint or not at all; the report says which and why."""
        try:
            text = content.decode("utf-8-sig")
        except UnicodeDecodeError:
            try:
                text = content.decode("gb18030")
            except UnicodeDecodeError as exc:
                raise BadRequest(
                    "文件编码无法识别，请保存为 UTF-8 的 CSV 文件", code="RosterEncoding"
                ) from exc
        reader = csv.DictReader(io.StringIO(text))
        header = [h.strip() for h in (reader.fieldnames or [])]
        if not {"id_number", "categories", "valid_until"} <= set(header):
            raise BadRequest(
                "CSV 表头应包含 id_number, categories, valid_until 三列",
                code="RosterHeader",
                detail={"header": header},
            )
        rows = list(reader)
        if len(rows) > MAX_ROSTER_ROWS:
            raise BadRequest(f"一次最多导入 {MAX_ROSTER_ROWS} 行", code="RosterTooLarge")
        repo = ElderRepository(session)
        results: list[RosterRowResult] = []
        known = {c.value for c in ElderCategory}
        for index, raw in enumerate(rows, start=2):
            row = {(k or "").strip(): (v or "").strip() if isinstance(v, str) else "" for k, v in raw.items()}
            id_text = row.get("id_number", "")
            masked = mask_id_number(id_text) if id_text else None
            try:
                parsed = parse_id_number(id_text, today=business_date())
            except IdNumberError as exc:
                results.append(RosterRowResult(row=index, status="error", id_number=masked, message=str(exc)))
                continue
            cats = [
                c.strip() for c in row.get("categories", "").replace("、", ";").replace("|", ";").split(";")
            ]
            cats = [c for c in cats if c]
            unknown = [c for c in cats if c not in known]
            if unknown:
                results.append(
                    RosterRowResult(
                        row=index,
                        status="error",
                        id_number=masked,
                        message=f"不认识的类别：{'、'.join(unknown)}",
                    )
                )
                continue
            try:
                valid_until = date.fromisoformat(row.get("valid_until", ""))
            except ValueError:
                results.append(
                    RosterRowResult(
                        row=index,
                        status="error",
                        id_number=masked,
                        message="valid_until 应为 YYYY-MM-DD 日期",
                    )
                )
                continue
            elder = await repo.get_by_id_hmac(id_hmac(parsed.value), for_update=True)
            if elder is None or not (subject.is_admin or subject.governs(elder.hukou_district_code)):
                # one answer for both: staff of one district cannot learn who is registered in another
                results.append(
                    RosterRowResult(
                        row=index, status="error", id_number=masked, message="您管辖的区县没有登记这位长者"
                    )
                )
                continue
            try:
                async with session.begin_nested():
                    before = {
                        "categories": list(elder.categories),
                        "valid_until": elder.eligibility_valid_until,
                    }
                    elder.categories = sorted(set(cats))
                    elder.eligibility_valid_until = valid_until
                    elder.verification_status = "verified"
                    elder.verified_at = utcnow()
                    elder.verified_by_id = subject.user_id
                    elder.verification_note = "名单导入"
                    await session.flush()
                    await audit.record(
                        session,
                        actor_user_id=subject.user_id,
                        actor_label=subject.label,
                        action="elder.roster_import",
                        target_type="elder",
                        target_id=elder.id,
                        before=before,
                        after={"categories": elder.categories, "valid_until": valid_until},
                    )
            except IntegrityError:
                await session.refresh(elder)
                results.append(
                    RosterRowResult(row=index, status="error", id_number=masked, message="保存失败，未作修改")
                )
                continue
            results.append(RosterRowResult(row=index, status="applied", id_number=masked, message="已更新"))
        applied = sum(1 for r in results if r.status == "applied")
        return RosterReport(total=len(results), applied=applied, errors=len(results) - applied, rows=results)


elder_service = ElderService()
