"""Every ORM model, imported here so Alembic sees one metadata."""

from app.models.audit_log import AuditLog
from app.models.auth_session import AuthSession
from app.models.base import Base
from app.models.canteen import Canteen, CanteenType
from app.models.district import District
from app.models.fund import Fund, FundPurpose
from app.models.idempotency_key import IdempotencyKey
from app.models.role_grant import Role, RoleGrant
from app.models.sandbox_wechat_message import SandboxWeChatMessage
from app.models.user import User

__all__ = [
    "AuditLog",
    "AuthSession",
    "Base",
    "Canteen",
    "CanteenType",
    "District",
    "Fund",
    "FundPurpose",
    "IdempotencyKey",
    "Role",
    "RoleGrant",
    "SandboxWeChatMessage",
    "User",
]
