"""Printed QR codes: a plain-URL QR of ``<PUBLIC_BASE_URL>/q/<code>`` (opens the mini-program in WeChat, the
landing page elsewhere), as PNG and SVG, plus an A5-ish poster PNG with the target's name and "我为老人助一餐"."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import qrcode
import qrcode.image.svg
import structlog
from fastapi import Path as PathParam
from PIL import Image, ImageDraw, ImageFont
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import get_settings
from app.donations.repository import DonationRepository
from app.donations.schemas import QRCodeFiles
from app.exceptions import NotFound
from app.models import DonationTarget

log = structlog.get_logger("app.donations.qrcodes")

CODE_PATH: Any = PathParam(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_-]+$")

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc",
    "/System/Library/Fonts/PingFang.ttc",
    "C:/Windows/Fonts/msyh.ttc",
)
_warned = False


def find_cjk_font() -> Path | None:
    for candidate in FONT_CANDIDATES:
        if Path(candidate).exists():
            return Path(candidate)
    for root in (Path("/usr/share/fonts"), Path("/usr/local/share/fonts")):
        if root.is_dir():
            for pattern in ("*wqy*", "*CJK*", "*Noto*SC*"):
                for found in root.rglob(pattern):
                    if found.suffix.lower() in (".ttc", ".ttf", ".otf"):
                        return found
    return None


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    global _warned
    path = find_cjk_font()
    if path is not None:
        return ImageFont.truetype(str(path), size)
    if not _warned:
        log.warning(
            "no_cjk_font",
            message="未找到中文字体（fonts-wqy-microhei / fonts-noto-cjk），海报文字可能无法显示",
        )
        _warned = True
    return ImageFont.load_default(size=size)


def _qr(url: str) -> qrcode.QRCode:
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=12, border=4)
    qr.add_data(url)
    qr.make(fit=True)
    return qr


def qr_png(url: str) -> bytes:
    buf = io.BytesIO()
    _qr(url).make_image(fill_color="black", back_color="white").save(buf, format="PNG")
    return buf.getvalue()


def qr_svg(url: str) -> bytes:
    buf = io.BytesIO()
    _qr(url).make_image(image_factory=qrcode.image.svg.SvgPathImage).save(buf)
    return buf.getvalue()


def where_money_goes(target: DonationTarget, canteen_name: str | None, fund_name: str | None) -> str:
    if target.kind == "canteen":
        return f"善款专用于{canteen_name or '本食堂'}困难长者的用餐补贴"
    if target.kind == "fund":
        return f"善款进入{fund_name or '慈善基金'}，用途公开可查"
    return "善款进入乐享桑榆助餐总池，补贴全市困难长者用餐"


def poster_png(url: str, title: str, line: str) -> bytes:
    width, height = 1240, 1748  # A5 at 210 dpi
    poster = Image.new("RGB", (width, height), (255, 248, 239))
    draw = ImageDraw.Draw(poster)
    draw.rectangle([0, 0, width, 260], fill=(181, 69, 27))

    def centered(y: int, text: str, size: int, fill: tuple[int, int, int]) -> None:
        font = _font(size)
        box = draw.textbbox((0, 0), text, font=font)
        draw.text(((width - (box[2] - box[0])) / 2, y), text, font=font, fill=fill)

    centered(70, "我为老人助一餐", 110, (255, 255, 255))
    centered(320, title[:18], 72, (59, 42, 26))
    qr_img = Image.open(io.BytesIO(qr_png(url))).convert("RGB").resize((820, 820))
    poster.paste(qr_img, ((width - 820) // 2, 460))
    centered(1320, "微信扫一扫 · 捐一餐 ¥10", 56, (181, 69, 27))
    centered(1420, line[:28], 40, (90, 70, 50))
    centered(1520, "乐享桑榆 · 每一笔善款去向公开可查", 36, (122, 106, 90))
    buf = io.BytesIO()
    poster.save(buf, format="PNG")
    return buf.getvalue()


async def generate_for_targets(session: AsyncSession, codes: list[str] | None = None) -> list[QRCodeFiles]:
    """Write ``<code>.png``, ``<code>.svg`` and ``<code>-poster.png`` into QRCODE_DIR for each active target."""
    from app.donations.service import donation_service

    repo = DonationRepository(session)
    targets = await repo.list_targets(codes)
    if codes is not None and len(targets) != len(set(codes)):
        missing = sorted(set(codes) - {t.code for t in targets})
        raise NotFound("有的捐赠项目不存在", code="DonationTargetNotFound", detail={"codes": missing})
    out_dir = get_settings().QRCODE_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for target in targets:
        url = donation_service.target_url(target.code)
        canteen_name, fund_name = await repo.target_names(target)
        png, svg, poster = (out_dir / f"{target.code}{suffix}" for suffix in (".png", ".svg", "-poster.png"))
        png.write_bytes(qr_png(url))
        svg.write_bytes(qr_svg(url))
        poster.write_bytes(poster_png(url, target.title, where_money_goes(target, canteen_name, fund_name)))
        files.append(QRCodeFiles(code=target.code, url=url, png=str(png), svg=str(svg), poster=str(poster)))
    return files
