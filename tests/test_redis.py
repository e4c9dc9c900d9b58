"""RedisLink against real Redis servers: lazy start, health check, error translation, outage transitions."""

from __future__ import annotations

from functools import partial

import pytest
import trio

from stories.redis import RedisLink, RedisUnavailable, open_redis
from tests.fixtures.redis import RedisProcess, capture_all_logs


async def silent(stream: trio.SocketStream) -> None:
    async with stream:
        await trio.sleep_forever()


async def ping(link: RedisLink) -> object:
    return await link.execute(lambda client: client.ping())


async def test_not_configured_yields_none():
    async with open_redis(None) as link:
        assert link is None


async def test_check_ok(redis_link: RedisLink):
    assert await redis_link.check() == "ok"
    assert redis_link.up


async def test_keys_are_namespaced(redis_link: RedisLink, redis_prefix: str):
    assert redis_link.key("rl", "stories", "u1") == f"{redis_prefix}rl:stories:u1"


async def test_start_does_not_wait_for_a_down_redis(closed_redis_url: str):
    with trio.fail_after(2):
        async with open_redis(closed_redis_url) as link:
            assert link is not None
            assert link.up  # nothing tried yet: start-up made no connection
            assert await link.check() == "down"
            assert not link.up


async def test_failures_raise_one_domain_error_and_log_once_per_outage(closed_redis_url: str):
    async with open_redis(closed_redis_url, retry_interval=0.0) as link:
        assert link is not None
        with capture_all_logs() as logs:
            for _ in range(3):
                with pytest.raises(RedisUnavailable):
                    await ping(link)
        assert [entry["event"] for entry in logs] == ["redis.unavailable"]
        assert link.outages == 1


async def test_while_down_calls_fail_at_once_until_the_retry_interval(closed_redis_url: str):
    async with open_redis(closed_redis_url, retry_interval=3600.0) as link:
        assert link is not None
        with pytest.raises(RedisUnavailable):
            await ping(link)
        # No I/O while the breaker is open: a checkpoint-free refusal even under an expired deadline.
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(RedisUnavailable, match="redis is down"):
                await ping(link)


async def test_outage_and_recovery_mid_flight(redis_process: RedisProcess):
    async with open_redis(redis_process.url, retry_interval=0.0) as link:
        assert link is not None
        assert await ping(link) == b"PONG"
        with capture_all_logs() as logs:
            redis_process.stop()
            for _ in range(2):
                with pytest.raises(RedisUnavailable):
                    await ping(link)
            assert await link.check() == "down"
            redis_process.start()
            assert await ping(link) == b"PONG"
            assert await link.check() == "ok"
        assert [entry["event"] for entry in logs] == ["redis.unavailable", "redis.recovered"]
        assert link.up


async def test_a_hung_redis_costs_at_most_io_seconds(autojump_clock):
    # A server that accepts connections and never answers: what a stopped or overloaded Redis looks like. It runs
    # in this trio run, over loopback, so virtual time: the clock moves only when everything waits on the server.
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        async with open_redis(f"redis://127.0.0.1:{port}/0", io_seconds=0.2) as link:
            assert link is not None
            began = trio.current_time()
            with pytest.raises(RedisUnavailable, match="no answer"):
                await ping(link)
            assert await link.check() == "down"
            # The call, then the health check: each gives up after io_seconds (the margin is float rounding).
            assert trio.current_time() - began < 0.2 + 0.2 + 1e-6
        nursery.cancel_scope.cancel("test done")


async def test_cancellation_passes_through_and_keeps_state(redis_link: RedisLink):
    with trio.move_on_after(0) as scope:
        await ping(redis_link)
    assert scope.cancelled_caught
    assert redis_link.up
