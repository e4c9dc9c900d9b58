"""GET /me/events: the caller's realtime events over HTTP, for clients that were offline (API.md "Realtime").

The same events as the WebSocket, from the same log (stories/store/events.py), oldest first. Without `after`,
from the start of the window (the last 7 days). With an `after` the log no longer holds (older than the window,
or not one of the caller's events), the page starts with `{"type": "resync"}`, then the window's oldest events.
`next_cursor` is the last event's id when more events follow at once, else `null`: a client that polls passes
the id of the last event it has seen.
"""

from __future__ import annotations

import re
from typing import Any

from quart import Blueprint, Response, request

from stories.api.bodies import json_response
from stories.api.deps import current_user_id, deps
from stories.api.validate import invalid
from stories.api.ws import REPLAY_WINDOW
from stories.domain import EventId, MalformedEventId

__all__ = ["DEFAULT_EVENTS_LIMIT", "MAX_EVENTS_LIMIT", "blueprint"]

blueprint = Blueprint("events", __name__)

DEFAULT_EVENTS_LIMIT = 50
MAX_EVENTS_LIMIT = 100
_LIMIT = re.compile(r"^[0-9]{1,3}$")
_RESYNC: dict[str, Any] = {"type": "resync"}


def _limit() -> int:
    raw = request.args.get("limit")
    if raw is None:
        return DEFAULT_EVENTS_LIMIT
    if not _LIMIT.match(raw) or not 1 <= int(raw) <= MAX_EVENTS_LIMIT:
        raise invalid("limit", f"must be a whole number from 1 to {MAX_EVENTS_LIMIT}")
    return int(raw)


def _after() -> EventId | None:
    raw = request.args.get("after")
    if raw is None:
        return None
    try:
        return EventId.parse(raw)
    except MalformedEventId as exc:
        raise invalid("after", str(exc)) from None


@blueprint.get("/me/events")
async def my_events() -> Response:
    limit, after = _limit(), _after()
    app = deps()
    page = await app.events.replay(current_user_id(), after, limit, app.clock.now() - REPLAY_WINDOW, settle=True)
    events = [event.client_json() for event in page.events]
    if page.stale:
        events.insert(0, _RESYNC)
    next_cursor = str(page.events[-1].id) if page.more else None
    return json_response({"events": events, "next_cursor": next_cursor})
