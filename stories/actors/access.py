"""AccessWatcher: keeps this process's idea of who may call right, within `poll_seconds`, without a query per request.

Each process remembers revoked sessions and users' states (api/authentication.py). What changes them is written to
the database, and a trigger records every such change in `access_changes` (schema/0012_sessions.sql): a session
revoked or deleted, a user suspended or unsuspended (a deleted user's sessions are deleted with them). The watcher
reads that log after its horizon, as the relay reads the event log:

    writer --commit--> PostgreSQL (trigger: access_changes row, NOTIFY stories_access)
           --account_changed()/session_revoked()--> this process at once; a hint to the others (Redis or NOTIFY)
    hint or every poll_seconds --> read access_changes after the horizon --> Callers: revoke / forget; Hub: close

So a lost hint, or a writer that never announces its change, costs at most `poll_seconds` (plus one read): the
trigger fills the log whatever code wrote the change, and on the PostgreSQL transport its NOTIFY is the push too.
Open sockets of a revoked session, or of a user now suspended or gone, are closed with 1008.
"""

from __future__ import annotations

import uuid
from dataclasses import KW_ONLY, dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, NoReturn, Protocol

import structlog
import trio

from stories.actors.hub import CloseReason
from stories.actors.relay import (
    Feed,
    Overflow,
    PostgresTransport,
    RedisTransport,
    RelayDisconnected,
    postgres_connector,
)
from stories.errors import Unavailable
from stories.settings import DEFAULT_REFRESH_TOKEN_DAYS
from stories.store.sessions import AccessLog

if TYPE_CHECKING:
    from collections.abc import Iterable
    from uuid import UUID

    from stories.actors.hub import Hub
    from stories.actors.relay import RelaySession, RelayTransport
    from stories.clock import Clock
    from stories.redis import RedisLink
    from stories.settings import Settings
    from stories.store.database import Database

__all__ = ["ACCESS_CHANNEL", "DEFAULT_POLL_SECONDS", "AccessWatcher", "Callers", "build_access_watcher"]

log = structlog.get_logger()


class Callers(Protocol):
    """What the watcher writes into: the process's memory of callers (stories/api/authentication.py's `Callers`)."""

    def revoke(self, session_id: UUID, tokens_expire_at: float) -> None: ...
    def drop_expired_revocations(self, now: float) -> None: ...
    def forget(self, user_id: UUID) -> None: ...
    def forget_all(self) -> None: ...
    async def states(self, user_ids: Iterable[UUID]) -> dict[UUID, bool]: ...


# The trigger in schema/0012_sessions.sql NOTIFYs this channel; with Redis, hints go to its Redis twin.
ACCESS_CHANNEL = "stories_access"
# API.md: a revocation or suspension holds on every process within 1 s. The log is read at least this often, so
# a change nobody announced (or whose hint was lost) is seen within this plus one read.
DEFAULT_POLL_SECONDS = 0.5
# A hint that cannot be sent within this means the broker connection is unusable: the subscription restarts.
IO_SECONDS = 5.0
# access_changes rows are kept an hour (schema): a process that could not read it for this long reloads instead.
RELOAD_AFTER_SECONDS = 1800.0
# How often old rows of the log, sessions that cannot be used again and revocations whose tokens have all expired
# are dropped; at most PRUNE_BATCH sessions at a time.
PRUNE_EVERY_SECONDS = 60.0
PRUNE_BATCH = 500


