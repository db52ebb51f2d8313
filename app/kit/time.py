"""UTC in the database; Asia/Shanghai for business dates (meal dates, cutoffs, bill dates, months)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


def utcnow() -> datetime:
    return datetime.now(UTC)


def business_date(at: datetime | None = None) -> date:
    """The Asia/Shanghai calendar date of an instant (now by default)."""
    return (at or utcnow()).astimezone(SHANGHAI).date()


def shanghai_datetime(day: date, at: time) -> datetime:
    """An Asia/Shanghai wall-clock time on a business date, as an aware datetime."""
    return datetime.combine(day, at, tzinfo=SHANGHAI)


def age_on(birth: date, on: date) -> int:
    years = on.year - birth.year
    if (on.month, on.day) < (birth.month, birth.day):
        years -= 1
    return years
