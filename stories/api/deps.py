"""What the HTTP layer is given (STYLE R4): one frozen bundle of collaborators, injected at creation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from quart import current_app, g
from quart_trio import QuartTrio

if TYPE_CHECKING:
    from uuid import UUID

    from stories.actors.counters import CounterFlusher
    from stories.actors.hub import Hub
    from stories.actors.ratelimit import BucketKeeper
    from stories.actors.relay import EventRelay
    from stories.api.callers import Callers
    from stories.clock import Clock
    from stories.metrics import Metrics
    from stories.redis import RedisLink
    from stories.security import PasswordHasher, TokenIssuer
    from stories.settings import Settings
    from stories.store import Store

__all__ = ["AppDeps", "StoriesApp", "current_user_id", "deps"]


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


class StoriesApp(QuartTrio):
    deps: AppDeps


def deps() -> AppDeps:
    """The running app's collaborators (inside a request or websocket context)."""
    return cast("StoriesApp", current_app).deps


def current_user_id() -> UUID:
    """The authenticated caller; set by the auth hook on every non-public route."""
    return cast("UUID", g.user_id)
