from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from app.auth.auth import CurrentSubject, SessionDep
from app.db import SessionFactory, get_session_factory
from app.feed import front
from app.feed import pages as html_pages
from app.feed.schemas import FEED_KINDS, DigestSubscription, FeedPage, FeedStats
from app.feed.service import DIGEST_TEMPLATE, feed_service
from app.kit import ratelimit
from app.kit.ratelimit import rate_limit

router = APIRouter(tags=["feed"])
public_read = [Depends(rate_limit(ratelimit.PUBLIC_READ))]


@router.get(
    "/feed",
    response_model=FeedPage,
    summary="公开动态（捐赠、资助用餐、结算、退款、对账、账本封存）",
    dependencies=public_read,
)
async def feed(
    request: Request,
    open_session: Annotated[SessionFactory, Depends(get_session_factory)],
    cursor: str | None = Query(None, max_length=200, description="上一页返回的 next_cursor"),
    limit: int = Query(20, ge=1, le=100),
    kind: str | None = Query(None, max_length=32, description=" / ".join(FEED_KINDS)),
) -> Response:
    """Newest first. The cursor is stable while new events arrive: the next page continues exactly after the
    last event of this one, whatever was added on top meanwhile."""
    key, body = await feed_service.page_json(open_session, cursor=cursor, limit=limit, kind=kind)
    front.remember(request.scope, key)
    return Response(body, media_type="application/json")


@router.get("/feed/stats", response_model=FeedStats, summary="公开统计", dependencies=public_read)
async def feed_stats(
    request: Request, open_session: Annotated[SessionFactory, Depends(get_session_factory)]
) -> Response:
    """Totals donated, spent on meals, refunded, fees and balance; per fund and per canteen; the last 30 days."""
    key, body = await feed_service.stats_json(open_session)
    front.remember(request.scope, key)
    return Response(body, media_type="application/json")


@router.get(
    "/feed/stream",
    summary="公开动态实时推送（Server-Sent Events）",
    dependencies=public_read,
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def feed_stream(
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
) -> StreamingResponse:
    """``event: feed`` messages with ``{"op": "new" | "update", "event": <feed item>}``; reconnecting with
    Last-Event-ID replays what was missed."""
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else None
    return StreamingResponse(
        feed_service.stream(last_event_id=after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/me/donation-digest", response_model=DigestSubscription, summary="每周捐赠去向推送（订阅次数）")
async def digest_status(subject: CurrentSubject, session: SessionDep) -> DigestSubscription:
    remaining = await feed_service.digest_remaining(session, subject.user_id)
    return DigestSubscription(template_id=DIGEST_TEMPLATE, remaining=remaining)


@router.post("/me/donation-digest", response_model=DigestSubscription, summary="允许一次每周捐赠去向推送")
async def digest_subscribe(subject: CurrentSubject, session: SessionDep) -> DigestSubscription:
    """Call after the donor taps 允许 in ``wx.requestSubscribeMessage`` for the digest template."""
    remaining = await feed_service.subscribe_digest(session, subject.user_id)
    return DigestSubscription(template_id=DIGEST_TEMPLATE, remaining=remaining)


# ---------------------------------------------------------------- public HTML (no /api/v1 prefix)

pages = APIRouter(include_in_schema=False, dependencies=public_read)


@pages.get("/t", response_class=HTMLResponse)
async def transparency(request: Request, session: SessionDep) -> HTMLResponse:
    return HTMLResponse(await html_pages.transparency_page(session))


@pages.get("/t/screen", response_class=HTMLResponse)
async def big_screen(session: SessionDep) -> HTMLResponse:
    return HTMLResponse(await html_pages.screen_page(session))


@pages.get("/t/c/{canteen_code}", response_class=HTMLResponse)
async def canteen_page(session: SessionDep, canteen_code: str = html_pages.CANTEEN_CODE_PATH) -> HTMLResponse:
    html, status = await html_pages.canteen_page(session, canteen_code)
    return HTMLResponse(html, status_code=status)
