"""Every domain router under /api/v1, added to the app flat (``app.kit.routing.include_flat``)."""

from fastapi import APIRouter, FastAPI

from app.auth.endpoints import router as auth_router
from app.bookings.endpoints import router as bookings_router
from app.canteens.endpoints import router as canteens_router
from app.donations.endpoints import router as donations_router
from app.elders.endpoints import router as elders_router
from app.feed.endpoints import router as feed_router
from app.kit.routing import include_flat
from app.ledger.endpoints import router as ledger_router
from app.menus.endpoints import router as menus_router
from app.payments.endpoints import router as payments_router
from app.reconciliation.endpoints import router as reconciliation_router
from app.settlements.endpoints import router as settlements_router
from app.subsidy.endpoints import router as subsidy_router

PREFIX = "/api/v1"
# Matching walks the routes in this order, testing each route until one matches: payment notifications and
# bookings first (the storms), then the public feed (most of its reads are answered from the copy before
# routing, app/feed/front.py), so that their requests do not test every other route of the API before their
# own. No two routers share a path, so the order changes nothing else.
ROUTERS: list[APIRouter] = [
    payments_router,
    bookings_router,
    feed_router,
    auth_router,
    ledger_router,
    donations_router,
    elders_router,
    canteens_router,
    menus_router,
    subsidy_router,
    reconciliation_router,
    settlements_router,
]


def include_api(app: FastAPI) -> None:
    """Every API route on the app's own router (``include_flat``: no per-request matching through nested
    routers)."""
    for router in ROUTERS:
        include_flat(app, router, prefix=PREFIX)
