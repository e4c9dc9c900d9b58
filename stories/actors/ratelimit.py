"""BucketKeeper: rate limits per (subject, action), shared through Redis, per process when Redis is away.

Most actions are token buckets: a bucket holds up to `capacity` tokens and refills `capacity` tokens per
`period` seconds (the action's own period, else the keeper's), continuously; each accepted request takes one,
and `refund` gives one back. An empty bucket answers with the whole seconds until the next token. The subject
is a user id, or a string (the login limit uses a digest of the normalized email).

Failed logins are a sliding window instead (an action listed in `windows`), because API.md counts them exactly:
after 10 failures within 15 minutes, refused until the window has room again. A window keeps the time of each
counted attempt; an attempt is accepted while fewer than `capacity` lie within the last `period` seconds, and a
refusal waits until the oldest leaves. The caller takes an entry before checking a password and refunds it
(the newest entry is removed) unless the password was wrong, so only failures count and concurrent attempts
cannot overshoot.

With Redis, one Lua script reads, updates and writes a bucket (a hash) or a window (a sorted set of times)
atomically, using the Redis server's clock (TIME), so every process sees the same state and the same time.
The key expires once it would be empty or full again, so idle users cost Redis nothing. Without Redis, or when
an operation fails, the call is decided in process on `trio.current_time()`; a request is never refused or
failed because Redis is down.
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn, TypeVar

import structlog
import trio
from coredis.commands import Script

from stories.redis import RedisUnavailable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from uuid import UUID

    import coredis
    from coredis.typing import ResponseType

    from stories.redis import RedisLink
    from stories.settings import Settings

__all__ = [
    "ACTION_EXPORT",
    "ACTION_LOGIN",
    "ACTION_REACTIONS",
    "ACTION_STORIES",
    "ACTION_UPLOADS",
    "LOGIN_FAILURES",
    "LOGIN_WINDOW_SECONDS",
    "BucketKeeper",
    "Decision",
]

log = structlog.get_logger()

ACTION_STORIES = "stories"
ACTION_REACTIONS = "reactions"
ACTION_LOGIN = "login"
ACTION_UPLOADS = "uploads"
ACTION_EXPORT = "export"

# API.md: after 10 failed attempts for one email within 15 minutes, logins for it answer 429.
LOGIN_FAILURES = 10
LOGIN_WINDOW_SECONDS = 900.0
# API.md: GET /me/export, 1 per 10 minutes per user (an export reads the whole account).
EXPORT_PERIOD_SECONDS = 600.0

DEFAULT_PERIOD = 60.0
DEFAULT_PRUNE_INTERVAL = 60.0
# About 100 bytes per bucket: the cap keeps a flood of distinct users under ~10 MB between prunes.
DEFAULT_MAX_BUCKETS = 100_000
# A float sum like 2.9999999 must not round a 3 s wait up to 4 s.
_EPSILON = 1e-9

K = TypeVar("K")
V = TypeVar("V")

# How both scripts start: the arguments they share (ARGV[1] capacity; ARGV[2] the period in ms, a bucket's
# refill time or a window's length; ARGV[3] 1 to take, -1 to give back) and `now`, the Redis server's time (one
# clock for every process) in whole ms, which keeps the arithmetic exact in Lua's doubles.
_PRELUDE = """
local capacity = tonumber(ARGV[1])
local period_ms = tonumber(ARGV[2])
local take = tonumber(ARGV[3]) or 1
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# KEYS[1] bucket hash; ARGV as in _PRELUDE (a token given back never fills the bucket above the capacity).
# Returns {allowed (0|1), retry_after seconds}. A server clock that steps back refills nothing until it catches up.
_TAKE_SCRIPT = (
    _PRELUDE
    + """
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local stamp = tonumber(state[2]) or now
if now > stamp then
  tokens = math.min(capacity, tokens + (now - stamp) * capacity / period_ms)
  stamp = now
end
local allowed = 0
local retry_after = 0
if take < 0 then
  tokens = math.min(capacity, tokens + 1)
  allowed = 1
elseif tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  retry_after = math.max(1, math.ceil((1 - tokens) * period_ms / capacity / 1000 - 1e-9))
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'ts', string.format('%d', stamp))
redis.call('PEXPIRE', KEYS[1], period_ms)
return {allowed, retry_after}
"""
)

