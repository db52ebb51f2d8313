"""sqladmin at /admin: canteens, funds, districts (read-only), staff accounts and role grants.

Every write goes through ``AuditedModelView``: it runs in the console request's transaction (see
``app.console.auth.ConsoleGuard``) and records the audit entry in that same transaction, with the actor
``staff:<username>`` and masked before/after. CSV import and hard deletes are off: imports would bypass the
audit, and canteens, funds and staff are deactivated, never deleted."""

# sqladmin is configured with class-level lists (column_list = [...]), its documented idiom.
# ruff: noqa: RUF012

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from sqladmin import ModelView
from sqlalchemy import Select, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from wtforms import (
    BooleanField,
    FloatField,
    Form,
    IntegerField,
    PasswordField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import InputRequired, Length, NumberRange, Optional, Regexp

from app.audit import service as audit
from app.auth.schemas import GrantRole
from app.auth.service import auth_service
from app.console.auth import principal_of, session_of
from app.console.repository import scoped_canteens
from app.console.schemas import ROLE_LABELS, StaffInput, StaffPrincipal
from app.console.service import _flush, console_service
from app.exceptions import Conflict, Forbidden, NotFound
from app.kit.time import utcnow
from app.models import Canteen, District, Fund, RoleGrant, StaffAccount, SubsidyPolicy, SubsidyTier
from app.models.canteen import CanteenType
from app.models.fund import FundPurpose
from app.models.role_grant import Role
from app.models.staff_account import StaffRole

CANTEEN_TYPE_LABELS = {
    CanteenType.urban_community: "城市社区长者食堂",
    CanteenType.rural_happiness_home: "农村幸福院",
    CanteenType.institution: "养老机构食堂",
}
FUND_PURPOSE_LABELS = {
    FundPurpose.meal: "助餐",
    FundPurpose.elderly: "助老",
    FundPurpose.medical: "助医",
    FundPurpose.education: "助学",
    FundPurpose.poverty: "助困",
    FundPurpose.disability: "助残",
    FundPurpose.disaster: "救灾",
}
ROLE_GRANT_LABELS = {
    Role.operator: "食堂工作人员",
    Role.federation_admin: "慈善总会管理员",
    Role.civil_affairs: "民政工作人员",
    Role.elder: "长者本人",
    Role.family: "家属",
}


def _principal(request: Request) -> StaffPrincipal:
    principal = principal_of(request)
    if principal is None:  # the guard and sqladmin's login check run first; this is a backstop
        raise Forbidden("请先登录")
    return principal


def column_snapshot(obj: Any, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    mapper = inspect(type(obj))
    return {c.key: getattr(obj, c.key) for c in mapper.column_attrs if c.key not in exclude}


class AuditedModelView(ModelView):
    """Writes happen in the request's transaction and are audited in it."""

    audit_target_type: ClassVar[str] = ""
    audit_exclude: ClassVar[frozenset[str]] = frozenset({"created_at", "updated_at"})
    editable_fields: ClassVar[tuple[str, ...]] = ()

    can_delete = False
    can_import = False
    page_size = 50

    def snapshot(self, obj: Any) -> dict[str, Any]:
        return column_snapshot(obj, self.audit_exclude)

    async def apply(
        self, session: AsyncSession, principal: StaffPrincipal, obj: Any, data: dict[str, Any], created: bool
    ) -> None:
        for name in self.editable_fields:
            if name in data:
                value = data[name]
                setattr(obj, name, value.strip() if isinstance(value, str) else value)

    async def get_form_data_for_edit(self, obj: Any) -> dict[str, Any]:
        return {name: getattr(obj, name, None) for name in self.editable_fields}

    async def insert_model(self, request: Request, data: dict) -> Any:
        principal = _principal(request)
        session = session_of(request)
        obj = self.model()
        await self.apply(session, principal, obj, data, True)
        session.add(obj)
        await _flush(session)
        await audit.record(
            session,
            actor_user_id=principal.user_id,
            actor_label=principal.label,
            action=f"{self.audit_target_type}.create",
            target_type=self.audit_target_type,
            target_id=_pk(obj),
            after=self.snapshot(obj),
            channel="console",
        )
        return obj

    async def update_model(self, request: Request, pk: str, data: dict) -> Any:
        principal = _principal(request)
        session = session_of(request)
        obj = (await session.execute(self.form_edit_query(request).with_for_update())).scalars().first()
        if obj is None:
            raise NotFound("找不到这条记录")
        before = self.snapshot(obj)
        await self.apply(session, principal, obj, data, False)
        await _flush(session)
        after = self.snapshot(obj)
        await audit.record(
            session,
            actor_user_id=principal.user_id,
            actor_label=principal.label,
            action=f"{self.audit_target_type}.update",
            target_type=self.audit_target_type,
            target_id=_pk(obj),
            before={k: v for k, v in before.items() if after.get(k) != v},
            after={k: v for k, v in after.items() if before.get(k) != v},
            channel="console",
        )
        return obj


def _pk(obj: Any) -> str:
    return str(inspect(obj).identity[0]) if inspect(obj).identity else str(obj.id)


# ---------------------------------------------------------------------- canteens


class CanteenForm(Form):
    code = StringField("编号（印在二维码上）", [InputRequired(), Length(max=16), Regexp(r"^[A-Za-z0-9_-]+$")])
    name = StringField("名称", [InputRequired(), Length(max=64)])
    type = SelectField("类型", choices=[(t.value, label) for t, label in CANTEEN_TYPE_LABELS.items()])
    district_code = StringField(
        "区县代码（6 位）", [InputRequired(), Regexp(r"^\d{6}$", message="请填 6 位区县代码")]
    )
    street = StringField("街道/乡镇", [Optional(), Length(max=64)], default="")
    community = StringField("社区/村", [Optional(), Length(max=64)], default="")
    address = StringField("地址", [Optional(), Length(max=200)], default="")
    phone = StringField("电话", [Optional(), Length(max=32)])
    lat = FloatField("纬度", [InputRequired(), NumberRange(-90, 90)])
    lng = FloatField("经度", [InputRequired(), NumberRange(-180, 180)])
    delivery_enabled = BooleanField("提供送餐")
    delivery_fee_fen = IntegerField("送餐费（分）", [InputRequired(), NumberRange(0, 100_000)], default=0)
    delivery_radius_m = IntegerField("送餐半径（米）", [InputRequired(), NumberRange(0, 100_000)], default=0)
    is_active = BooleanField("启用", default=True)


class CanteenAdmin(AuditedModelView, model=Canteen):
    name = "食堂"
    name_plural = "食堂"
    icon = "fa-solid fa-utensils"
    identity = "canteen"
    audit_target_type = "canteen"
    form = CanteenForm
    editable_fields = tuple(CanteenForm().data.keys())
    column_list = [
        Canteen.code,
        Canteen.name,
        Canteen.type,
        Canteen.district_code,
        Canteen.street,
        Canteen.community,
        Canteen.is_active,
    ]
    column_labels = {
        Canteen.code: "编号",
        Canteen.name: "名称",
        Canteen.type: "类型",
        Canteen.district_code: "区县",
        Canteen.street: "街道/乡镇",
        Canteen.community: "社区/村",
        Canteen.is_active: "启用",
        Canteen.address: "地址",
    }
    column_searchable_list = [Canteen.code, Canteen.name]
    column_sortable_list = [Canteen.code, Canteen.name, Canteen.district_code]
    column_default_sort = [(Canteen.code, False)]
    can_export = False

    def _scope(self, request: Request, stmt: Select[Any]) -> Select[Any]:
        principal = _principal(request)
        if principal.district_scope is not None:
            stmt = stmt.where(Canteen.district_code == principal.district_scope)
        return stmt

    def list_query(self, request: Request) -> Select[Any]:
        return scoped_canteens(_principal(request).district_scope)

    def details_query(self, request: Request) -> Select[Any]:
        return self._scope(request, super().details_query(request))

    def form_edit_query(self, request: Request) -> Select[Any]:
        return self._scope(request, super().form_edit_query(request))

    async def apply(
        self, session: AsyncSession, principal: StaffPrincipal, obj: Any, data: dict[str, Any], created: bool
    ) -> None:
        district = (data.get("district_code") or "").strip()
        if await session.get(District, district) is None:
            raise NotFound("找不到这个区县，请先核对区县代码")
        if principal.district_scope is not None and district != principal.district_scope:
            raise Forbidden("只能管理本区县的食堂")
        await super().apply(session, principal, obj, data, created)
        obj.phone = obj.phone or None


# ---------------------------------------------------------------------- funds


class FundForm(Form):
    code = StringField("编号", [InputRequired(), Length(max=16), Regexp(r"^[A-Za-z0-9_-]+$")])
    name = StringField("名称", [InputRequired(), Length(max=64)])
    purpose = SelectField("用途", choices=[(p.value, label) for p, label in FUND_PURPOSE_LABELS.items()])
    is_general_meal_pool = BooleanField("乐享桑榆（全市助餐总池，只能有一个）")
    description = TextAreaField("说明", [Optional(), Length(max=2000)], default="")
    is_active = BooleanField("启用", default=True)


class FundAdmin(AuditedModelView, model=Fund):
    name = "慈善基金"
    name_plural = "慈善基金"
    icon = "fa-solid fa-hand-holding-heart"
    identity = "fund"
    audit_target_type = "fund"
    form = FundForm
    editable_fields = tuple(FundForm().data.keys())
    column_list = [Fund.code, Fund.name, Fund.purpose, Fund.is_general_meal_pool, Fund.is_active]
    column_labels = {
        Fund.code: "编号",
        Fund.name: "名称",
        Fund.purpose: "用途",
        Fund.is_general_meal_pool: "乐享桑榆总池",
        Fund.is_active: "启用",
        Fund.description: "说明",
    }
    column_searchable_list = [Fund.code, Fund.name]
    column_default_sort = [(Fund.code, False)]

    async def apply(
        self, session: AsyncSession, principal: StaffPrincipal, obj: Any, data: dict[str, Any], created: bool
    ) -> None:
        if data.get("is_general_meal_pool") and data.get("purpose") != FundPurpose.meal:
            raise Conflict("乐享桑榆总池必须是助餐用途的基金")
        await super().apply(session, principal, obj, data, created)
        obj.description = obj.description or ""


# ---------------------------------------------------------------------- districts (read-only)


class DistrictAdmin(ModelView, model=District):
    name = "区县"
    name_plural = "区县"
    icon = "fa-solid fa-map"
    identity = "district"
    can_create = False
    can_edit = False
    can_delete = False
    can_import = False
    column_list = [District.code, District.name, District.city]
    column_labels = {District.code: "代码", District.name: "名称", District.city: "城市"}
    column_default_sort = [(District.code, False)]


# ---------------------------------------------------------------------- subsidy policy (read-only)
# Policies are versioned: a new version is published through POST /api/v1/admin/subsidy-policies (validated,
# audited), never edited in place, because bookings keep the price they were quoted under a version.


class SubsidyPolicyAdmin(ModelView, model=SubsidyPolicy):
    name = "补贴政策"
    name_plural = "补贴政策（版本）"
    icon = "fa-solid fa-scale-balanced"
    identity = "subsidy-policy"
    can_create = False
    can_edit = False
    can_delete = False
    can_import = False
    column_list = [
        SubsidyPolicy.name,
        SubsidyPolicy.city,
        SubsidyPolicy.district_code,
        SubsidyPolicy.effective_from,
        SubsidyPolicy.effective_to,
        SubsidyPolicy.min_self_pay_fen,
        SubsidyPolicy.charity_cap_fen,
        SubsidyPolicy.is_active,
    ]
    column_labels = {
        SubsidyPolicy.name: "名称",
        SubsidyPolicy.city: "城市",
        SubsidyPolicy.district_code: "区县（空=全市）",
        SubsidyPolicy.effective_from: "生效日期",
        SubsidyPolicy.effective_to: "失效日期",
        SubsidyPolicy.min_self_pay_fen: "最低自付（分）",
        SubsidyPolicy.charity_cap_fen: "爱心补贴上限（分/餐）",
        SubsidyPolicy.is_active: "启用",
    }
    column_default_sort = [(SubsidyPolicy.effective_from, True)]


class SubsidyTierAdmin(ModelView, model=SubsidyTier):
    name = "补贴档位"
    name_plural = "补贴档位"
    icon = "fa-solid fa-layer-group"
    identity = "subsidy-tier"
    can_create = False
    can_edit = False
    can_delete = False
    can_import = False
    column_list = [
        SubsidyTier.policy_id,
        SubsidyTier.name,
        SubsidyTier.min_age,
        SubsidyTier.max_age,
        SubsidyTier.categories,
        SubsidyTier.amount_fen,
    ]
    column_labels = {
        SubsidyTier.policy_id: "政策",
        SubsidyTier.name: "档位",
        SubsidyTier.min_age: "最低年龄",
        SubsidyTier.max_age: "最高年龄",
        SubsidyTier.categories: "适用类别",
        SubsidyTier.amount_fen: "政府补贴（分/餐）",
    }


# ---------------------------------------------------------------------- staff accounts


class StaffAccountForm(Form):
    username = StringField("用户名（创建后不能改）", [InputRequired(), Length(min=3, max=48)])
    display_name = StringField("姓名", [InputRequired(), Length(max=64)])
    role = SelectField("角色", choices=[(r.value, label) for r, label in ROLE_LABELS.items()])
    district_code = StringField("区县代码（民政工作人员必填）", [Optional(), Regexp(r"^\d{6}$")])
    openid = StringField("关联的小程序用户 openid（可不填）", [Optional(), Length(max=64)])
    is_active = BooleanField("启用", default=True)
    new_password = PasswordField("新密码（至少 10 位；编辑时不改密码就留空）", [Optional(), Length(max=256)])


class StaffAccountAdmin(ModelView, model=StaffAccount):
    name = "工作人员账号"
    name_plural = "工作人员账号"
    icon = "fa-solid fa-user-shield"
    identity = "staff-account"
    form = StaffAccountForm
    can_delete = False
    can_import = False
    can_export = False
    column_list = [
        StaffAccount.username,
        StaffAccount.display_name,
        StaffAccount.role,
        StaffAccount.district_code,
        StaffAccount.is_active,
        StaffAccount.locked_until,
        StaffAccount.last_login_at,
    ]
    column_details_list = [*column_list, StaffAccount.user_id, StaffAccount.password_changed_at]
    column_labels = {
        StaffAccount.username: "用户名",
        StaffAccount.display_name: "姓名",
        StaffAccount.role: "角色",
        StaffAccount.district_code: "区县",
        StaffAccount.is_active: "启用",
        StaffAccount.locked_until: "锁定到",
        StaffAccount.last_login_at: "上次登录",
        StaffAccount.user_id: "关联用户",
        StaffAccount.password_changed_at: "密码修改时间",
    }
    column_searchable_list = [StaffAccount.username, StaffAccount.display_name]
    column_default_sort = [(StaffAccount.username, False)]

    async def get_form_data_for_edit(self, obj: Any) -> dict[str, Any]:
        openid = None
        if obj.user_id is not None:
            from app.models import User

            user = await session_of_current().get(User, obj.user_id)
            openid = user.openid if user else None
        return {
            "username": obj.username,
            "display_name": obj.display_name,
            "role": obj.role,
            "district_code": obj.district_code,
            "openid": openid,
            "is_active": obj.is_active,
            "new_password": None,
        }

    @staticmethod
    def _input(data: dict[str, Any]) -> StaffInput:
        return StaffInput(
            username=data.get("username") or "",
            display_name=data.get("display_name") or "",
            role=StaffRole(data.get("role") or StaffRole.civil_affairs),
            district_code=data.get("district_code") or None,
            openid=data.get("openid") or None,
            is_active=bool(data.get("is_active")),
        )

    async def insert_model(self, request: Request, data: dict) -> Any:
        principal = _principal(request)
        return await console_service.create_staff(
            session_of(request),
            self._input(data),
            data.get("new_password") or "",
            actor_label=principal.label,
            actor_user_id=principal.user_id,
        )

    async def update_model(self, request: Request, pk: str, data: dict) -> Any:
        principal = _principal(request)
        session = session_of(request)
        staff = (await session.execute(self.form_edit_query(request).with_for_update())).scalars().first()
        if staff is None:
            raise NotFound("找不到这个账号")
        return await console_service.update_staff(
            session, staff, self._input(data), data.get("new_password") or None, actor=principal
        )


def session_of_current() -> AsyncSession:
    from app.console.auth import _request_session

    session = _request_session.get()
    if session is None:
        raise RuntimeError("no console request session")
    return session


# ---------------------------------------------------------------------- role grants


class RoleGrantForm(Form):
    openid = StringField("小程序用户 openid", [InputRequired(), Length(max=64)])
    role = SelectField("角色", choices=[(r.value, label) for r, label in ROLE_GRANT_LABELS.items()])
    canteen_id = StringField("食堂 ID（食堂工作人员必填）", [Optional()])
    district = StringField("区县代码（民政工作人员必填）", [Optional(), Regexp(r"^\d{6}$")])


class RoleGrantAdmin(ModelView, model=RoleGrant):
    """Grant roles to mini-program users. Deleting a grant revokes it (the row stays, with revoked_at)."""

    name = "角色授权"
    name_plural = "角色授权"
    icon = "fa-solid fa-id-badge"
    identity = "role-grant"
    form = RoleGrantForm
    can_edit = False
    can_delete = True
    can_import = False
    column_list = [
        RoleGrant.user_id,
        RoleGrant.role,
        RoleGrant.canteen_id,
        RoleGrant.district_code,
        RoleGrant.created_at,
        RoleGrant.revoked_at,
    ]
    column_labels = {
        RoleGrant.user_id: "用户",
        RoleGrant.role: "角色",
        RoleGrant.canteen_id: "食堂",
        RoleGrant.district_code: "区县",
        RoleGrant.created_at: "授予时间",
        RoleGrant.revoked_at: "撤销时间",
    }
    column_default_sort = [(RoleGrant.created_at, True)]

    async def insert_model(self, request: Request, data: dict) -> Any:
        principal = _principal(request)
        canteen_raw = (data.get("canteen_id") or "").strip()
        try:
            canteen_id = uuid.UUID(canteen_raw) if canteen_raw else None
        except ValueError as exc:
            raise NotFound("找不到这个食堂（食堂 ID 格式不对）") from exc
        out = await auth_service.grant_role(
            session_of(request),
            None,
            GrantRole(
                openid=(data.get("openid") or "").strip(),
                role=Role(str(data.get("role") or "")),
                canteen_id=canteen_id,
                district=(data.get("district") or "").strip() or None,
            ),
            actor_label=principal.label,
            channel="console",
        )
        return await session_of(request).get(RoleGrant, out.id)

    async def delete_model(self, request: Request, pk: Any) -> None:
        principal = _principal(request)
        session = session_of(request)
        grant = (
            await session.execute(
                select(RoleGrant).where(RoleGrant.id == uuid.UUID(str(pk))).with_for_update()
            )
        ).scalar_one_or_none()
        if grant is None or grant.revoked_at is not None:
            return
        if (
            principal.user_id is not None
            and grant.user_id == principal.user_id
            and grant.role == Role.federation_admin
        ):
            raise Conflict("不能撤销自己的管理员角色")
        before = {"role": grant.role, "canteen_id": grant.canteen_id, "district_code": grant.district_code}
        grant.revoked_at = utcnow()
        await session.flush()
        await audit.record(
            session,
            actor_user_id=principal.user_id,
            actor_label=principal.label,
            action="role.revoke",
            target_type="user",
            target_id=grant.user_id,
            before=before,
            channel="console",
        )


VIEWS: list[type[ModelView]] = [
    CanteenAdmin,
    FundAdmin,
    DistrictAdmin,
    SubsidyPolicyAdmin,
    SubsidyTierAdmin,
    StaffAccountAdmin,
    RoleGrantAdmin,
]
