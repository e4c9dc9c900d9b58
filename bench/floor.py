"""The floor: what a request costs before any work, ours against a Quart-Trio hello world (issue 12, item 5).

    .venv/bin/python -m bench.floor [--runs 5] [--duration 10] [--before DIR] [--report bench/floor.md]

Starts, each on 127.0.0.1 and a free port: a Quart-Trio app answering `GET /` with a small JSON body on
hypercorn's trio worker (the stack's own floor), and `stories serve` (LOG_LEVEL=warning, on a fresh database
at --admin-url), whose `GET /no/such/route` is a 404 that touches nothing (no token needed, no database). Then,
run by run and interleaved, wrk at 32 connections against each; it reports req/s and the server's CPU per
request (utime + stime from /proc) as medians, and their ratio. With `--before DIR` (a checkout of this project,
e.g. `git worktree add /tmp/before HEAD~1`), that checkout's 404 is measured too, in the same runs: a change's
before and after. Needs wrk (apt-get install wrk).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from bench.server import DEFAULT_ADMIN_URL, free_port, fresh_database, stories_server

if TYPE_CHECKING:
    from collections.abc import Iterator

HELLO_APP = """
from quart_trio import QuartTrio

app = QuartTrio(__name__)


@app.get("/")
async def hello():
    return {"hello": "world"}
"""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time of `pid` and its descendants (hypercorn's command line serves from a worker process)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]
    return own + sum(cpu_seconds(child) for child in children)


@contextmanager
def hello_server() -> Iterator[tuple[str, int]]:
    port = free_port()
    command = [sys.executable, "-m", "hypercorn", "--worker-class", "trio", "-b", f"127.0.0.1:{port}", "hello:app"]
    with tempfile.TemporaryDirectory(prefix="stories-floor-") as directory:
        Path(directory, "hello.py").write_text(HELLO_APP)
        with subprocess.Popen(command, cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as process:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    httpx.get(url + "/")
                    break
                except httpx.TransportError:
                    time.sleep(0.2)
            try:
                yield url + "/", process.pid
            finally:
                process.terminate()


def wrk(url: str, seconds: float, connections: int) -> int:
    """Requests answered in `seconds` (wrk's count)."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", url], capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        if "requests in" in line:
            return int(line.split()[0])
    raise RuntimeError(f"wrk printed no request count: {out}")


def measure(url: str, pid: int, seconds: float, connections: int) -> tuple[float, float]:
    """(req/s, server CPU µs per request)."""
    wrk(url, 2, connections)  # warm-up
    before = cpu_seconds(pid)
    requests = wrk(url, seconds, connections)
    return requests / seconds, (cpu_seconds(pid) - before) * 1e6 / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument("--before", type=Path, help="a checkout whose 404 is measured too (before a change)")
    parser.add_argument("--report", type=Path, help="write the table as markdown here")
    args = parser.parse_args()
    env = {"LOG_LEVEL": "warning", "MINIO_ENDPOINT": "off"}
    with ExitStack() as stack:
        database_url = stack.enter_context(fresh_database(args.admin_url))
        hello_url, hello_pid = stack.enter_context(hello_server())
        targets = {"quart-trio hello world": (hello_url, hello_pid)}
        if args.before:
            before = stack.enter_context(stories_server(database_url, env, checkout=args.before, port=free_port()))
            targets["stories 404 (before)"] = (before.base_url + "/no/such/route", before.pid)
        ours = stack.enter_context(stories_server(database_url, env, port=free_port()))
        targets["stories 404"] = (ours.base_url + "/no/such/route", ours.pid)
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
        for run in range(1, args.runs + 1):
            for name, (url, pid) in targets.items():
                rps, cpu = measure(url, pid, args.duration, args.connections)
                results[name].append((rps, cpu))
                print(f"run {run} {name:<24} {rps:8.0f} req/s {cpu:8.0f} µs CPU/request")
    lines = ["| target | req/s (median) | server CPU µs/request (median) |", "| --- | --- | --- |"]
    medians = {}
    for name, rows in results.items():
        medians[name] = statistics.median(cpu for _, cpu in rows)
        lines.append(f"| {name} | {statistics.median(rps for rps, _ in rows):.0f} | {medians[name]:.0f} |")
    lines.append("")
    for name in medians:
        if name.startswith("stories"):
            ratio = medians[name] / medians["quart-trio hello world"]
            lines.append(f"{name} / hello world, CPU per request: **{ratio:.2f}x** ({args.runs} interleaved runs)  ")
    print("\n".join(lines))
    if args.report:
        args.report.write_text("# The floor: a 404 against a Quart-Trio hello world\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
