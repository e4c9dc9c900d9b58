"""Where a WebSocket's memory goes: tracemalloc snapshots of `stories serve` holding N, then 2N idle sockets.

    python -m bench.realtime_memory --sockets 2000          # snapshots diffed, RSS per socket, top allocators
    python -m bench.realtime_memory --sockets 2000 --no-trace   # RSS only (tracemalloc costs memory itself)

The server runs with a `sitecustomize` of this script's making on its PYTHONPATH: it starts tracemalloc and
writes a snapshot on SIGUSR1 (gc first). The difference between the two snapshots, divided by N, is what one
more idle socket costs in Python objects, grouped by the file that allocated it and by the innermost frames of
our code or the library that asked; RSS per socket includes what tracemalloc cannot see (malloc arenas,
fragmentation, C libraries' own buffers). Kernel socket buffers are in neither.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
import tracemalloc
from contextlib import ExitStack
from pathlib import Path

import httpx
import trio
from trio_websocket import open_websocket_url

from bench.realtime import rss_bytes, signup
from bench.server import DEFAULT_ADMIN_URL, fresh_database, stories_server

SETTLE_SECONDS = 2.0
SNAPSHOT_SECONDS = 120.0
FRAMES = 12
CONCURRENCY = 50

SITECUSTOMIZE = """
import gc, os, signal, tracemalloc
_directory = os.environ["STORIES_TRACEMALLOC_DIR"]
_count = [0]
def _snapshot(signum, frame):
    gc.collect()
    _count[0] += 1
    snapshot = tracemalloc.take_snapshot()
    path = os.path.join(_directory, "snapshot-%d" % _count[0])
    snapshot.dump(path + ".part")
    os.rename(path + ".part", path)
tracemalloc.start(FRAMES)
signal.signal(signal.SIGUSR1, _snapshot)
"""


async def hold(ws_url: str, token: str, *, task_status: trio.TaskStatus[None]) -> None:
    async with open_websocket_url(f"{ws_url}?token={token}"):
        task_status.started()
        await trio.sleep_forever()


async def connect(held: trio.Nursery, limiter: trio.CapacityLimiter, ws_url: str, token: str) -> None:
    async with limiter:  # bounds concurrent handshakes; the socket lives on in `held`
        await held.start(hold, ws_url, token)


def snapshot(pid: int, directory: Path, number: int) -> tracemalloc.Snapshot:
    os.kill(pid, signal.SIGUSR1)
    path = directory / f"snapshot-{number}"
    deadline = time.monotonic() + SNAPSHOT_SECONDS
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no snapshot from the server within {SNAPSHOT_SECONDS} s")
        time.sleep(0.2)
    return tracemalloc.Snapshot.load(str(path))


def _in_app(traceback: tracemalloc.Traceback) -> bool:
    """Whether the allocation happened within the app (stories/, below `trio.run` in stories/cli.py)."""
    return any(
        "/stories/" in frame.filename and not frame.filename.endswith(("/stories/cli.py", "/stories/__main__.py"))
        for frame in traceback
    )


def report(first: tracemalloc.Snapshot, second: tracemalloc.Snapshot, sockets: int, top: int) -> list[str]:
    lines = []
    by_file = second.compare_to(first, "filename")
    total = sum(stat.size_diff for stat in by_file)
    blocks = sum(stat.count_diff for stat in by_file)
    lines.append(f"tracemalloc: {total / sockets / 1024:.2f} KiB per socket, {blocks / sockets:.1f} blocks")
    site = str(Path(sys.prefix))
    in_app = sum(stat.size_diff for stat in second.compare_to(first, "traceback") if _in_app(stat.traceback))
    lines.append(
        f"  inside the ASGI app (a stories/ frame on the stack; Quart too when it served /ws): "
        f"{in_app / sockets / 1024:.2f} KiB; hypercorn, h11, wsproto and trio on their own: "
        f"{(total - in_app) / sockets / 1024:.2f} KiB"
    )
    lines.append("")
    lines.append("by file (bytes per socket, blocks per socket):")
    for stat in by_file[:top]:
        if abs(stat.size_diff) < sockets * 16:
            break
        name = stat.traceback[0].filename.replace(site, "<venv>")
        lines.append(f"  {stat.size_diff / sockets:8.0f} B {stat.count_diff / sockets:6.1f}  {name}")
    lines.append("")
    lines.append("by allocating frames (innermost first):")
    for stat in second.compare_to(first, "traceback")[:top]:
        if abs(stat.size_diff) < sockets * 64:
            break
        lines.append(f"  {stat.size_diff / sockets:8.0f} B {stat.count_diff / sockets:6.1f}")
        for frame in list(stat.traceback)[::-1][:5]:
            lines.append(f"      {frame.filename.replace(site, '<venv>')}:{frame.lineno}")
    return lines


async def run(base_url: str, pid: int, sockets: int, directory: Path | None, top: int) -> list[str]:
    ws_url = base_url.replace("http://", "ws://", 1) + "/ws"
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        limiter = trio.CapacityLimiter(CONCURRENCY)
        tokens: list[str] = []

        async def add() -> None:
            tokens.append(await signup(http, limiter))

        async with trio.open_nursery() as nursery:
            for _ in range(2 * sockets):
                nursery.start_soon(add)
    lines = []
    async with trio.open_nursery() as held:
        rss = []
        snapshots: list[tracemalloc.Snapshot] = []
        for half in (tokens[:sockets], tokens[sockets:]):
            started = trio.CapacityLimiter(CONCURRENCY)
            async with trio.open_nursery() as opening:
                for token in half:
                    opening.start_soon(connect, held, started, ws_url, token)
            await trio.sleep(SETTLE_SECONDS)
            rss.append(rss_bytes(pid))
            if directory is not None:
                snapshots.append(await trio.to_thread.run_sync(snapshot, pid, directory, len(snapshots) + 1))
                rss[-1] = rss_bytes(pid)
        lines.append(f"sockets: {sockets} then {2 * sockets}")
        lines.append(f"RSS: {(rss[1] - rss[0]) / sockets / 1024:.2f} KiB per socket")
        if directory is not None:
            lines.extend(report(snapshots[0], snapshots[1], sockets, top))
        held.cancel_scope.cancel()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=2000, help="N: sockets added between the two snapshots")
    parser.add_argument("--no-trace", action="store_true", help="RSS only, without tracemalloc")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument("--checkout", type=Path, help="run the server from this source tree (e.g. a `git archive`)")
    args = parser.parse_args()
    with ExitStack() as stack:
        env = {"WS_PING_INTERVAL_SECONDS": "600", "WS_DEAD_AFTER_SECONDS": "1200"}
        directory = None
        if not args.no_trace:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stories-memory-")))
            (directory / "sitecustomize.py").write_text(SITECUSTOMIZE.replace("FRAMES", str(FRAMES)))
            source = str(args.checkout or Path.cwd())
            env |= {"PYTHONPATH": f"{directory}{os.pathsep}{source}", "STORIES_TRACEMALLOC_DIR": str(directory)}
        database_url = stack.enter_context(fresh_database(args.admin_url))
        server = stack.enter_context(stories_server(database_url, env, checkout=args.checkout))
        print("\n".join(trio.run(run, server.base_url, server.pid, args.sockets, directory, args.top)))


if __name__ == "__main__":
    main()
