"""Choose the asyncpg bridge with numbers: `python -m bench.bridge [--ops N] [--concurrency 32] [--runs 5]`.

asyncpg is asyncio-only and the service runs on trio. Bridges compared, each operation an `aio_*(pool, ...)`
coroutine run on the asyncio side (one crossing per operation, as `Store._call` does):

  A      trio-asyncio as today: `command_timeout=30`, default inactive-connection lifetime and reset;
  B      trio-asyncio fixed: `command_timeout=None, max_inactive_connection_lifetime=0`, no-op `reset=`;
  C      a dedicated thread running a real asyncio loop (uvloop when importable) that owns the pool (B's
         settings); trio hands it each operation with `loop.call_soon_threadsafe` (the task is created on
         the loop) and is woken through `TrioToken.run_sync_soon`;
  C-cf   C through `asyncio.run_coroutine_threadsafe` (a concurrent.futures.Future in between);
  C-si   C with `sys.setswitchinterval(0.0005)` (default 0.005): faster GIL hand-off between the threads;
  C-aio  C on the stock asyncio loop instead of uvloop;
  D      psycopg 3 (sync, psycopg_pool) in `trio.to_thread`, one thread per pool connection;
  X+burn variant X while another trio task burns CPU in pure Python (slices of BURN_ITERATIONS loop turns,
         a checkpoint between), standing in for the HTTP layer that keeps the real server's trio thread busy.

Workloads: `ping` (SELECT 1), `read` (one row by uuid primary key from a 10k-row table, returned as a tuple),
`write` (a transaction: INSERT .. ON CONFLICT DO NOTHING RETURNING, then an UPDATE).

Every (bridge, workload, run) is a fresh subprocess: a warm-up, then `--ops` operations (`--burn-ops` for the
+burn variants, which trio-asyncio makes very slow) from `--concurrency` trio tasks. It measures ops/s (wall),
process CPU per op (`time.process_time()`, all threads), PostgreSQL backend CPU per op (/proc of the pool's
backends), latency p50/p99 (`trio.current_time()` around each call), RSS growth (/proc/self/statm, after gc,
from after the warm-up to after the run) and, for trio-asyncio, the loop's timer heap (`loop._timers`).
Rounds interleave the bridges (rotated each round); medians are reported.

    .venv/bin/python -m bench.bridge                                  # defaults: 20,000 ops x 5 runs
    .venv/bin/python -m bench.bridge --ops 5000 --runs 3 --bridges B,C --workloads ping --report ''
    .venv/bin/python -m bench.bridge --raw /tmp/bridge.jsonl      # also keep every run's result
    .venv/bin/python -m bench.bridge --from-raw /tmp/bridge.jsonl # only rewrite the report from kept results

Creates a database next to --admin-url's and drops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from array import array
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import trio

from bench.server import DEFAULT_ADMIN_URL, fresh_database

ROOT = Path(__file__).resolve().parents[1]
ITEMS = 10_000
POOL_SIZE = 10
BURN_ITERATIONS = 10_000
DEFAULT_SWITCH_INTERVAL = 0.005
FAST_SWITCH_INTERVAL = 0.0005
CHILD_TIMEOUT_SECONDS = 900

PING_SQL = "SELECT 1"
READ_SQL = "SELECT id, author, title, body, views, created_at FROM bench_items WHERE id = $1"
INSERT_SQL = "INSERT INTO bench_events (id, item_id, kind) VALUES ($1, $2, 'view') ON CONFLICT DO NOTHING RETURNING id"
UPDATE_SQL = "UPDATE bench_items SET views = views + 1 WHERE id = $1"
IDS_SQL = "SELECT id FROM bench_items"
BACKENDS_SQL = "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"

SCHEMA_SQL = f"""
CREATE TABLE bench_items (
    id uuid PRIMARY KEY, author text NOT NULL, title text NOT NULL, body text NOT NULL,
    views int NOT NULL DEFAULT 0, created_at timestamptz NOT NULL);
