"""The audit log: every staff write calls ``record`` inside the same transaction as the write."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.context import client_ip_var, request_id_var
from app.kit.crypto import mask_address, mask_id_number, mask_name, mask_phone
from app.models import AuditLog

# Field names whose values are masked before they reach the audit log.
_MASKERS = {
    "id_number": mask_id_number,
    "phone": mask_phone,
    "real_name": mask_name,
    "address": mask_address,
    "emergency_contact_phone": mask_phone,
}
_DROP = {"password", "password_hash", "token", "token_hash", "secret", "session_key"}


# Targets whose ``name`` is a person's name (a canteen's or a fund's name is public).
PERSON_TARGETS = {"elder", "user", "staff", "staff_account", "donor", "donation", "family_binding"}


def masked(values: Mapping[str, Any] | None, *, extra_mask: Iterable[str] = ()) -> dict[str, Any] | None:
    """A JSON-safe copy of ``values`` with PII masked and secrets dropped."""
    if values is None:
        return None
    extra = set(extra_mask)
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in _DROP or key.endswith("_enc") or key.endswith("_hmac"):
            continue
        if isinstance(value, str) and (key in _MASKERS or key in extra):
            out[key] = _MASKERS.get(key, mask_name)(value)
        elif isinstance(value, uuid.UUID):
            out[key] = str(value)
        elif isinstance(value, dict):
            out[key] = masked(value, extra_mask=extra)
        elif isinstance(value, str | int | float | bool) or value is None:
            out[key] = value
        elif isinstance(value, list | tuple):
            out[key] = [str(v) if not isinstance(v, str | int | float | bool) else v for v in value]
        else:
            out[key] = str(value)
    return out


async def record(
    session: AsyncSession,
    *,
    actor_user_id: uuid.UUID | None,
    actor_label: str,
    action: str,
    target_type: str,
    target_id: str | uuid.UUID | None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    channel: str = "api",
) -> AuditLog:
    mask = ("name", "display_name") if target_type in PERSON_TARGETS else ()
    entry = AuditLog(
        actor_user_id=actor_user_id,
        actor_label=actor_label,
        action=action,
        target_type=target_type,
        target_id=str(target_id) if target_id is not None else None,
        before=masked(before, extra_mask=mask),
        after=masked(after, extra_mask=mask),
        channel=channel,
        request_id=request_id_var.get(),
        ip=client_ip_var.get(),
    )
    session.add(entry)
    await session.flush()
    return entry