# KEYS[1] window (a sorted set of attempt times in ms); ARGV as in _PRELUDE (-1 removes the newest attempt);
# ARGV[4] a unique member suffix (two attempts in one ms are two). Returns {allowed (0|1), retry_after seconds}.
_WINDOW_SCRIPT = (
    _PRELUDE
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period_ms)
if take < 0 then
  redis.call('ZPOPMAX', KEYS[1])
  return {1, 0}
end
if redis.call('ZCARD', KEYS[1]) >= capacity then
  local oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
  return {0, math.max(1, math.ceil((oldest + period_ms - now) / 1000 - 1e-9))}
end
redis.call('ZADD', KEYS[1], now, now .. ':' .. ARGV[4])
redis.call('PEXPIRE', KEYS[1], period_ms)
return {1, 0}
"""
)


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one request. `retry_after` is whole seconds (>= 1) when refused, else 0.
    `shared` says whether Redis decided (True) or this process's buckets did (False)."""

    allowed: bool
    retry_after: int = 0
    shared: bool = False


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


@dataclass(slots=True)
class BucketKeeper:
    """Owns the in-process token buckets (the fallback) and the Redis bucket script.
    Inbox: none; `acquire` runs in the caller's task. The in-process update has no await between read and
    write, so it is atomic under trio; the Redis path is one atomic script call.
    Backpressure: a Redis call waits at most the link's `io_seconds`, and none while Redis is known down.
    Memory: `run` drops buckets that have refilled (idle users) every `prune_interval`; beyond
    `max_buckets` the least recently used bucket is dropped, which at worst forgives one user's usage.
    Restart: safe; the buckets live on this object, so a restarted `run` keeps them.

    `limits` maps an action to its capacity per period; `periods` gives an action its own period in seconds,
    else `period` applies; the actions in `windows` are sliding windows, the others token buckets.
    """

    limits: Mapping[str, int]
    redis: RedisLink | None = None
    period: float = DEFAULT_PERIOD
    periods: Mapping[str, float] = field(default_factory=dict)
    prune_interval: float = DEFAULT_PRUNE_INTERVAL
    max_buckets: int = DEFAULT_MAX_BUCKETS
    windows: frozenset[str] = frozenset()
    fallbacks: int = field(default=0, init=False)
    _buckets: dict[tuple[UUID | str, str], _Bucket] = field(default_factory=dict, init=False, repr=False)
    # Attempt times, oldest first, of the in-process sliding windows; same LRU order and cap as the buckets.
    _windows: dict[tuple[UUID | str, str], deque[float]] = field(default_factory=dict, init=False, repr=False)
    _script: Script[bytes] = field(default_factory=lambda: Script(script=_TAKE_SCRIPT), init=False, repr=False)
    _window_script: Script[bytes] = field(default_factory=lambda: Script(script=_WINDOW_SCRIPT), init=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, redis: RedisLink | None) -> BucketKeeper:
        return cls(
            limits={
                ACTION_STORIES: settings.rate_limit_stories_per_minute,
                ACTION_REACTIONS: settings.rate_limit_reactions_per_minute,
                ACTION_UPLOADS: settings.rate_limit_uploads_per_minute,
                ACTION_LOGIN: LOGIN_FAILURES,
                ACTION_EXPORT: 1,
            },
            periods={ACTION_LOGIN: LOGIN_WINDOW_SECONDS, ACTION_EXPORT: EXPORT_PERIOD_SECONDS},
            windows=frozenset({ACTION_LOGIN}),
            redis=redis,
        )

    def __post_init__(self) -> None:
        for action, capacity in self.limits.items():
            if capacity < 1:
                raise ValueError(f"rate limit for {action!r} must be at least 1 (got {capacity})")
        for action, period in self.periods.items():
            if period <= 0:
                raise ValueError(f"period for {action!r} must be positive (got {period})")

    def period_of(self, action: str) -> float:
        """Seconds in which `action`'s bucket refills completely."""
        return self.periods.get(action, self.period)

    def __len__(self) -> int:
        """How many in-process buckets and windows are held."""
        return len(self._buckets) + len(self._windows)

    async def acquire(self, subject: UUID | str, action: str) -> Decision:
        """Take one token from `subject`'s `action` bucket. Never raises for Redis trouble.

        Raises KeyError for an action without a configured limit (a programming error).
        """
        return await self._update(subject, action, take=True)

    async def refund(self, subject: UUID | str, action: str) -> None:
        """Give back a token taken by `acquire` whose request turned out not to count (never above the
        capacity; for a window, its newest attempt is removed). Never raises for Redis trouble; a refund
        decided locally while Redis is down is lost to the shared state, which errs on the side of the limit."""
        await self._update(subject, action, take=False)

    async def _update(self, subject: UUID | str, action: str, *, take: bool) -> Decision:
        capacity = self.limits[action]
        if self.redis is not None:
            try:
                return await self._update_shared(self.redis, subject, action, capacity, take=take)
            except RedisUnavailable:
                # RedisLink logs the outage once; counting here lets metrics show how much is decided locally.
                self.fallbacks += 1
        if action in self.windows:
            return self._update_local_window(subject, action, capacity, take=take)
        return self._update_local(subject, action, capacity, take=take)

    def prune(self) -> int:
        """Drop in-process buckets that are full again and windows that are empty (their users went idle).
        Returns how many."""
        now = trio.current_time()
        empty = [key for key, times in self._windows.items() if not times or times[-1] <= now - self.period_of(key[1])]
        for key in empty:
            del self._windows[key]
        full = [
            key
            for key, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.stamp) * self.limits[key[1]] / self.period_of(key[1])
            >= self.limits[key[1]]
        ]
        for key in full:
            del self._buckets[key]
        return len(full) + len(empty)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        task_status.started()
        while True:
            await trio.sleep(self.prune_interval)
            dropped = self.prune()
            log.debug("ratelimit.pruned", dropped=dropped, kept=len(self))

    async def _update_shared(
        self, redis: RedisLink, subject: UUID | str, action: str, capacity: int, *, take: bool
    ) -> Decision:
        key = redis.key("rl", action, str(subject))
        period_ms = round(self.period_of(action) * 1000)
        if action in self.windows:
            script, args = self._window_script, [capacity, period_ms, 1 if take else -1, uuid.uuid4().hex]
        else:
            script, args = self._script, [capacity, period_ms, 1 if take else -1]

        def run(client: coredis.Redis[bytes]) -> Awaitable[ResponseType]:
            return script(keys=[key], args=args, client=client)

        reply = await redis.execute(run)
        if not (isinstance(reply, list) and len(reply) == 2 and all(isinstance(v, int) for v in reply)):
            raise RedisUnavailable(f"unexpected reply from the bucket script: {reply!r}")
        allowed, retry_after = reply
        return Decision(allowed=allowed == 1, retry_after=retry_after, shared=True)

    def _update_local(self, subject: UUID | str, action: str, capacity: int, *, take: bool) -> Decision:
        now = trio.current_time()
        period = self.period_of(action)
        bucket = _recent(
            self._buckets, (subject, action), self.max_buckets, take, lambda: _Bucket(float(capacity), now)
        )
        if bucket is None:
            return Decision(allowed=True)  # no bucket is a full bucket: nothing to give back
        if now > bucket.stamp:
            bucket.tokens = min(float(capacity), bucket.tokens + (now - bucket.stamp) * capacity / period)
            bucket.stamp = now
        if not take:
            bucket.tokens = min(float(capacity), bucket.tokens + 1)
            return Decision(allowed=True)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return Decision(allowed=True)
        wait = (1 - bucket.tokens) * period / capacity
        return Decision(allowed=False, retry_after=max(1, math.ceil(wait - _EPSILON)))

    def _update_local_window(self, subject: UUID | str, action: str, capacity: int, *, take: bool) -> Decision:
        now = trio.current_time()
        period = self.period_of(action)
        times = _recent(self._windows, (subject, action), self.max_buckets, take, deque)
        if times is None:
            return Decision(allowed=True)
        while times and times[0] <= now - period:
            times.popleft()
        if not take:
            if times:
                times.pop()
            return Decision(allowed=True)
        if len(times) < capacity:
            times.append(now)
            return Decision(allowed=True)
        return Decision(allowed=False, retry_after=max(1, math.ceil(times[0] + period - now - _EPSILON)))


def _recent(entries: dict[K, V], key: K, max_entries: int, take: bool, new: Callable[[], V]) -> V | None:
    """`entries[key]`, now the most recently used: pop + reinsert keeps the dict in least-recently-used order, so
    eviction is O(1) from the front. A missing one is made by `new` when `take` (evicting the least recently used
    at `max_entries`); None when missing and not `take`: an unused subject has nothing to give back."""
    entry = entries.pop(key, None)
    if entry is None:
        if not take:
            return None
        entry = new()
        if len(entries) >= max_entries:
            del entries[next(iter(entries))]
    entries[key] = entry
    return entry
