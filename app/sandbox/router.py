from fastapi import APIRouter

from app.sandbox import miniprogram, wechatpay

router = APIRouter(prefix="/sandbox", include_in_schema=False)
router.include_router(miniprogram.router)
router.include_router(wechatpay.router)
