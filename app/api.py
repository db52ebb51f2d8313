"""Every domain router under /api/v1."""

from fastapi import APIRouter

from app.auth.endpoints import router as auth_router
from app.bookings.endpoints import router as bookings_router
from app.canteens.endpoints import router as canteens_router
from app.donations.endpoints import router as donations_router
from app.elders.endpoints import router as elders_router
from app.feed.endpoints import router as feed_router
from app.ledger.endpoints import router as ledger_router
from app.menus.endpoints import router as menus_router
from app.payments.endpoints import router as payments_router
from app.reconciliation.endpoints import router as reconciliation_router
from app.settlements.endpoints import router as settlements_router
from app.subsidy.endpoints import router as subsidy_router

router = APIRouter(prefix="/api/v1")
# Matching walks the routes in this order: the public feed (the busiest reads), payment notifications and
# bookings first, so that their requests do not test every other route of the API before their own. No two
# routers share a path, so the order changes nothing else.
router.include_router(feed_router)
router.include_router(payments_router)
router.include_router(bookings_router)
router.include_router(auth_router)
router.include_router(ledger_router)
router.include_router(donations_router)
router.include_router(elders_router)
router.include_router(canteens_router)
router.include_router(menus_router)
router.include_router(subsidy_router)
router.include_router(reconciliation_router)
router.include_router(settlements_router)