@dataclass(eq=False)
class AccessWatcher:
    """Owns the change log's horizon; writes what it reads into `Callers` and closes sockets through the `Hub`.

    Inbox: `account_changed()` and `session_revoked()` (synchronous; a set and two flags, never full).
    Backpressure: wake-ups coalesce. Restart: `run` reads on from its horizon (a stale one reloads everything);
    `listen` resubscribes, and reads at once since hints may have been missed meanwhile.
    """

    log: AccessLog
    callers: Callers
    hub: Hub
    transport: RelayTransport
    clock: Clock
    _: KW_ONLY
    token_ttl_seconds: float
    refresh_token_days: int = DEFAULT_REFRESH_TOKEN_DAYS
    poll_seconds: float = DEFAULT_POLL_SECONDS
    origin: str = field(init=False, default_factory=lambda: uuid.uuid4().hex)
    horizon: int | None = field(init=False, default=None)
    _synced_at: float = field(init=False, default=0.0)
    _pruned_at: float = field(init=False, default=0.0)
    # Rows read at or above the horizon, which the next read returns again: applied once.
    _seen: set[tuple[int, UUID | None, UUID | None]] = field(init=False, default_factory=set)
    _changed_users: set[UUID] = field(init=False, default_factory=set)
    _read_wanted: trio.Event = field(init=False, default_factory=trio.Event)
    _hint_wanted: trio.Event = field(init=False, default_factory=trio.Event)
    _read_done: trio.Event = field(init=False, default_factory=trio.Event)

    # --- the inbox: what other code calls after its commit ----------------------------------------------

    def account_changed(self, user_id: UUID) -> None:
        """Call after committing a change to a user's account state (suspended, unsuspended, deleted).

        Synchronous; never blocks or raises. This process forgets what it knew of the user at once (their next
        request looks them up again) and closes their sockets if they are no longer allowed in; every other process
        is told through the broker, and would read the change from the log within `poll_seconds` anyway.
        """
        self.callers.forget(user_id)
        self._changed_users.add(user_id)
        self._wake()

    def session_revoked(self, session_id: UUID) -> None:
        """Call after committing a session's revocation: refused here at once, its sockets closed; the other
        processes are told (and would read it from the log within `poll_seconds` anyway)."""
        self._apply_revocation(session_id)
        self._wake()

    def _wake(self) -> None:
        self._read_wanted.set()
        self._hint_wanted.set()

    # --- reading the log ----------------------------------------------------------------------------------

    async def load(self) -> None:
        """Start from now: every session revoked within a token's lifetime, and the log's horizon (one snapshot).
        Called before the process serves; `run` calls it too when it has none or it is too old."""
        now = self.clock.now().timestamp()
        horizon, revoked = await self.log.start(self.clock.now() - timedelta(seconds=self.token_ttl_seconds))
        for session_id in revoked:
            self.callers.revoke(session_id, now + self.token_ttl_seconds)
        self.horizon = horizon
        self._seen.clear()
        self._synced_at = trio.current_time()
        log.info("access.loaded", revoked_sessions=len(revoked), poll_seconds=self.poll_seconds)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        if self.horizon is None:
            await self.load()
        task_status.started()
        while True:
            with trio.move_on_after(self.poll_seconds):
                await self._read_wanted.wait()
            self._read_wanted = trio.Event()
            try:
                await self.sync()
            except Unavailable as exc:
                # The next poll tries again; a crash would put the supervisor's backoff (up to 30 s) in the way.
                log.warning("access.read_failed", error=exc.message)

    async def wait_read(self) -> None:
        """Until the log has been read once more, from now (tests)."""
        await self._read_done.wait()

    async def sync(self) -> None:
        """Read the log once and apply what it says."""
        if self.horizon is None or trio.current_time() - self._synced_at > RELOAD_AFTER_SECONDS:
            await self.load()
            self.callers.forget_all()
            self._changed_users.update(self.hub.users())
        assert self.horizon is not None
        changes = await self.log.read(self.horizon)
        users, self._changed_users = self._changed_users, set()
        fresh = [row for row in changes.rows if row not in self._seen]
        for _xid, session_id, user_id in fresh:
            if session_id is not None:
                self._apply_revocation(session_id)
            if user_id is not None:
                self.callers.forget(user_id)
                users.add(user_id)
        self._seen = {row for row in self._seen | set(fresh) if row[0] >= changes.horizon}
        self.horizon = changes.horizon
        self._synced_at = trio.current_time()
        try:
            await self._close_refused_sockets(users)
        except Unavailable:
            self._changed_users |= users  # their sockets are checked again at the next read
            raise
        done, self._read_done = self._read_done, trio.Event()
        done.set()
        if trio.current_time() - self._pruned_at >= PRUNE_EVERY_SECONDS:
            self._pruned_at = trio.current_time()
            await self.prune()

    async def prune(self) -> int:
        """Forget revocations whose tokens have all expired; drop old change-log rows and sessions that can never
        be used again (a batch; every process does it, so a busy log still drains). Returns the sessions dropped."""
        now = self.clock.now()
        self.callers.drop_expired_revocations(now.timestamp())
        # A session's last token may be minted at its last refresh: it expires a token lifetime later.
        ended_before = now - timedelta(seconds=self.token_ttl_seconds)
        return await self.log.prune(ended_before, now - timedelta(days=self.refresh_token_days), PRUNE_BATCH)

    def _apply_revocation(self, session_id: UUID) -> None:
        self.callers.revoke(session_id, self.clock.now().timestamp() + self.token_ttl_seconds)
        closed = self.hub.close_session(session_id, CloseReason.SESSION_REVOKED)
        if closed:
            log.info("ws.session_revoked", session_id=str(session_id), sockets=closed)

    async def _close_refused_sockets(self, users: set[UUID]) -> None:
        """Sockets of users whose account changed: closed if the user is now suspended or gone."""
        holding = [user_id for user_id in users if self.hub.has_sockets(user_id)]
        if not holding:
            return
        states = await self.callers.states(holding)
        for user_id in holding:
            suspended = states.get(user_id)
            if suspended is None:
                closed = self.hub.close_user(user_id, CloseReason.ACCOUNT_GONE)
            elif suspended:
                closed = self.hub.close_user(user_id, CloseReason.ACCOUNT_SUSPENDED)
            else:
                continue
            log.info("ws.account_refused", user_id=str(user_id), suspended=suspended, sockets=closed)

    # --- the push: hints through the broker ---------------------------------------------------------------

    async def listen(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Hear the other processes' hints (and, on PostgreSQL, the trigger's NOTIFY); send ours."""
        task_status.started()
        feed = Feed()
        async with self.transport.open(feed) as session, trio.open_nursery() as nursery:
            nursery.start_soon(self._hint_loop, session)
            # Hints sent while this process was not subscribed are lost: read the log at once.
            self._read_wanted.set()
            log.info("access.listening", transport=self.transport.name)
            async for item in feed.receive:
                if isinstance(item, Overflow) or item != self.origin:
                    self._read_wanted.set()
            raise RelayDisconnected(f"the {self.transport.name} access subscription ended")

    async def _hint_loop(self, session: RelaySession) -> NoReturn:
        while True:
            await self._hint_wanted.wait()
            self._hint_wanted = trio.Event()
            with trio.move_on_after(IO_SECONDS) as sending:
                await session.publish(self.origin)
            if sending.cancelled_caught:
                raise RelayDisconnected(f"an access hint could not be sent through {self.transport.name}")


def build_access_watcher(
    callers: Callers, hub: Hub, clock: Clock, *, database: Database, redis: RedisLink | None, settings: Settings
) -> AccessWatcher:
    """Hints through Redis pub/sub when Redis is configured (as the relay's), else LISTEN/NOTIFY."""
    transport: RelayTransport
    if redis is not None:
        transport = RedisTransport(redis, redis.key(ACCESS_CHANNEL))
    else:
        transport = PostgresTransport(postgres_connector(database.direct_dsn), ACCESS_CHANNEL, database.bridge)
    return AccessWatcher(
        AccessLog(database),
        callers,
        hub,
        transport,
        clock,
        token_ttl_seconds=settings.jwt_ttl_seconds,
        refresh_token_days=settings.refresh_token_days,
    )
