"""Every domain router under /api/v1."""

from fastapi import APIRouter

from app.auth.endpoints import router as auth_router

router = APIRouter(prefix="/api/v1")
router.include_router(auth_router)
