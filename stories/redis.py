"""The optional Redis connection: one coredis client per process, wrapped so an outage degrades, never fails.

`open_redis(url)` yields a `RedisLink` (or None when Redis is not configured). Nothing connects at start:
coredis opens connections on first use, so a Redis that is down never blocks or fails the boot.

Every operation goes through `RedisLink.execute`, the one place that
- bounds each operation by `io_seconds` (a hung Redis costs a request at most that long),
- turns any client or network failure into `RedisUnavailable`, which callers catch to fall back,
- logs `redis.unavailable` once when an outage begins and `redis.recovered` once when it ends,
- after a failure, refuses at once for `retry_interval` seconds and then lets one call probe, so an outage
  costs requests no waiting and the server no reconnect storm.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Literal, TypeVar

import coredis
import structlog
import trio
from coredis.exceptions import ConnectionError as RedisConnectionError
from coredis.exceptions import RedisError
from coredis.retry import ConstantRetryPolicy

from stories.errors import StoriesError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

__all__ = [
    "DEFAULT_IO_SECONDS",
    "DEFAULT_KEY_PREFIX",
    "DEFAULT_RETRY_INTERVAL",
    "RedisLink",
    "RedisUnavailable",
    "open_redis",
]

log = structlog.get_logger()

T = TypeVar("T")

DEFAULT_KEY_PREFIX = "stories:"
# Redis answers in well under a millisecond on a LAN; half a second means it is down or hung.
DEFAULT_IO_SECONDS = 0.5
DEFAULT_RETRY_INTERVAL = 1.0
CLIENT_NAME = "stories"

HealthStatus = Literal["ok", "down"]


class RedisUnavailable(StoriesError):
    """Redis could not serve an operation (down, hung, refusing). Callers fall back; clients never see it."""


@dataclass(eq=False)
class RedisLink:
    """Owns the process's coredis client and the up/down state of Redis.

    Safe to share between tasks: the state changes happen synchronously between awaits.
    `client` is the raw coredis client for pub/sub and similar long-lived uses; wrap one-shot commands in
    `execute` so their failures are translated, bounded and logged.
    """

    client: coredis.Redis[bytes]
    _: KW_ONLY
    key_prefix: str = DEFAULT_KEY_PREFIX
    io_seconds: float = DEFAULT_IO_SECONDS
    retry_interval: float = DEFAULT_RETRY_INTERVAL
    outages: int = field(init=False, default=0)
    _down: bool = field(init=False, default=False)
    _down_since: float = field(init=False, default=0.0)
    _retry_at: float = field(init=False, default=0.0)
    _probing: bool = field(init=False, default=False)

    @property
    def up(self) -> bool:
        """False from a failed operation until the next successful one."""
        return not self._down

    def key(self, *parts: str) -> str:
        """A key in this deployment's namespace: `key("rl", "stories", uid)` -> `stories:rl:stories:<uid>`."""
        return self.key_prefix + ":".join(parts)

    async def execute(self, operation: Callable[[coredis.Redis[bytes]], Awaitable[T]]) -> T:
        """Run `operation(client)` and return its result, or raise `RedisUnavailable`.

        Blocks at most `io_seconds`, or less under a shorter deadline of the caller's. While Redis is known to
        be down it raises at once without I/O, except for one probe per `retry_interval`. Cancellation passes
        through and leaves the up/down state unchanged.
        """
        probe = self._admit()
        error: BaseException
        try:
            with trio.move_on_after(self.io_seconds):
                result = await operation(self.client)
                self._succeeded()
                return result
            error = TimeoutError(f"no answer within {self.io_seconds} s")
        except (RedisError, OSError) as exc:
            error = exc
        finally:
            if probe:
                self._probing = False
        self._failed(error)
        raise RedisUnavailable(f"redis unavailable: {error!r}") from error

    async def check(self) -> HealthStatus:
        """PING for /healthz: "ok" or "down", never raises. Always probes, even while marked down.

        Bound it with the caller's deadline; a cancelled check means "down" to the caller:
        `with trio.move_on_after(1): return await link.check()` then `return "down"`.
        """
        try:
            with trio.move_on_after(self.io_seconds) as deadline:
                await self.client.ping()
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return "down"
        if deadline.cancelled_caught:
            self._failed(TimeoutError(f"no answer within {self.io_seconds} s"))
            return "down"
        self._succeeded()
        return "ok"

    def _admit(self) -> bool:
        """Let the call through (returning whether it is the outage probe) or raise at once."""
        if not self._down:
            return False
        if self._probing or trio.current_time() < self._retry_at:
            raise RedisUnavailable("redis is down")
        self._probing = True
        return True

    def _failed(self, error: BaseException) -> None:
        now = trio.current_time()
        self._retry_at = now + self.retry_interval
        if not self._down:
            # One line per outage, not per request: at 3 a.m. the operator wants the transition.
            self._down = True
            self._down_since = now
            self.outages += 1
            log.warning("redis.unavailable", error=repr(error), retry_interval=self.retry_interval)

    def _succeeded(self) -> None:
        if self._down:
            self._down = False
            log.info("redis.recovered", down_seconds=round(trio.current_time() - self._down_since, 3))


@asynccontextmanager
async def open_redis(
    url: str | None,
    *,
    key_prefix: str = DEFAULT_KEY_PREFIX,
    io_seconds: float = DEFAULT_IO_SECONDS,
    retry_interval: float = DEFAULT_RETRY_INTERVAL,
) -> AsyncIterator[RedisLink | None]:
    """Yield a `RedisLink` for `url`, or None when Redis is not configured. Never connects up front.

    The client's connection tasks live in a task group entered here, so enter this in the root task, before
    the nursery of the tasks that use it (runtime.serve), and leave it after them.
    """
    if url is None:
        yield None
        return
    client = coredis.Redis.from_url(
        url,
        connect_timeout=io_seconds,
        client_name=CLIENT_NAME,
        # One immediate retry on a connection error covers a pooled connection that died with a Redis
        # restart; retrying timeouts would only multiply the wait during an outage.
        retry_policy=ConstantRetryPolicy((RedisConnectionError,), retries=1, delay=0),
    )
    async with client:
        yield RedisLink(client, key_prefix=key_prefix, io_seconds=io_seconds, retry_interval=retry_interval)
