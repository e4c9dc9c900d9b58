"""The relay's CPU per event when every process reads every event: P `stories serve` on one database and Redis.

    python -m bench.relay_cpu                        # 4 processes, 2,000 events/s for 10 s, 3 runs
    python -m bench.relay_cpu --processes 4 --rate 2000 --seconds 10 --runs 3 --authors 400

Each process holds a WebSocket for a quarter of the authors, so each event is delivered by one process and read
and skipped by the others, as in production. Events are written straight into `reactions` (one transaction per
event, from several connections), each followed by a wake-up hint on the relays' Redis channel, as a request
handler does; no HTTP request reaches the servers while they are measured, so a process's CPU is its relay, its
sockets and its idle work. The idle work is measured first, for as long, and subtracted:

    relay CPU per event = (CPU during the load - CPU idle) / events written
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass

import asyncpg
import coredis
import httpx
import orjson
import trio
from trio_websocket import open_websocket_url

from bench.realtime import Author, cpu_seconds, make_author, signup
from bench.server import DEFAULT_ADMIN_URL, fresh_database, stories_server
from stories.actors.relay import DEFAULT_CHANNEL
from stories.redis import DEFAULT_KEY_PREFIX
from stories.store.bridge import open_bridge

WRITERS = 8
SETUP_CONCURRENCY = 16
SETTLE_SECONDS = 2.0
INSERT_SQL = """
    INSERT INTO reactions (id, story_id, user_id, emoji, created_at, author_id)
    VALUES ($1, $2, $3, '🔥', now(), $4)"""


@dataclass
class Received:
    count: int = 0


async def hold(ws_url: str, token: str, received: Received, *, task_status: trio.TaskStatus[None]) -> None:
    async with open_websocket_url(f"{ws_url}?token={token}") as websocket:
        task_status.started()
        while True:
            if orjson.loads(await websocket.get_message()).get("type") == "story.reacted":
                received.count += 1


async def aio_write(
    database_url: str, authors: list[tuple[uuid.UUID, uuid.UUID]], viewer: uuid.UUID, rate: float, seconds: float
) -> int:
    """Insert `rate` reactions a second for `seconds` (asyncio, on the bridge's loop); return how many."""
    total = int(rate * seconds)
    pool = await asyncpg.create_pool(database_url, min_size=WRITERS, max_size=WRITERS)
    written = 0
    start = time.perf_counter()

    async def writer(offset: int) -> None:
        nonlocal written
        async with pool.acquire() as conn:
            for k in range(offset, total, WRITERS):
                delay = start + k / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                story_id, author_id = authors[k % len(authors)]
                await conn.execute(INSERT_SQL, uuid.uuid4(), story_id, viewer, author_id)
                written += 1

    try:
        await asyncio.gather(*(writer(offset) for offset in range(WRITERS)))
    finally:
        await pool.close()
    return written


async def hint(redis_url: str, done: trio.Event) -> None:
    """A wake-up on the relays' channel every few milliseconds while events are written (request handlers
    send one per write; the relays coalesce them the same way)."""
    client = coredis.Redis.from_url(redis_url)
    async with client:
        while not done.is_set():
            await client.publish(DEFAULT_KEY_PREFIX + DEFAULT_CHANNEL, "bench")
            await trio.sleep(0.002)


async def run_once(
    database_url: str, redis_url: str, servers: list[tuple[str, int]], authors_n: int, rate: float, seconds: float
) -> dict[str, float]:
    base_url = servers[0][0]
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        limiter = trio.CapacityLimiter(SETUP_CONCURRENCY)
        authors: list[Author] = []
        async with trio.open_nursery() as nursery:
            for _ in range(authors_n):
                nursery.start_soon(make_author, http, limiter, authors)
        viewer = token_subject(await signup(http, limiter))
    pairs = await author_pairs(database_url, authors)
    received = Received()
    pids = [pid for _, pid in servers]
    async with trio.open_nursery() as sockets:
        for index, author in enumerate(authors):
            url, _ = servers[index % len(servers)]
            await sockets.start(hold, url.replace("http://", "ws://", 1) + "/ws", author.token, received)
        await trio.sleep(SETTLE_SECONDS)
        idle_before = [cpu_seconds(pid) for pid in pids]
        await trio.sleep(seconds)
        idle = [cpu_seconds(pid) - before for pid, before in zip(pids, idle_before, strict=True)]
        load_before = [cpu_seconds(pid) for pid in pids]
        done = trio.Event()
        async with open_bridge() as bridge, trio.open_nursery() as hints:
            hints.start_soon(hint, redis_url, done)
            started = time.perf_counter()
            written = await bridge.run(aio_write, database_url, pairs, viewer, rate, seconds)
            elapsed = time.perf_counter() - started
            with trio.move_on_after(5):
                while received.count < written:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            done.set()
        span = time.perf_counter() - started
        load = [cpu_seconds(pid) - before for pid, before in zip(pids, load_before, strict=True)]
        sockets.cancel_scope.cancel("measured")
    # The idle CPU scaled to the load's span (written + delivered), per process.
    relay_ms = [(used - quiet * span / seconds) * 1000 / written for used, quiet in zip(load, idle, strict=True)]
    return {
        "written": written,
        "rate": written / elapsed,
        "delivered": received.count,
        "idle_cpu_percent": statistics.median(quiet / seconds * 100 for quiet in idle),
        "relay_ms_per_event": statistics.median(relay_ms),
        "relay_ms_max": max(relay_ms),
        "relay_cpu_percent": statistics.median(ms * written / span / 10 for ms in relay_ms),
    }


def token_subject(token: str) -> uuid.UUID:
    """The user a token was issued to (its `sub` claim; the server has checked the signature)."""
    payload = token.split(".")[1]
    return uuid.UUID(orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"])


async def author_pairs(database_url: str, authors: list[Author]) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(story id, author id) of each author's story, read from the database."""

    async def fetch() -> list[tuple[uuid.UUID, uuid.UUID]]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch(
                "SELECT id, author_id FROM stories WHERE id = ANY($1::uuid[])", [a.story_id for a in authors]
            )
        finally:
            await conn.close()
        return [(row["id"], row["author_id"]) for row in rows]

    async with open_bridge() as bridge:
        result: list[tuple[uuid.UUID, uuid.UUID]] = await bridge.run(fetch)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--rate", type=float, default=2000.0, help="events per second, all processes together")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--authors", type=int, default=400, help="one socket each, spread over the processes")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    results = []
    for _ in range(args.runs):
        with ExitStack() as stack:
            database_url = stack.enter_context(fresh_database(args.admin_url))
            env = {"REDIS_URL": args.redis_url, "RATE_LIMIT_STORIES_PER_MINUTE": "100000"}
            servers = []
            for _ in range(args.processes):
                server = stack.enter_context(stories_server(database_url, env))
                servers.append((server.base_url, server.pid))
            result = trio.run(run_once, database_url, args.redis_url, servers, args.authors, args.rate, args.seconds)
        print(" ".join(f"{key}={value:.3f}" for key, value in result.items()), flush=True)
        results.append(result)
    print(f"medians of {len(results)} runs:")
    for key in results[0]:
        print(f"  {key}: {statistics.median(r[key] for r in results):.3f}")


if __name__ == "__main__":
    main()
