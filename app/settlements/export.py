"""Tables as downloads: CSV (UTF-8 with BOM, so Excel opens Chinese text correctly) and XLSX (openpyxl)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from typing import Any

from fastapi.responses import Response
from openpyxl import Workbook

XLSX_MEDIA = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

Row = Sequence[Any]


def to_csv(rows: Sequence[Row]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def to_xlsx(rows: Sequence[Row], *, title: str) -> bytes:
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = title[:31]
    for row in rows:
        ws.append(["" if v is None else v for v in row])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def download(rows: Sequence[Row], *, fmt: str, filename: str, title: str) -> Response:
    """``fmt`` is ``csv`` or ``xlsx``; ``filename`` without extension, ASCII."""
    if fmt == "xlsx":
        body, media = to_xlsx(rows, title=title), XLSX_MEDIA
    else:
        body, media = to_csv(rows), "text/csv; charset=utf-8"
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", filename) or "export"
    return Response(
        body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{safe}.{fmt}"'}
    )


def yuan(fen: int) -> str:
    """Fen as a yuan amount for spreadsheets ("12.30"); the *_fen columns keep the exact integer."""
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return f"{sign}{fen // 100}.{fen % 100:02d}"
