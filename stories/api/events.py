"""GET /me/events: the caller's realtime events over HTTP, for clients that were offline (API.md "Realtime").

The same events as the WebSocket, from the same log (stories/store/events.py), oldest first. Without `after`,
from the start of the window (the last 7 days). With an `after` the log no longer holds (older than the window,
or not one of the caller's events), the page starts with `{"type": "resync"}`, then the window's oldest events.
`next_cursor` is the last event's id when more events follow at once, else `null`: a client that polls passes
the id of the last event it has seen.
"""

from __future__ import annotations

from typing import Any

from quart import Response, request

from stories.api.declare import DeclaredBlueprint, Route
from stories.api.deps import current_user_id, deps
from stories.api.json_io import json_response
from stories.api.openapi import AFTER_PARAM, EVENT_EXAMPLE, json_answer, limit_param, ref
from stories.api.paging import limit_arg
from stories.api.validate import invalid
from stories.api.ws import REPLAY_WINDOW
from stories.domain import EventId, MalformedEventId

__all__ = ["DEFAULT_EVENTS_LIMIT", "MAX_EVENTS_LIMIT", "blueprint"]

blueprint = DeclaredBlueprint("events", __name__)

DEFAULT_EVENTS_LIMIT = 50
MAX_EVENTS_LIMIT = 100
_RESYNC: dict[str, Any] = {"type": "resync"}


def _after() -> EventId | None:
    raw = request.args.get("after")
    if raw is None:
        return None
    try:
        return EventId.parse(raw)
    except MalformedEventId as exc:
        raise invalid("after", str(exc)) from None


LIST_EVENTS = Route(
    "GET",
    "/me/events",
    "listEvents",
    "realtime",
    "Your realtime events over HTTP, oldest first (catch-up)",
    {"200": json_answer(ref("Events"), "a page", {"events": [EVENT_EXAMPLE], "next_cursor": None})},
    description="The same messages as /ws, read from the recorded views and reactions of the last 7 "
    "days. `after`: the last id you have seen; when the log no longer holds it, the page starts with "
    '{"type": "resync"}: refetch what you show. `next_cursor` is set when more events follow at once.',
    parameters=[limit_param(DEFAULT_EVENTS_LIMIT, MAX_EVENTS_LIMIT), AFTER_PARAM],
    table_answer="`200` page of events (catch-up)",
)


@blueprint.declare(LIST_EVENTS)
async def my_events() -> Response:
    limit, after = limit_arg(DEFAULT_EVENTS_LIMIT, MAX_EVENTS_LIMIT), _after()
    app = deps()
    page = await app.events.replay(current_user_id(), after, limit, app.clock.now() - REPLAY_WINDOW, settle=True)
    events = [event.client_json() for event in page.events]
    if page.stale:
        events.insert(0, _RESYNC)
    next_cursor = str(page.events[-1].id) if page.more else None
    return json_response({"events": events, "next_cursor": next_cursor})
