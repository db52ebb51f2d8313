"""居民身份证号码 (GB 11643-1999): 6-digit region, 8-digit birth date, 3-digit sequence, ISO 7064 MOD 11-2
check character."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
# Province-level prefixes of administrative division codes (GB/T 2260).
_PROVINCES = frozenset(
    {
        "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37",
        "41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65",
    }
)  # fmt: skip


class IdNumberError(ValueError):
    """The message is plain Chinese and names what is wrong."""


@dataclass(frozen=True)
class IdNumber:
    value: str
    region: str
    birth_date: date
    gender: str  # "M" | "F"


def check_character(first17: str) -> str:
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK[total % 11]


def parse_id_number(raw: str, *, today: date | None = None) -> IdNumber:
    value = raw.strip().upper()
    if len(value) != 18:
        raise IdNumberError("身份证号应为18位")
    if not value[:17].isdigit() or not (value[17].isdigit() or value[17] == "X"):
        raise IdNumberError("身份证号前17位应为数字，最后一位为数字或X")
    region = value[:6]
    if region[:2] not in _PROVINCES or region[2:] == "0000":
        raise IdNumberError("身份证号的地区码不正确")
    try:
        birth = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError as exc:
        raise IdNumberError("身份证号里的出生日期不正确") from exc
    if birth.year < 1900 or birth > (today or date.today()):
        raise IdNumberError("身份证号里的出生日期不正确")
    if check_character(value[:17]) != value[17]:
        raise IdNumberError("身份证号校验位不正确，请核对后重新输入")
    return IdNumber(value=value, region=region, birth_date=birth, gender="M" if int(value[16]) % 2 else "F")


def make_id_number(region: str, birth: date, sequence: int) -> str:
    """A valid number for tests and demo data."""
    first17 = f"{region}{birth:%Y%m%d}{sequence:03d}"
    return first17 + check_character(first17)
