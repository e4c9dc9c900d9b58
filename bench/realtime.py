"""Realtime benchmark: N authors connected over WebSocket, reactions caused over HTTP at a fixed rate.

Reports delivery latency p50/p99 (HTTP request sent -> event received on the author's socket), delivered
events/s, lost events, and the server's resident memory per connected socket.

    python -m bench.realtime                       # starts `stories serve` on a fresh database
    python -m bench.realtime --authors 500 --rate 100 --seconds 10 --report bench/results/realtime.md
    python -m bench.realtime --url http://127.0.0.1:5000 --pid 1234   # an already running server

Against a running server, give it RATE_LIMIT_REACTIONS_PER_MINUTE high enough for the rate.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import time
import uuid
from collections import defaultdict, deque
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import orjson
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from bench.server import DEFAULT_ADMIN_URL, fresh_database, stories_server
from stories.actors.relay import DEFAULT_CHANNEL
from stories.store.bridge import Bridge, open_bridge

PASSWORD = "bench-password-123"
SETUP_CONCURRENCY = 32
CONNECT_CONCURRENCY = 100
REQUEST_CONCURRENCY = 64
STRAGGLER_SECONDS = 5.0
DIRECT_WRITERS = 16


@dataclass
class Author:
    token: str
    story_id: str


@dataclass
class Tally:
    pending: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))
    latencies: list[float] = field(default_factory=list)
    sent: int = 0
    failed: int = 0
    connected: int = 0
    first_sent: float = 0.0
    last_received: float = 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin_process(pid: int, cpu: int) -> None:
    """Pin every thread of `pid` (the server's asyncio bridge thread too) to `cpu`; later threads inherit it."""
    for thread in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(thread.name), {cpu})


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def signup(http: httpx.AsyncClient, limiter: trio.CapacityLimiter) -> str:
    async with limiter:
        response = await http.post(
            "/signup", json={"email": f"bench-{uuid.uuid4().hex}@example.com", "password": PASSWORD}
        )
    response.raise_for_status()
    return str(response.json()["token"])


async def make_author(http: httpx.AsyncClient, limiter: trio.CapacityLimiter, authors: list[Author]) -> None:
    token = await signup(http, limiter)
    async with limiter:
        response = await http.post(
            "/stories",
            json={"text": "bench story", "visibility": "public"},
            headers={"Authorization": f"Bearer {token}"},
        )
    response.raise_for_status()
    authors.append(Author(token=token, story_id=response.json()["id"]))


