"""The request deadline: every HTTP request, hooks included, within REQUEST_TIMEOUT_SECONDS; past it a
`503 overloaded` with Retry-After (API.md, Conventions).

A write cut off here may still commit (its transaction can finish after the cancel): clients retry with the same
Idempotency-Key, which makes the retry safe.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
import trio

from stories.errors import Overloaded

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from quart import Quart, Response
    from quart.ctx import RequestContext
    from werkzeug.wrappers import Response as WerkzeugResponse

__all__ = ["within_deadline"]

log = structlog.get_logger()


async def within_deadline(
    app: Quart,
    seconds: float,
    dispatch: Callable[[], Awaitable[Response | WerkzeugResponse]],
    request_context: RequestContext | None,
) -> Response | WerkzeugResponse:
    """`dispatch()`'s answer, or the app's `503 overloaded` answer once `seconds` have passed."""
    with trio.move_on_after(seconds):
        return await dispatch()
    log.warning("http.request_timeout", seconds=seconds)
    overloaded = Overloaded(f"the request took longer than {seconds:g} s; retry shortly", retry_after=1)
    return await app.finalize_request(await app.handle_user_exception(overloaded), request_context)
