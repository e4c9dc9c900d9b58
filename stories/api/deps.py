"""What the HTTP layer is given (STYLE R4): one frozen bundle of collaborators, injected at creation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import structlog
import trio
from quart import current_app, g

from stories.api import ws
from stories.api.probes import ProbedApp
from stories.errors import Overloaded
from stories.process_phase import Lifecycle

if TYPE_CHECKING:
    from uuid import UUID

    from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope
    from quart import Response
    from quart.ctx import RequestContext
    from werkzeug.wrappers import Response as WerkzeugResponse

    from stories.actors.access import AccessWatcher
    from stories.actors.counters import CounterFlusher
    from stories.actors.hub import Hub
    from stories.actors.ratelimit import BucketKeeper
    from stories.actors.relay import EventRelay
    from stories.api.callers import Callers
    from stories.clock import Clock
    from stories.feed_cache import FeedCache
    from stories.media.link import StorageLink
    from stories.metrics import Metrics
    from stories.redis import RedisLink
    from stories.security import PasswordHasher, TokenIssuer
    from stories.settings import Settings
    from stories.store import Store
    from stories.store.events import EventLog
    from stories.tray_cache import TrayCache

__all__ = ["AppDeps", "StoriesApp", "current_session_id", "current_user_id", "deps"]

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class AppDeps:
    settings: Settings
    store: Store
    metrics: Metrics
    clock: Clock
    tokens: TokenIssuer
    passwords: PasswordHasher
    limiter: BucketKeeper
    redis: RedisLink | None
    hub: Hub
    relay: EventRelay
    callers: Callers
    counters: CounterFlusher
    feeds: FeedCache
    trays: TrayCache
    events: EventLog
    # Who may call: `access.account_changed(user_id)` after committing a change to an account's state.
    access: AccessWatcher
    # None: object storage is off (MINIO_ENDPOINT=off, or nothing installed to embed).
    media: StorageLink | None = None
    # The composition root passes its own; /readyz answers 503 until `started` (tests set it when they need it).
    life: Lifecycle = field(default_factory=Lifecycle)


class StoriesApp(ProbedApp):
    deps: AppDeps

    async def asgi_app(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        """`GET /ws` goes to its plain ASGI endpoint (stories/api/ws.py says why); everything else to Quart."""
        if scope["type"] == "websocket" and scope["path"] == ws.PATH:
            await ws.serve_socket(self.deps, scope, receive, send)
            return
        await super().asgi_app(scope, receive, send)

    async def full_dispatch_request(self, request_context: RequestContext | None = None) -> Response | WerkzeugResponse:
        """Every request, hooks included, within REQUEST_TIMEOUT_SECONDS; past it a `503 overloaded`.

        A write cut off here may still commit (its transaction can finish after the cancel): clients retry with
        the same Idempotency-Key, which makes the retry safe.
        """
        timeout = self.deps.settings.request_timeout_seconds
        with trio.move_on_after(timeout):
            return await super().full_dispatch_request(request_context)
        log.warning("http.request_timeout", seconds=timeout)
        overloaded = Overloaded(f"the request took longer than {timeout:g} s; retry shortly", retry_after=1)
        return await self.finalize_request(await self.handle_user_exception(overloaded), request_context)


def deps() -> AppDeps:
    """The running app's collaborators (inside a request or websocket context)."""
    return cast("StoriesApp", current_app).deps


def current_user_id() -> UUID:
    """The authenticated caller; set by the auth hook on every non-public route."""
    return cast("UUID", g.user_id)


def current_session_id() -> UUID:
    """The session of the authenticated caller's token; set by the auth hook with `current_user_id`."""
    return cast("UUID", g.session_id)
