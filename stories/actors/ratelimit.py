"""BucketKeeper: token buckets per (user, action), shared through Redis, per process when Redis is away.

A bucket holds up to `capacity` tokens and refills `capacity` tokens per `period` seconds, continuously;
each accepted request takes one. An empty bucket answers with the whole seconds until the next token.

With Redis, one Lua script reads, refills, takes and writes the bucket atomically, using the Redis server's
clock (TIME), so every process sees the same bucket and the same time. The hash expires once it would be
full again, so idle users cost Redis nothing. Without Redis, or when an operation fails, the call is decided
by in-process buckets on `trio.current_time()`; a request is never refused or failed because Redis is down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn

import structlog
import trio
from coredis.commands import Script

from stories.redis import RedisUnavailable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping
    from uuid import UUID

    import coredis
    from coredis.typing import ResponseType

    from stories.redis import RedisLink
    from stories.settings import Settings

__all__ = ["ACTION_REACTIONS", "ACTION_STORIES", "BucketKeeper", "Decision"]

log = structlog.get_logger()

ACTION_STORIES = "stories"
ACTION_REACTIONS = "reactions"

DEFAULT_PERIOD = 60.0
DEFAULT_PRUNE_INTERVAL = 60.0
# About 100 bytes per bucket: the cap keeps a flood of distinct users under ~10 MB between prunes.
DEFAULT_MAX_BUCKETS = 100_000
# A float sum like 2.9999999 must not round a 3 s wait up to 4 s.
_EPSILON = 1e-9

# KEYS[1] bucket hash; ARGV[1] capacity; ARGV[2] period in ms. Returns {allowed (0|1), retry_after seconds}.
# Time in whole ms from the server keeps the arithmetic exact in Lua's doubles. A server clock that steps
# back refills nothing until it catches up.
_TAKE_SCRIPT = """
local capacity = tonumber(ARGV[1])
local period_ms = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local stamp = tonumber(state[2]) or now
if now > stamp then
  tokens = math.min(capacity, tokens + (now - stamp) * capacity / period_ms)
  stamp = now
end
local allowed = 0
local retry_after = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  retry_after = math.max(1, math.ceil((1 - tokens) * period_ms / capacity / 1000 - 1e-9))
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'ts', string.format('%d', stamp))
redis.call('PEXPIRE', KEYS[1], period_ms)
return {allowed, retry_after}
"""


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

    `limits` maps an action to its capacity per `period` seconds.
    """

    limits: Mapping[str, int]
    redis: RedisLink | None = None
    period: float = DEFAULT_PERIOD
    prune_interval: float = DEFAULT_PRUNE_INTERVAL
    max_buckets: int = DEFAULT_MAX_BUCKETS
    fallbacks: int = field(default=0, init=False)
    _buckets: dict[tuple[UUID, str], _Bucket] = field(default_factory=dict, init=False, repr=False)
    _script: Script[bytes] = field(default_factory=lambda: Script(script=_TAKE_SCRIPT), init=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, redis: RedisLink | None) -> BucketKeeper:
        return cls(
            limits={
                ACTION_STORIES: settings.rate_limit_stories_per_minute,
                ACTION_REACTIONS: settings.rate_limit_reactions_per_minute,
            },
            redis=redis,
        )

    def __post_init__(self) -> None:
        for action, capacity in self.limits.items():
            if capacity < 1:
                raise ValueError(f"rate limit for {action!r} must be at least 1 (got {capacity})")

    def __len__(self) -> int:
        """How many in-process buckets are held."""
        return len(self._buckets)

    async def acquire(self, user_id: UUID, action: str) -> Decision:
        """Take one token from `user_id`'s `action` bucket. Never raises for Redis trouble.

        Raises KeyError for an action without a configured limit (a programming error).
        """
        capacity = self.limits[action]
        if self.redis is not None:
            try:
                return await self._acquire_shared(self.redis, user_id, action, capacity)
            except RedisUnavailable:
                # RedisLink logs the outage once; counting here lets metrics show how much is decided locally.
                self.fallbacks += 1
        return self._acquire_local(user_id, action, capacity)

    def prune(self) -> int:
        """Drop in-process buckets that are full again (their users went idle). Returns how many."""
        now = trio.current_time()
        full = [
            key
            for key, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.stamp) * self.limits[key[1]] / self.period >= self.limits[key[1]]
        ]
        for key in full:
            del self._buckets[key]
        return len(full)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        task_status.started()
        while True:
            await trio.sleep(self.prune_interval)
            dropped = self.prune()
            log.debug("ratelimit.pruned", dropped=dropped, kept=len(self._buckets))

    async def _acquire_shared(self, redis: RedisLink, user_id: UUID, action: str, capacity: int) -> Decision:
        key = redis.key("rl", action, str(user_id))
        period_ms = round(self.period * 1000)

        def take(client: coredis.Redis[bytes]) -> Awaitable[ResponseType]:
            return self._script(keys=[key], args=[capacity, period_ms], client=client)

        reply = await redis.execute(take)
        if not (isinstance(reply, list) and len(reply) == 2 and all(isinstance(v, int) for v in reply)):
            raise RedisUnavailable(f"unexpected reply from the bucket script: {reply!r}")
        allowed, retry_after = reply
        return Decision(allowed=allowed == 1, retry_after=retry_after, shared=True)

    def _acquire_local(self, user_id: UUID, action: str, capacity: int) -> Decision:
        now = trio.current_time()
        key = (user_id, action)
        # pop + reinsert keeps the dict in least-recently-used order, so eviction is O(1) from the front.
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(tokens=float(capacity), stamp=now)
            if len(self._buckets) >= self.max_buckets:
                del self._buckets[next(iter(self._buckets))]
        elif now > bucket.stamp:
            bucket.tokens = min(float(capacity), bucket.tokens + (now - bucket.stamp) * capacity / self.period)
            bucket.stamp = now
        self._buckets[key] = bucket
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return Decision(allowed=True)
        wait = (1 - bucket.tokens) * self.period / capacity
        return Decision(allowed=False, retry_after=max(1, math.ceil(wait - _EPSILON)))
