"""The caller's own figures: GET /me/stats (API.md "Stats")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stories.api.declare import DeclaredBlueprint, Route
from stories.api.deps import current_user_id, deps
from stories.api.json_io import json_response
from stories.api.json_shapes import stats_json
from stories.api.openapi import json_answer, ref
from stories.domain import STATS_WINDOW

if TYPE_CHECKING:
    from quart import Response

__all__ = ["blueprint"]

blueprint = DeclaredBlueprint("stats", __name__)


GET_STATS = Route(
    "GET",
    "/me/stats",
    "getStats",
    "stats",
    "Your stories of the last 7 days",
    {
        "200": json_answer(
            ref("Stats"),
            "posted, views, unique viewers and reactions per emoji",
            {"posted": 4, "views": 31, "unique_viewers": 17, "reactions": {"🔥": 5, "❤️": 2}},
        )
    },
    table_answer="`200` stats",
)


@blueprint.declare(GET_STATS)
async def my_stats() -> Response:
    app = deps()
    stats = await app.store.stats(current_user_id(), app.clock.now() - STATS_WINDOW)
    return json_response(stats_json(stats))
