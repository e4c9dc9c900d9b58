"""The API's application class: Quart for the HTTP routes, with `GET /ws` upgrades routed around it and every
request under the deadline (stories/api/deadline.py)."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from stories.api import ws
from stories.api.deadline import within_deadline
from stories.api.probe_deps import ProbedApp

if TYPE_CHECKING:
    from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope
    from quart import Response
    from quart.ctx import RequestContext
    from werkzeug.wrappers import Response as WerkzeugResponse

    from stories.api.deps import AppDeps

__all__ = ["StoriesApp"]


class StoriesApp(ProbedApp):
    deps: AppDeps

    async def asgi_app(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        """`GET /ws` goes to its plain ASGI endpoint (stories/api/ws.py says why); everything else to Quart."""
        if scope["type"] == "websocket" and scope["path"] == ws.PATH:
            await ws.serve_socket(self.deps, scope, receive, send)
            return
        await super().asgi_app(scope, receive, send)

    async def full_dispatch_request(self, request_context: RequestContext | None = None) -> Response | WerkzeugResponse:
        dispatch = partial(super().full_dispatch_request, request_context)
        return await within_deadline(self, self.deps.settings.request_timeout_seconds, dispatch, request_context)
