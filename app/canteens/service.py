from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit
from app.auth.subject import Subject
from app.canteens.repository import CanteenRepository
from app.canteens.schemas import CanteenCreate, CanteenOut, CanteenPatch, SlotIn, SlotOut
from app.exceptions import BadRequest, Conflict, NotFound
from app.kit.pagination import Page, decode_cursor, encode_cursor, invalid_cursor
from app.models import Canteen, CanteenSlot, District


def to_out(canteen: Canteen, slots: list[CanteenSlot], distance: float | None = None) -> CanteenOut:
    return CanteenOut(
        id=canteen.id,
        code=canteen.code,
        name=canteen.name,
        type=canteen.type,
        district_code=canteen.district_code,
        street=canteen.street,
        community=canteen.community,
        address=canteen.address,
        phone=canteen.phone,
        lat=canteen.lat,
        lng=canteen.lng,
        delivery_enabled=canteen.delivery_enabled,
        delivery_fee_fen=canteen.delivery_fee_fen,
        delivery_radius_m=canteen.delivery_radius_m,
        is_active=canteen.is_active,
        distance_m=round(distance) if distance is not None else None,
        slots=[SlotOut.model_validate(s) for s in slots],
    )


def _slot_values(s: SlotIn) -> dict[str, Any]:
    return {
        "serve_start": s.serve_start,
        "serve_end": s.serve_end,
        "cutoff_days_before": s.cutoff_days_before,
        "cutoff_time": s.cutoff_time,
        "default_capacity": s.default_capacity,
        "is_active": s.is_active,
    }


class CanteenService:
    async def search(
        self,
        session: AsyncSession,
        *,
        lat: float | None,
        lng: float | None,
        district: str | None,
        radius_m: int | None,
        cursor: str | None,
        limit: int,
    ) -> Page[CanteenOut]:
        if (lat is None) != (lng is None):
            raise BadRequest("按距离查找需要同时提供 lat 和 lng", code="LatLngRequired")
        state = decode_cursor(cursor) or {}
        offset = state.get("o", 0)
        if not isinstance(offset, int) or offset < 0 or offset > 100_000:
            raise invalid_cursor()
        repo = CanteenRepository(session)
        rows = await repo.search(
            lat=lat, lng=lng, district=district, radius_m=radius_m, offset=offset, limit=limit + 1
        )
        page = rows[:limit]
        slots = await repo.slots([c.id for c, _ in page])
        items = [to_out(c, slots[c.id], d) for c, d in page]
        return Page[CanteenOut](
            items=items, next_cursor=encode_cursor({"o": offset + limit}) if len(rows) > limit else None
        )

    async def get(self, session: AsyncSession, canteen_id: uuid.UUID) -> CanteenOut:
        repo = CanteenRepository(session)
        canteen = await repo.get(canteen_id)
        if canteen is None:
            raise NotFound("找不到这个食堂", code="CanteenNotFound")
        return to_out(canteen, (await repo.slots([canteen.id]))[canteen.id])

    async def create(self, session: AsyncSession, subject: Subject, payload: CanteenCreate) -> CanteenOut:
        repo = CanteenRepository(session)
        if await session.get(District, payload.district_code) is None:
            raise NotFound("找不到这个区县", code="DistrictNotFound")
        if await repo.get_by_code(payload.code) is not None:
            raise Conflict("这个食堂编码已被使用", code="CanteenCodeTaken")
        values = payload.model_dump(exclude={"slots"})
        canteen = Canteen(**values)
        repo.add(canteen)
        try:
            async with session.begin_nested():
                await session.flush()
        except IntegrityError as exc:
            raise Conflict("这个食堂编码已被使用", code="CanteenCodeTaken") from exc
        for s in payload.slots:
            repo.add(CanteenSlot(canteen_id=canteen.id, slot=s.slot.value, **_slot_values(s)))
        await session.flush()
        await audit.record(
            session,
            actor_user_id=subject.user_id,
            actor_label=subject.label,
            action="canteen.create",
            target_type="canteen",
            target_id=canteen.id,
            after=payload.model_dump(mode="json"),
        )
        return to_out(canteen, (await repo.slots([canteen.id]))[canteen.id])

    async def update(
        self, session: AsyncSession, subject: Subject, canteen_id: uuid.UUID, payload: CanteenPatch
    ) -> CanteenOut:
        repo = CanteenRepository(session)
        canteen = await repo.get(canteen_id)
        if canteen is None:
            raise NotFound("找不到这个食堂", code="CanteenNotFound")
        changes = payload.model_dump(exclude_unset=True, exclude={"slots"})
        if any(v is None for k, v in changes.items() if k != "phone"):
            raise BadRequest("修改的字段不能为空", code="NullField")
        before = {k: getattr(canteen, k) for k in changes}
        for key, value in changes.items():
            setattr(canteen, key, value)
        slot_changes: list[dict[str, Any]] = []
        for s in payload.slots or []:
            existing = await repo.get_slot(canteen.id, s.slot.value)
            if existing is None:
                repo.add(CanteenSlot(canteen_id=canteen.id, slot=s.slot.value, **_slot_values(s)))
            else:
                for key, value in _slot_values(s).items():
                    setattr(existing, key, value)
            slot_changes.append({"slot": s.slot.value, **{k: str(v) for k, v in _slot_values(s).items()}})
        await session.flush()
        await audit.record(
            session,
            actor_user_id=subject.user_id,
            actor_label=subject.label,
            action="canteen.update",
            target_type="canteen",
            target_id=canteen.id,
            before=before,
            after={**changes, "slots": slot_changes} if slot_changes else changes,
        )
        return to_out(canteen, (await repo.slots([canteen.id]))[canteen.id])


canteen_service = CanteenService()