CREATE TABLE bench_events (
    id uuid PRIMARY KEY, item_id uuid NOT NULL REFERENCES bench_items, kind text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO bench_items (id, author, title, body, created_at)
    SELECT gen_random_uuid(), 'author-' || (g % 500), 'title ' || g, repeat('lorem ipsum ', 20),
           now() - g * interval '1 minute'
    FROM generate_series(1, {ITEMS}) AS g;
"""


# --- the asyncio side: what Store's aio_* functions look like ---------------------------------------------------


async def keep_session(conn: asyncpg.Connection) -> None:
    """Pool `reset=`: runs instead of `Connection.reset()`'s query, so a release costs no round trip.

    asyncpg still runs `Connection._reset()` first (drops listeners, ROLLBACK if a transaction is open).
    Safe only while no statement leaves session state (SET, LISTEN, session advisory locks, cursors).
    """


TODAY_POOL: dict[str, Any] = {"command_timeout": 30}
FIXED_POOL: dict[str, Any] = {"command_timeout": None, "max_inactive_connection_lifetime": 0, "reset": keep_session}


async def aio_create_pool(dsn: str, size: int, pool_kwargs: dict[str, Any]) -> asyncpg.Pool:
    return await asyncpg.create_pool(dsn, min_size=size, max_size=size, **pool_kwargs)


async def aio_ping(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval(PING_SQL))


async def aio_read(pool: asyncpg.Pool, item_id: uuid.UUID) -> tuple[Any, ...] | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(READ_SQL, item_id)
    return None if row is None else tuple(row)


async def aio_write(pool: asyncpg.Pool, event_id: uuid.UUID, item_id: uuid.UUID) -> bool:
    async with pool.acquire() as conn, conn.transaction():
        inserted = await conn.fetchval(INSERT_SQL, event_id, item_id)
        await conn.execute(UPDATE_SQL, item_id)
    return inserted is not None


async def aio_column(pool: asyncpg.Pool, sql: str) -> list[Any]:
    async with pool.acquire() as conn:
        return [row[0] for row in await conn.fetch(sql)]


# --- the same operations for psycopg 3 (bridge D) ---------------------------------------------------------------


def psycopg_sql(sql: str) -> str:
    return re.sub(r"\$\d+", "%s", sql)


def sync_ping(pool: Any) -> int:
    with pool.connection() as conn:
        return int(conn.execute(PING_SQL).fetchone()[0])


def sync_read(pool: Any, item_id: uuid.UUID) -> tuple[Any, ...] | None:
    with pool.connection() as conn:
        row: tuple[Any, ...] | None = conn.execute(psycopg_sql(READ_SQL), (item_id,)).fetchone()
    return row


def sync_write(pool: Any, event_id: uuid.UUID, item_id: uuid.UUID) -> bool:
    with pool.connection() as conn, conn.transaction():
        inserted = conn.execute(psycopg_sql(INSERT_SQL), (event_id, item_id)).fetchone()
        conn.execute(psycopg_sql(UPDATE_SQL), (item_id,))
    return inserted is not None


def sync_column(pool: Any, sql: str) -> list[Any]:
    with pool.connection() as conn:
        return [row[0] for row in conn.execute(sql).fetchall()]


@dataclass(frozen=True)
class Op:
    """One store operation in both flavours: an asyncpg coroutine function and a psycopg function."""

    aio: Any
    sync: Any


PING = Op(aio_ping, sync_ping)
READ = Op(aio_read, sync_read)
WRITE = Op(aio_write, sync_write)
COLUMN = Op(aio_column, sync_column)


@dataclass(frozen=True)
class Workload:
    label: str
    op: Op
    needs_ids: bool

    def args(self, ids: list[uuid.UUID], rng: random.Random) -> tuple[Any, ...]:
        if self.op is PING:
            return ()
        if self.op is READ:
            return (rng.choice(ids),)
        return (uuid.uuid4(), rng.choice(ids))


WORKLOADS = {
    "ping": Workload("SELECT 1 (fetchval)", PING, needs_ids=False),
    "read": Workload("read one row by uuid pk (fetchrow -> tuple)", READ, needs_ids=True),
    "write": Workload("write transaction: INSERT .. ON CONFLICT .. RETURNING + UPDATE", WRITE, needs_ids=True),
}


# --- bridges: each yields a caller with `await call(op, *args)` and `timers()` ----------------------------------


class Caller(Protocol):
    async def call(self, op: Op, *args: Any) -> Any:
        """Run `op` with these arguments through the bridge; its result."""
        ...

    def timers(self) -> int | None:
        """The asyncio loop's pending timers, None where the loop keeps them out of sight (or there is none)."""
        ...


class TrioAsyncioCaller:
    """Bridge A/B: `Store._call` as it is: a task on the trio-asyncio loop, awaited through a trio.Event."""

    def __init__(self, loop: Any, pool: asyncpg.Pool) -> None:
        self._loop = loop
        self._pool = pool

    async def call(self, op: Op, *args: Any) -> Any:
        task = self._loop.create_task(op.aio(self._pool, *args))
        finished = trio.Event()
        task.add_done_callback(lambda _: finished.set())
        try:
            await finished.wait()
        finally:
            if not task.done():
                task.cancel()
        return task.result()

    def timers(self) -> int:
        return len(self._loop._timers)


@asynccontextmanager
async def trio_asyncio_bridge(dsn: str, size: int, pool_kwargs: dict[str, Any]) -> AsyncIterator[TrioAsyncioCaller]:
    import trio_asyncio  # only here: imported, it installs an event loop policy that bridge C does not want

    async with trio_asyncio.open_loop() as loop:
        pool = await trio_asyncio.aio_as_trio(aio_create_pool)(dsn, size, pool_kwargs)
        try:
            yield TrioAsyncioCaller(loop, pool)
        finally:
            await trio_asyncio.aio_as_trio(pool.close)()


def wake(token: trio.lowlevel.TrioToken, done: trio.Event) -> None:
    """From the loop thread: set `done` in trio's thread (a no-op once trio.run has returned)."""
    with suppress(trio.RunFinishedError):
        token.run_sync_soon(done.set)


def abandon(tasks: list[asyncio.Task[Any]]) -> None:
    """On the loop thread: cancel an operation trio stopped waiting for; its outcome is dropped."""
    tasks[0].cancel()
    tasks[0].add_done_callback(lambda task: task.cancelled() or task.exception())


async def on_loop(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    """Bridge C: run `coro` as a task on the asyncio loop of another thread and wait for it.

    A trio cancel returns at once and asks the loop to cancel the task; the task ends (and releases its
    connection) in the background. `start` and `abandon` run on the loop thread in submission order.
    """
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    tasks: list[asyncio.Task[Any]] = []

    def start() -> None:
        task = loop.create_task(coro)
        task.add_done_callback(lambda _: wake(token, done))
        tasks.append(task)

    loop.call_soon_threadsafe(start)
    try:
        await done.wait()
    finally:
        if not done.is_set():
            loop.call_soon_threadsafe(abandon, tasks)
    return tasks[0].result()


async def on_loop_future(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    """Bridge C-cf: `on_loop` through `run_coroutine_threadsafe` (a concurrent.futures.Future in between).

    `future.cancel()` is a no-op once it is done; before that it cancels the task via `call_soon_threadsafe`.
    """
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    future.add_done_callback(lambda _: wake(token, done))
    try:
        await done.wait()
    finally:
        future.cancel()
    return future.result()


class AsyncioThreadCaller:
    def __init__(self, loop: asyncio.AbstractEventLoop, pool: asyncpg.Pool, submit: Any) -> None:
        self._loop = loop
        self._pool = pool
        self._submit = submit

    async def call(self, op: Op, *args: Any) -> Any:
        return await self._submit(self._loop, op.aio(self._pool, *args))

    def timers(self) -> int | None:
        scheduled = getattr(self._loop, "_scheduled", None)  # the stock loop's heap; uvloop keeps it in libuv
        return None if scheduled is None else len(scheduled)


def new_loop(use_uvloop: bool) -> asyncio.AbstractEventLoop:
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


@asynccontextmanager
async def asyncio_thread_bridge(
    dsn: str, size: int, use_uvloop: bool, submit: Any = on_loop
) -> AsyncIterator[AsyncioThreadCaller]:
    loop = new_loop(use_uvloop)
    thread = threading.Thread(target=loop.run_forever, name="asyncpg-loop", daemon=True)
    thread.start()
    try:
        pool = await on_loop(loop, aio_create_pool(dsn, size, FIXED_POOL))
        try:
            yield AsyncioThreadCaller(loop, pool, submit)
        finally:
            await on_loop(loop, pool.close())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        await trio.to_thread.run_sync(thread.join)
        loop.close()


class ThreadPoolCaller:
    """Bridge D: a synchronous driver in trio's worker threads, as many threads as connections."""

    def __init__(self, pool: Any, size: int) -> None:
        self._pool = pool
        self._limiter = trio.CapacityLimiter(size)

    async def call(self, op: Op, *args: Any) -> Any:
        return await trio.to_thread.run_sync(op.sync, self._pool, *args, limiter=self._limiter, abandon_on_cancel=True)

    def timers(self) -> None:
        return None


@asynccontextmanager
async def thread_pool_bridge(dsn: str, size: int) -> AsyncIterator[ThreadPoolCaller]:
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(dsn, min_size=size, max_size=size, kwargs={"autocommit": True}, open=False)
    await trio.to_thread.run_sync(lambda: pool.open(wait=True))
    try:
        yield ThreadPoolCaller(pool, size)
    finally:
        await trio.to_thread.run_sync(pool.close)


@dataclass(frozen=True)
class Bridge:
    label: str
    kind: str
    switch_interval: float = DEFAULT_SWITCH_INTERVAL

    def open(self, dsn: str, size: int) -> AbstractAsyncContextManager[Caller]:
        if self.kind == "trio-asyncio-today":
            return trio_asyncio_bridge(dsn, size, TODAY_POOL)
        if self.kind == "trio-asyncio-fixed":
            return trio_asyncio_bridge(dsn, size, FIXED_POOL)
        if self.kind == "thread-uvloop":
            return asyncio_thread_bridge(dsn, size, use_uvloop=True)
        if self.kind == "thread-uvloop-future":
            return asyncio_thread_bridge(dsn, size, use_uvloop=True, submit=on_loop_future)
        if self.kind == "thread-asyncio":
            return asyncio_thread_bridge(dsn, size, use_uvloop=False)
        return thread_pool_bridge(dsn, size)


BRIDGES = {
    "A": Bridge("trio-asyncio (as today)", "trio-asyncio-today"),
    "B": Bridge("trio-asyncio fixed", "trio-asyncio-fixed"),
    "C": Bridge("asyncio thread (uvloop)", "thread-uvloop"),
    "C-cf": Bridge("asyncio thread (uvloop), run_coroutine_threadsafe", "thread-uvloop-future"),
    "C-si": Bridge("asyncio thread (uvloop), switchinterval 0.5 ms", "thread-uvloop", FAST_SWITCH_INTERVAL),
    "C-aio": Bridge("asyncio thread (stock asyncio loop)", "thread-asyncio"),
    "D": Bridge("psycopg 3 in trio.to_thread", "psycopg-threads"),
}
DEFAULT_VARIANTS = "A,B,C,C-cf,C-si,C-aio,D,B+burn,C+burn,C-si+burn,D+burn"


def variant_label(variant: str) -> str:
    name, _, burn = variant.partition("+")
    return BRIDGES[name].label + (" + CPU burn" if burn else "")


# --- one measurement (child process) ----------------------------------------------------------------------------


def spin(iterations: int) -> int:
    """Pure-Python CPU work holding the GIL, like request parsing and JSON in the HTTP layer."""
    total = 0
    for i in range(iterations):
        total += i % 7
    return total


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pids: list[int]) -> float | None:
    """utime + stime of these processes (PostgreSQL backends), None when /proc shows none of them."""
    total, seen = 0, False
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
        seen = True
    return total / os.sysconf("SC_CLK_TCK") if seen else None


async def drive(
    caller: Caller, work: Workload, ids: list[uuid.UUID], latencies: array[float], concurrency: int
) -> None:
    """Run `len(latencies)` operations from `concurrency` tasks; store each call's latency (s) in place.

    The array is allocated before the RSS baseline, so the bench's own bookkeeping does not count as growth.
    """
    rng = random.Random(len(latencies))
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(latencies):
            index, next_index = next_index, next_index + 1
            args = work.args(ids, rng)
            start = trio.current_time()
            await caller.call(work.op, *args)
            latencies[index] = trio.current_time() - start

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)


async def drive_with_burn(
    caller: Caller, work: Workload, ids: list[uuid.UUID], latencies: array[float], concurrency: int
) -> int:
    """`drive` while one more trio task burns CPU slices; returns the number of slices burnt."""
    slices = 0

    async def burn() -> None:
        nonlocal slices
        while True:
            spin(BURN_ITERATIONS)
            slices += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(burn)
        await drive(caller, work, ids, latencies, concurrency)
        nursery.cancel_scope.cancel()
    return slices


def percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    name, _, burn = args.child.partition("+")
    bridge = BRIDGES[name]
    work = WORKLOADS[args.workload]
    sys.setswitchinterval(bridge.switch_interval)
    async with bridge.open(args.dsn, args.pool_size) as caller:
        ids = await caller.call(COLUMN, IDS_SQL) if work.needs_ids else []
        backends = await caller.call(COLUMN, BACKENDS_SQL)
        await drive(caller, work, ids, array("d", bytes(8 * args.warmup)), args.concurrency)
        latencies = array("d", bytes(8 * args.ops))
        timers_before = caller.timers()
        gc.collect()
        rss_before, cpu_before, pg_before = rss_bytes(), time.process_time(), cpu_seconds(backends)
        start = time.perf_counter()
        if burn:
            slices = await drive_with_burn(caller, work, ids, latencies, args.concurrency)
        else:
            await drive(caller, work, ids, latencies, args.concurrency)
            slices = 0
        wall = time.perf_counter() - start
        cpu, pg_after = time.process_time() - cpu_before, cpu_seconds(backends)
        for _ in range(10):
            await trio.lowlevel.checkpoint()  # let trio-asyncio move queued timer handles into its heap
        gc.collect()
        rss_growth = rss_bytes() - rss_before
        timers_after = caller.timers()
    ordered = sorted(latencies)
    return {
        "ops": args.ops,
        "warmup": args.warmup,
        "concurrency": args.concurrency,
        "pool_size": args.pool_size,
        "ops_per_s": args.ops / wall,
        "cpu_us_per_op": cpu / args.ops * 1e6,
        "pg_cpu_us_per_op": None if pg_before is None or pg_after is None else (pg_after - pg_before) / args.ops * 1e6,
        "p50_ms": percentile(ordered, 0.50) * 1e3,
        "p99_ms": percentile(ordered, 0.99) * 1e3,
        "rss_mb_per_10k": rss_growth / 2**20 / args.ops * 10_000,
        "timers_left": timers_after,
        "timers_per_op": (
            None if timers_before is None or timers_after is None else (timers_after - timers_before) / args.ops
        ),
        "burn_slices_per_s": slices / wall,
    }


# --- orchestration (parent process) ----------------------------------------------------------------------------


async def admin(dsn: str, sql: str, *, value: bool = False) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await (conn.fetchval(sql) if value else conn.execute(sql))
    finally:
        await conn.close()


def run_child(args: argparse.Namespace, dsn: str, variant: str, workload: str) -> dict[str, Any] | None:
    command = [sys.executable, "-m", "bench.bridge", "--child", variant, "--workload", workload, "--dsn", dsn]
    ops = args.burn_ops if "+burn" in variant else args.ops
    command += ["--ops", str(ops), "--warmup", str(args.warmup), "--concurrency", str(args.concurrency)]
    command += ["--pool-size", str(args.pool_size)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=CHILD_TIMEOUT_SECONDS)
    if done.returncode != 0:
        print(f"  {variant} {workload}: FAILED\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def burn_slice_ms() -> float:
    start = time.perf_counter()
    for _ in range(20):
        spin(BURN_ITERATIONS)
    return (time.perf_counter() - start) / 20 * 1e3


Results = dict[tuple[str, str], list[dict[str, Any]]]


def collect(args: argparse.Namespace, dsn: str) -> Results:
    """Run every (round, workload, variant), appending each result to `--raw` as it arrives."""
    variants = args.bridges.split(",")
    results: Results = defaultdict(list)
    for run in range(args.runs):
        asyncio.run(admin(dsn, "TRUNCATE bench_events"))
        order = variants[run % len(variants) :] + variants[: run % len(variants)]
        for workload in args.workloads.split(","):
            for variant in order:
                result = run_child(args, dsn, variant, workload)
                if result is None:
                    continue
                results[(workload, variant)].append(result)
                print(f"run {run + 1} {workload:5} {variant:10} {fmt_row(result)}", flush=True)
                if args.raw:
                    with Path(args.raw).open("a") as raw:
                        raw.write(json.dumps({"workload": workload, "variant": variant, **result}) + "\n")
    return results


def load_raw(path: str) -> Results:
    results: Results = defaultdict(list)
    for line in Path(path).read_text().splitlines():
        result = json.loads(line)
        results[(result["workload"], result["variant"])].append(result)
    return results


def fmt_row(result: dict[str, Any]) -> str:
    return (
        f"{result['ops_per_s']:7.0f} ops/s  cpu {result['cpu_us_per_op']:6.1f} µs  "
        f"p50 {result['p50_ms']:6.2f}  p99 {result['p99_ms']:6.2f} ms  rss {result['rss_mb_per_10k']:6.2f} MB/10k  "
        f"timers {result['timers_left']}"
    )


def median(results: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in results if r[key] is not None]
    return statistics.median(values) if values else None


def cell(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def summary(results: Results) -> dict[tuple[str, str], dict[str, Any]]:
    keys = ["ops_per_s", "cpu_us_per_op", "pg_cpu_us_per_op", "p50_ms", "p99_ms", "rss_mb_per_10k"]
    keys += ["timers_left", "timers_per_op", "burn_slices_per_s"]
    table = {}
    for key, runs in results.items():
        row: dict[str, Any] = {k: median(runs, k) for k in keys}
        row["runs"] = len(runs)
        row["ops_min"] = min(r["ops_per_s"] for r in runs)
        row["ops_max"] = max(r["ops_per_s"] for r in runs)
        table[key] = row
    return table


def workload_table(workload: str, variants: list[str], table: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    lines = [
        f"### {workload}: {WORKLOADS[workload].label}",
        "",
        "| bridge | ops/s (min–max) | CPU µs/op | PG CPU µs/op | p50 ms | p99 ms | RSS MB /10k ops "
        "| timers left (per op) | burn slices/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant in variants:
        row = table.get((workload, variant))
        if row is None:
            continue
        timers = "–" if row["timers_left"] is None else f"{row['timers_left']:.0f} ({row['timers_per_op']:.2f})"
        burn = cell(row["burn_slices_per_s"], ".0f") if "+burn" in variant else ""
        cells = [
            f"{variant}: {variant_label(variant)}",
            f"{row['ops_per_s']:.0f} ({row['ops_min']:.0f}–{row['ops_max']:.0f})",
            f"{row['cpu_us_per_op']:.1f}",
            cell(row["pg_cpu_us_per_op"], ".1f"),
            f"{row['p50_ms']:.2f}",
            f"{row['p99_ms']:.2f}",
            f"{row['rss_mb_per_10k']:.2f}",
            timers,
            burn,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def findings(workloads: list[str], table: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """The comparisons the decision rests on, computed from the medians."""
    lines = ["## Findings (computed from the medians above)", ""]
    for workload in workloads:
        rows = {v: r for (w, v), r in table.items() if w == workload}
        idle = {v: r for v, r in rows.items() if "+burn" not in v and v != "A"}
        busy = {v: r for v, r in rows.items() if "+burn" in v}
        # Beside the fastest, what matters for each: CPU per op when the trio thread idles, p99 when it is busy.
        for condition, group, best_at, metric, unit in (
            ("idle trio thread", idle, "least CPU/op", "cpu_us_per_op", "{:.1f} µs"),
            ("trio thread saturated", busy, "lowest p99", "p99_ms", "{:.2f} ms"),
        ):
            if group:
                fastest, fast = max(group.items(), key=lambda item: item[1]["ops_per_s"])
                best, row = min(group.items(), key=lambda item: item[1][metric])
                lines.append(
                    f"- {workload}, {condition}: fastest {fastest} ({fast['ops_per_s']:.0f} ops/s), "
                    f"{best_at} {best} ({unit.format(row[metric])})."
                )
        for variant in ("A", "B"):
            heap = rows.get(variant)
            if heap is not None and heap["timers_per_op"] is not None:
                lines.append(
                    f"- {workload}, {variant}: {heap['timers_per_op']:.2f} timers left in the heap per op, "
                    f"RSS +{heap['rss_mb_per_10k']:.2f} MB per 10k ops."
                )
    return [*lines, ""]


NOTES = """## What asyncpg 0.32 does per operation (read from asyncpg/pool.py and connection.py)

- Every query arms `loop.call_later(timeout)` when a timeout is in force: `command_timeout` is the default
  timeout of every statement (`_get_timeout_impl`), so `command_timeout=30` is one timer per statement.
- Release (`PoolConnectionHolder.release`): with the default `reset=None` it calls `Connection.reset()`, which
  runs `_reset()` (drops listeners; `ROLLBACK` only if a transaction is still open) and then sends
  `get_reset_query()` = `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;` - one round trip
  per release, itself under `command_timeout` (another timer). With `reset=coro` it runs `_reset()` and then
  `coro(conn)` instead of that query: a no-op coroutine means no round trip and no timer. `reset=None` cannot
  express "no reset": None selects the default.
- After the reset the holder re-arms `call_later(max_inactive_connection_lifetime, ...)` (300 s by default),
  cancelled at the next acquire. `max_inactive_connection_lifetime=0` arms nothing.
- `compat.timeout(None)` (the release budget without an acquire timeout) arms nothing.
- trio-asyncio's `_timer_handle_cancelled` is a no-op and its heap (`loop._timers`) is only popped when a
  deadline passes, so with A every cancelled timer stays, with its context, for 30 s or 300 s.

So the settings that stop the growth: `create_pool(..., command_timeout=None, max_inactive_connection_lifetime=0,
reset=<no-op coroutine>)`, deadlines enforced on the trio side. The no-op reset is safe only while no statement
leaves session state; `aio_migrate`'s session advisory lock is released explicitly, but a cancel between lock and
unlock would leave it held on a pooled connection (use `pg_advisory_xact_lock` or a dedicated connection there).

## Why trio-asyncio is slow here, and starves when the trio thread is busy

trio-asyncio runs the asyncio loop as one trio task that takes one handle per iteration (`_main_loop_one`: a
`move_on_after` and a channel `receive()`, which checkpoints, per handle). So every asyncio callback waits for
a whole trio scheduling batch, and one asyncpg operation is several callbacks. When other trio tasks have work
(the +burn task: one slice per batch), every callback waits behind it: B+burn falls to a small fraction of B while the
burner keeps nearly all its CPU. The real server's trio thread is busy with HTTP exactly when the database
matters most.

## GIL hand-off (C and D when the trio thread is busy)

The loop thread (C) or the worker threads (D) take the GIL after every wake-up from I/O. A thread running pure
Python only lets go when forced, after `sys.getswitchinterval()` (5 ms by default), so each step on the other
thread can wait up to 5 ms: C+burn's p99 can reach seconds and its throughput collapses in some runs.
`sys.setswitchinterval(0.0005)` (C-si) shortens that wait tenfold; the price is a smaller share for the busy
thread (compare burn slices/s), i.e. the database work is no longer starved by it. The setting is
process-wide; it changes nothing measurable when the trio thread is not saturated (C vs C-si).

## Bridge C and cancellation

`on_loop()` queues `start` with `loop.call_soon_threadsafe`; `start` creates the task on the loop thread and
gives it a done callback that calls `TrioToken.run_sync_soon(done.set)` (suppressing `RunFinishedError`). On a
trio cancel the wait ends at once and `abandon` is queued the same way: it runs after `start` (the loop's ready
queue is FIFO), cancels the task and drops its outcome. The task ends, and releases its connection, in the
background, as `Store._call` does today. C-cf does the same with `run_coroutine_threadsafe`: cancelling the
pending concurrent future makes asyncio call `task.cancel()` on the loop thread.
"""


def environment(admin_url: str, pool_size: int) -> list[str]:
    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    packages = ", ".join(f"{p} {version(p)}" for p in ("asyncpg", "trio", "trio-asyncio", "uvloop", "psycopg"))
    server = asyncio.run(admin(admin_url, "SHOW server_version", value=True))
    return [
        f"- Python {platform.python_version()} ({platform.machine()}), {packages}",
        f"- PostgreSQL {server} on the same machine (127.0.0.1, trust), {os.cpu_count()} cores, other load present.",
        f"- Pool size {pool_size}; burn slice = {BURN_ITERATIONS} iterations of a Python loop ≈ "
        f"{burn_slice_ms():.2f} ms alone.",
    ]


COLUMNS = (
    "Columns: ops/s = wall-clock throughput; CPU µs/op = `time.process_time()` of the whole process (all threads) "
    "/ ops, which for +burn variants includes the burner (compare burn slices/s there); PG CPU = utime+stime of "
    "the pool's PostgreSQL backends / ops; p50/p99 = latency of one call as the calling trio task sees it; RSS = "
    "growth from after the warm-up to after the run (after gc); timers left = trio-asyncio's heap after warm-up + "
    "run, per op = its growth during the run (A's 30 s command-timeout timers start expiring in runs longer than "
    "30 s, its 300 s inactive-connection timers do not); burn slices/s = pure-Python work the busy trio task got "
    "done (the HTTP layer's share)."
)


def per_run_table(workloads: list[str], variants: list[str], results: Results) -> list[str]:
    lines = ["## Every run: ops/s (p99 ms), in run order", "", "| workload | bridge | runs |", "|---|---|---|"]
    for workload in workloads:
        for variant in variants:
            runs = results.get((workload, variant), [])
            cells = ", ".join(f"{r['ops_per_s']:.0f} ({r['p99_ms']:.0f})" for r in runs)
            lines.append(f"| {workload} | {variant} | {cells} |")
    return [*lines, ""]


def write_report(args: argparse.Namespace, results: Results) -> str:
    variants = [v for v in args.bridges.split(",") if any(key[1] == v for key in results)]
    workloads = [w for w in args.workloads.split(",") if any(key[0] == w for key in results)]
    every = [r for runs in results.values() for r in runs]
    ops = {r["ops"] for r in every if r["burn_slices_per_s"] == 0}
    burn_ops = {r["ops"] for r in every if r["burn_slices_per_s"] > 0}
    runs = sorted({len(r) for r in results.values()})
    table = summary(results)
    lines = [
        "# asyncpg bridge: trio-asyncio vs a dedicated asyncio thread",
        "",
        f"Generated by `python -m bench.bridge {' '.join(sys.argv[1:])}` on {datetime.now(UTC):%Y-%m-%d}. "
        f"Each cell is the median of {'/'.join(map(str, runs))} runs; each run is a fresh process doing "
        f"{every[0]['warmup']} warm-up then {'/'.join(map(str, sorted(ops)))} operations "
        f"({'/'.join(map(str, sorted(burn_ops)))} for +burn variants) from {every[0]['concurrency']} concurrent "
        "trio tasks; the bridges are interleaved (rotated) within each round. The variants are described in the "
        "module docstring of `bench/bridge.py`.",
        "",
        *environment(args.admin_url, every[0]["pool_size"]),
        "",
        COLUMNS,
        "",
        *[line for workload in workloads for line in workload_table(workload, variants, table)],
        *findings(workloads, table),
        NOTES,
        *per_run_table(workloads, variants, results),
    ]
    text = "\n".join(lines)
    if args.report:
        Path(args.report).write_text(text)
    return text


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bridge", description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=20_000, help="measured operations per run")
    parser.add_argument("--burn-ops", type=int, default=2_000, help="measured operations per run of +burn variants")
    parser.add_argument("--warmup", type=int, default=2_000, help="operations before measuring")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent trio tasks")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pool-size", type=int, default=POOL_SIZE)
    parser.add_argument("--bridges", default=DEFAULT_VARIANTS, help="comma-separated variants (see above)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated: ping,read,write")
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help="where to create the bench database")
    parser.add_argument("--report", default="bench/bridge.md", help="markdown report path ('' to skip)")
    parser.add_argument("--raw", default="", help="append every run's result to this JSON-lines file")
    parser.add_argument("--from-raw", help="only write the report, from a --raw file (or several runs' worth)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.child:
        print(json.dumps(trio.run(measure, args)))
        return 0
    if args.from_raw:
        print(write_report(args, load_raw(args.from_raw)))
        return 0
    with fresh_database(args.admin_url) as dsn:
        asyncio.run(admin(dsn, SCHEMA_SQL))
        asyncio.run(admin(dsn, "VACUUM ANALYZE bench_items"))
        results = collect(args, dsn)
    print(write_report(args, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
