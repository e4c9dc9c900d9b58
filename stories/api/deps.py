"""What the HTTP layer is given (STYLE R4): one frozen bundle of collaborators, injected at creation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, cast

from quart import current_app, g

from stories.process_phase import Lifecycle

if TYPE_CHECKING:
    from uuid import UUID

    from stories.actors.access import AccessWatcher
    from stories.actors.counters import CounterFlusher
    from stories.actors.hub import Hub
    from stories.actors.ratelimit import BucketKeeper
    from stories.actors.relay import EventRelay
    from stories.api.authentication import Callers
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

__all__ = ["AppDeps", "current_session_id", "current_user_id", "deps"]


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


class _WithDeps(Protocol):
    """The running app (stories/api/app.py's StoriesApp), as far as this module needs it."""

    deps: AppDeps


def deps() -> AppDeps:
    """The running app's collaborators (inside a request or websocket context)."""
    return cast("_WithDeps", current_app).deps


def current_user_id() -> UUID:
    """The authenticated caller; set by the auth hook on every non-public route."""
    return cast("UUID", g.user_id)


def current_session_id() -> UUID:
    """The session of the authenticated caller's token; set by the auth hook with `current_user_id`."""
    return cast("UUID", g.session_id)