async def listen(
    ws_url: str, author: Author, tally: Tally, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """One author's socket: reports started once the handshake is done, then times every reaction event."""
    async with open_websocket_url(f"{ws_url}?token={author.token}") as websocket:
        tally.connected += 1
        task_status.started()
        try:
            while True:
                message = orjson.loads(await websocket.get_message())
                if message.get("type") != "story.reacted":
                    continue
                sent_times = tally.pending[message["payload"]["story_id"]]
                if sent_times:
                    now = time.perf_counter()
                    tally.latencies.append(now - sent_times.popleft())
                    tally.last_received = now
        except ConnectionClosed:
            return


async def connect(
    sockets: trio.Nursery, limiter: trio.CapacityLimiter, ws_url: str, author: Author, tally: Tally
) -> None:
    async with limiter:  # bounds concurrent handshakes; the socket lives on in `sockets`
        await sockets.start(listen, ws_url, author, tally)


async def react(
    http: httpx.AsyncClient, author: Author, viewer_token: str, tally: Tally, limiter: trio.CapacityLimiter
) -> None:
    async with limiter:
        tally.pending[author.story_id].append(time.perf_counter())
        tally.sent += 1
        response = await http.post(
            f"/stories/{author.story_id}/reactions",
            json={"emoji": "🔥"},
            headers={"Authorization": f"Bearer {viewer_token}"},
        )
        if response.status_code != 201:
            tally.failed += 1
            tally.pending[author.story_id].pop()


@dataclass(frozen=True)
class Result:
    authors: int
    rate: float
    seconds: float
    sent: int
    delivered: int
    failed: int
    p50_ms: float
    p99_ms: float
    events_per_second: float
    rss_per_socket_kib: float
    server_cpu_ms_per_event: float

    def lines(self) -> list[str]:
        return [
            f"authors connected:   {self.authors}",
            f"target rate:         {self.rate:.0f} events/s for {self.seconds:.0f} s",
            f"sent / delivered:    {self.sent} / {self.delivered} (failed requests: {self.failed})",
            f"latency p50 / p99:   {self.p50_ms:.1f} ms / {self.p99_ms:.1f} ms",
            f"delivered events/s:  {self.events_per_second:.1f}",
            f"server RSS / socket: {self.rss_per_socket_kib:.1f} KiB",
            f"server CPU / event:  {self.server_cpu_ms_per_event:.2f} ms (HTTP request, unless --direct, + delivery)",
        ]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


INSERT_SQL = """
    INSERT INTO reactions (id, story_id, user_id, emoji, created_at, author_id)
    SELECT $1, id, $2, '🔥', now(), author_id FROM stories WHERE id = $3"""


async def aio_insert(pool: asyncpg.Pool, story_id: str, viewer_id: uuid.UUID) -> None:
    """A reaction written as the request handler would, then the relays' wake-up (NOTIFY; asyncio side)."""
    async with pool.acquire() as conn:
        await conn.execute(INSERT_SQL, uuid.uuid4(), viewer_id, uuid.UUID(story_id))
        await conn.execute("SELECT pg_notify($1, 'bench')", DEFAULT_CHANNEL)


async def aio_pool(database_url: str) -> asyncpg.Pool:
    return await asyncpg.create_pool(database_url, min_size=DIRECT_WRITERS, max_size=DIRECT_WRITERS)


async def aio_close(pool: asyncpg.Pool) -> None:
    await pool.close()


def token_subject(token: str) -> uuid.UUID:
    """The user a token was issued to (its `sub` claim; the server has checked the signature)."""
    payload = token.split(".")[1]
    return uuid.UUID(orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"])


async def write(
    bridge: Bridge, pool: asyncpg.Pool, author: Author, viewer_token: str, tally: Tally, limiter: trio.CapacityLimiter
) -> None:
    """--direct: the event is written straight into the database, so the server does delivery only."""
    async with limiter:
        tally.pending[author.story_id].append(time.perf_counter())
        tally.sent += 1
        await bridge.run(aio_insert, pool, author.story_id, token_subject(viewer_token))


async def run_bench(
    base_url: str,
    pid: int,
    authors_n: int,
    viewers_n: int,
    rate: float,
    seconds: float,
    direct_url: str | None = None,
) -> Result:
    ws_url = base_url.replace("http://", "ws://", 1) + "/ws"
    limits = httpx.Limits(max_connections=REQUEST_CONCURRENCY, max_keepalive_connections=REQUEST_CONCURRENCY)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as http:
        setup = trio.CapacityLimiter(SETUP_CONCURRENCY)
        authors: list[Author] = []
        viewers: list[str] = []
        async with trio.open_nursery() as nursery:
            for _ in range(authors_n):
                nursery.start_soon(make_author, http, setup, authors)
        async with trio.open_nursery() as nursery:
            for _ in range(viewers_n):

                async def add_viewer() -> None:
                    viewers.append(await signup(http, setup))

                nursery.start_soon(add_viewer)
        print(f"set up {len(authors)} authors and {len(viewers)} viewers")
        tally = Tally()
        rss_before = rss_bytes(pid)
        async with trio.open_nursery() as sockets:
            handshakes = trio.CapacityLimiter(CONNECT_CONCURRENCY)
            async with trio.open_nursery() as connecting:
                for author in authors:
                    connecting.start_soon(connect, sockets, handshakes, ws_url, author, tally)
            await trio.sleep(1)  # let the server settle its per-socket state before measuring
            rss_after = rss_bytes(pid)
            print(f"connected {tally.connected} sockets")
            requests = trio.CapacityLimiter(REQUEST_CONCURRENCY)
            async with AsyncExitStack() as direct:
                if direct_url is not None:
                    bridge = await direct.enter_async_context(open_bridge())
                    pool = await bridge.run(aio_pool, direct_url)
                    direct.push_async_callback(bridge.run, aio_close, pool)
                    requests = trio.CapacityLimiter(DIRECT_WRITERS)
                cpu_before = cpu_seconds(pid)
                tally.first_sent = time.perf_counter()
                async with trio.open_nursery() as senders:
                    total = int(rate * seconds)
                    start = trio.current_time()
                    for k in range(total):
                        await trio.sleep_until(start + k / rate)
                        author, viewer = authors[k % len(authors)], viewers[k % len(viewers)]
                        if direct_url is None:
                            senders.start_soon(react, http, author, viewer, tally, requests)
                        else:
                            senders.start_soon(write, bridge, pool, author, viewer, tally, requests)
            with trio.move_on_after(STRAGGLER_SECONDS):
                # Polling one counter that thousands of listener tasks bump is simpler than an Event here.
                while len(tally.latencies) < tally.sent - tally.failed:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            cpu_used = cpu_seconds(pid) - cpu_before
            sockets.cancel_scope.cancel("bench done")
    delivered = len(tally.latencies)
    span = max(tally.last_received - tally.first_sent, 1e-9)
    return Result(
        authors=tally.connected,
        rate=rate,
        seconds=seconds,
        sent=tally.sent,
        delivered=delivered,
        failed=tally.failed,
        p50_ms=percentile(tally.latencies, 0.50) * 1000,
        p99_ms=percentile(tally.latencies, 0.99) * 1000,
        events_per_second=delivered / span,
        rss_per_socket_kib=(rss_after - rss_before) / max(tally.connected, 1) / 1024,
        server_cpu_ms_per_event=cpu_used * 1000 / max(delivered, 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--authors", type=int, default=2000)
    parser.add_argument("--viewers", type=int, default=50)
    parser.add_argument("--rate", type=float, default=200.0, help="reactions per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=1, help="repeat and report medians")
    parser.add_argument("--url", help="a running server (default: start one)")
    parser.add_argument("--pid", type=int, help="the running server's pid (for RSS), with --url")
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help="PostgreSQL to create the bench database on")
    parser.add_argument("--redis-url", help="start the server with this REDIS_URL")
    parser.add_argument("--report", type=Path, help="write a markdown report here")
    parser.add_argument("--checkout", type=Path, help="run the server from this source tree (e.g. a `git archive`)")
    parser.add_argument(
        "--direct",
        action="store_true",
        help="write the reactions into the database instead of POSTing them: the server only delivers",
    )
    parser.add_argument("--server-cpu", type=int, help="pin the server to this CPU (the load generator elsewhere)")
    parser.add_argument("--client-cpu", type=int, help="pin this load generator to this CPU")
    args = parser.parse_args()
    if args.client_cpu is not None:
        os.sched_setaffinity(0, {args.client_cpu})

    results = []
    for _ in range(args.runs):
        with ExitStack() as stack:
            if args.url:
                base_url, pid = args.url, args.pid
            else:
                database_url = stack.enter_context(fresh_database(args.admin_url))
                env = {"RATE_LIMIT_REACTIONS_PER_MINUTE": "100000", "RATE_LIMIT_STORIES_PER_MINUTE": "100000"}
                if args.redis_url:
                    env["REDIS_URL"] = args.redis_url
                server = stack.enter_context(stories_server(database_url, env, checkout=args.checkout))
                base_url, pid = server.base_url, server.pid
            if args.server_cpu is not None:
                pin_process(pid, args.server_cpu)
            if args.direct and args.url:
                parser.error("--direct needs the bench's own server (and database)")
            result = trio.run(
                run_bench,
                base_url,
                pid,
                args.authors,
                args.viewers,
                args.rate,
                args.seconds,
                database_url if args.direct else None,
            )
        print("\n".join(result.lines()))
        results.append(result)
    summary = [
        f"runs: {len(results)} (medians)",
        f"latency p50 / p99: {statistics.median(r.p50_ms for r in results):.1f} ms / "
        f"{statistics.median(r.p99_ms for r in results):.1f} ms",
        f"delivered events/s: {statistics.median(r.events_per_second for r in results):.1f}",
        f"server RSS / socket: {statistics.median(r.rss_per_socket_kib for r in results):.1f} KiB",
        f"server CPU / event: {statistics.median(r.server_cpu_ms_per_event for r in results):.2f} ms",
    ]
    if len(results) > 1:
        print("\n".join(summary))
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        body = [
            "# Realtime benchmark",
            "",
            "```",
            *[line for r in results for line in [*r.lines(), ""]],
            *summary,
            "```",
        ]
        args.report.write_text("\n".join(body) + "\n")
        print(f"report written to {args.report}")


if __name__ == "__main__":
    main()
