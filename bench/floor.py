"""The floor: what a request costs before any work, ours against a Quart-Trio hello world (issue 12, item 5), and
what of hypercorn's own floor is set by how we run it (issue 19, item 2).

    .venv/bin/python -m bench.floor [--runs 5] [--duration 10] [--before DIR] [--targets ...] [--report PATH]

Starts, each on 127.0.0.1 and a free port:
- `quart`: a Quart-Trio app answering `GET /` with a small JSON body on hypercorn's trio worker (the stack's floor);
- `raw`: a raw ASGI app answering the same body on hypercorn's trio worker with its defaults (hypercorn's floor);
- `raw-ours`: the same raw ASGI app served the way the service serves (`stories.api.server.serve_http` with the
  default settings: our drain, our connection and protocol subclasses, our hypercorn configuration);
- `stories`: `stories serve` (LOG_LEVEL=warning, on a fresh database at --admin-url), whose `GET /no/such/route` is
  a 404 that touches nothing (no token needed, no database).
Then, run by run and interleaved, wrk at 32 connections against each; it reports req/s and the server's CPU per
request (utime + stime from /proc) as medians, and their ratio. With `--before DIR` (a checkout of this project,
e.g. `git worktree add /tmp/before HEAD~1`), that checkout's `raw-ours` and `stories` are measured too, in the same
runs: a change's before and after. `--targets raw,raw-ours` measures only those (no database is needed without
`stories`). Needs wrk (apt-get install wrk).
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
# The same answer without a framework; run as a script, it is served by the service's own server (serve_http).
RAW_APP = """
import sys

import trio

BODY = b'{"hello": "world"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


async def serve_ours(port):
    from stories.api.server import serve_http
    from stories.settings import Settings

    await serve_http(app, Settings(host="127.0.0.1", port=port), trio.Event())


if __name__ == "__main__":
    trio.run(serve_ours, int(sys.argv[1]))
"""
TARGETS = ("quart", "raw", "raw-ours", "stories")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time of `pid` and its descendants (hypercorn's command line serves from a worker process)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]
    return own + sum(cpu_seconds(child) for child in children)


@contextmanager
def app_server(kind: str, checkout: Path | None = None) -> Iterator[tuple[str, int]]:
    """(url, pid) of a hello world: `quart` or `raw` on hypercorn's command line (its trio worker, its defaults), or
    `raw-ours` served by `checkout`'s (default: this one's) serve_http."""
    port = free_port()
    env = dict(os.environ)
    if kind == "raw-ours":
        command = [sys.executable, "raw_hello.py", str(port)]
        if checkout is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(checkout.resolve()), env.get("PYTHONPATH")]))
    else:
        module = "hello:app" if kind == "quart" else "raw_hello:app"
        command = [sys.executable, "-m", "hypercorn", "--worker-class", "trio", "-b", f"127.0.0.1:{port}", module]
    with tempfile.TemporaryDirectory(prefix="stories-floor-") as directory:
        Path(directory, "hello.py").write_text(HELLO_APP)
        Path(directory, "raw_hello.py").write_text(RAW_APP)
        with subprocess.Popen(
            command, cwd=directory, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        ) as process:
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
    parser.add_argument("--before", type=Path, help="a checkout whose server is measured too (before a change)")
    parser.add_argument(
        "--targets", default=",".join(TARGETS), help=f"comma-separated, of {', '.join(TARGETS)} (default: all)"
    )
    parser.add_argument("--report", type=Path, help="write the table as markdown here")
    args = parser.parse_args()
    chosen = args.targets.split(",")
    if unknown := set(chosen) - set(TARGETS):
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    env = {"LOG_LEVEL": "warning", "MINIO_ENDPOINT": "off"}
    with ExitStack() as stack:
        targets: dict[str, tuple[str, int]] = {}
        if "quart" in chosen:
            targets["quart-trio hello world"] = stack.enter_context(app_server("quart"))
        if "raw" in chosen:
            targets["raw ASGI hello (hypercorn)"] = stack.enter_context(app_server("raw"))
        if "raw-ours" in chosen:
            if args.before:
                targets["raw ASGI hello (our server, before)"] = stack.enter_context(
                    app_server("raw-ours", args.before)
                )
            targets["raw ASGI hello (our server)"] = stack.enter_context(app_server("raw-ours"))
        if "stories" in chosen:
            database_url = stack.enter_context(fresh_database(args.admin_url))
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
                print(f"run {run} {name:<36} {rps:8.0f} req/s {cpu:8.0f} µs CPU/request")
    load = Path("/proc/loadavg").read_text().split()[:3]
    lines = ["| target | req/s (median) | server CPU µs/request (median) |", "| --- | --- | --- |"]
    medians = {}
    for name, rows in results.items():
        medians[name] = statistics.median(cpu for _, cpu in rows)
        lines.append(f"| {name} | {statistics.median(rps for rps, _ in rows):.0f} | {medians[name]:.0f} |")
    lines.append("")
    for name, base in ratios(list(medians)):
        ratio = medians[name] / medians[base]
        lines.append(f"{name} / {base}, CPU per request: **{ratio:.2f}x** ({args.runs} interleaved runs)  ")
    lines.append(f"load average at the end: {' '.join(load)}")
    print("\n".join(lines))
    if args.report:
        args.report.write_text("# bench/floor.py\n\n" + "\n".join(lines) + "\n")


def ratios(names: list[str]) -> list[tuple[str, str]]:
    """The (target, baseline) pairs worth a ratio: each server against the floor below it, and after against before."""
    pairs = []
    for name in names:
        if name.startswith("stories") and "quart-trio hello world" in names:
            pairs.append((name, "quart-trio hello world"))
        if name.startswith("raw ASGI hello (our") and "raw ASGI hello (hypercorn)" in names:
            pairs.append((name, "raw ASGI hello (hypercorn)"))
        before = name.replace(")", ", before)") if name.endswith(")") else f"{name} (before)"
        if before in names:
            pairs.append((name, before))
    return pairs


if __name__ == "__main__":
    main()
