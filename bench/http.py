"""HTTP load benchmark: the eight scenarios of the load profile, driven by wrk against two or more targets.

    .venv/bin/python -m bench.http --build before=/tmp/stories-baseline --build after=. --dataset 5k
    .venv/bin/python -m bench.http --build before=/tmp/stories-baseline --build after=. \\
        --runs 3 --duration 15s --report bench/http.md --plots bench/http_plots
    .venv/bin/python -m bench.http --build a=. --build b=. --env FEED_CACHE_SECONDS=0 --env WORKERS=2
    taskset -c 1 .venv/bin/python -m bench.http --build n1=. --build n2=. --build-env n2:WORKERS=2 --pin n1=0 --pin n2=0
    .venv/bin/python -m bench.http --url mine=http://127.0.0.1:5000@4242 --build after=. --seed-tag bench
    .venv/bin/python -m bench.http --build before=/tmp/stories-baseline --build after=. --soak 600

Targets:
  --build NAME=DIR   a checkout of this project. The bench creates a database on --admin-url, seeds it with
                     that checkout's `stories seed` (--dataset), starts that checkout's `stories serve` with this
                     virtualenv's packages on 127.0.0.1 and a free port, and at the end stops it (SIGTERM) and
                     drops the database. Every build gets its own (identically seeded) database.
  --url NAME=URL[@PID]  a running deployment speaking API.md. It must hold the seeded users
                     `<seed-tag>-000000@example.com` ... (password `seed-password`: `stories seed --tag <seed-tag>`)
                     and allow many stories and reactions per minute; with PID its CPU and RSS are sampled
                     (summed over its process tree). Only loopback URLs unless --allow-remote.

Per target the bench logs in --users seeded users, collects the stories each can see from its feed (and their
authors), and writes them for the wrk script (bench/http_lua/stories.lua). Then, run by run, targets interleaved
(A run 1, B run 1, A run 2, ...), each target gets a --warmup of the mixed scenario and every scenario for
--duration: feed, tray, author_stories, story_get, view, react, create, mixed (55/10/5/15/8/5/2 %: a client opens
the feed or the tray, then reads, views and reacts to stories). Per run it records req/s, latency p50/p90/p99,
status counts, socket errors, server CPU and PostgreSQL CPU per request, and server RSS before and after. After
the warm-up and each run, a --build target's database loses the stories that run created (their views and
reactions with them), so every run reads what the seed wrote; a --url target's data grows run by run.
Medians over the runs are printed and written to --json (default bench/results/http-<time>.json),
--report (markdown) and --plots (PNGs, needs matplotlib: pip install -e '.[bench]').

--hot makes every user view and react to one public story created for the run (500 concurrent viewers
of one story: `--hot --scenarios view,react --connections 500`), to show whether its counter row queues them.

--soak SECONDS replaces the scenario runs: the mixed scenario at saturation on each target in turn, RSS
sampled every 2 s against requests served; it reports RSS growth per 70,000 requests after warm-up.

Needs wrk (apt-get install wrk). The client shares the machine with the servers and PostgreSQL: compare
targets measured in one invocation, not numbers across machines or days.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import orjson
import trio

from bench.pgbouncer import pgbouncer_binary, running_pgbouncer
from bench.server import DEFAULT_ADMIN_URL, free_port, fresh_database, run_sql, stories_env, stories_server

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

# A logged-in user for the wrk script: token, the story ids it may see, their authors.
UserData = tuple[str, list[str], list[str]]
SCENARIOS = ("feed", "tray", "author_stories", "story_get", "view", "react", "create", "mixed")
SEED_PASSWORD = "seed-password"  # stories.seed.DEFAULT_SEED_PASSWORD
LUA_SCRIPT = Path(__file__).resolve().with_name("http_lua") / "stories.lua"
RESULTS_DIR = Path(__file__).resolve().with_name("results")
SERVER_ENV = {
    "BCRYPT_COST": "4",
    # The most the settings accept: far above what the driven users reach, even at thousands of req/s.
    "RATE_LIMIT_STORIES_PER_MINUTE": "100000",
    "RATE_LIMIT_REACTIONS_PER_MINUTE": "100000",
    # With a fixed PORT the bench waits on /healthz, so the listening line (info) is not needed; at warning
    # the per-request `http.request` line is filtered before it is rendered.
    "LOG_LEVEL": "warning",
    # No embedded object store: it would be a child process that the CPU and RSS sums would count.
    "MINIO_ENDPOINT": "off",
}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
NON_2XX_LIMIT = 0.01  # a row with more failures than this share measures errors, not the service
SETUP_CONCURRENCY = 16
SEED_TIMEOUT_SECONDS = 900
WRK_TIMEOUT = "10s"  # the service's own REQUEST_TIMEOUT_SECONDS default
WRK_GRACE_SECONDS = 60
SOAK_SAMPLE_SECONDS = 2.0
SOAK_WARMUP_SHARE = 0.2  # RSS growth is measured from this share of the soak's duration on
SOAK_GROWTH_REQUESTS = 70_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Dataset:
    users: int
    stories: int
    follows_per_user: int


ERROR_LINES_SHOWN = 5
ERROR_LINE_CHARS = 600
# A --pooled target's PgBouncer keeps as many server connections as the server's pool (DB_POOL_SIZE's default):
# the comparison is of the path, not of fewer connections.
POOLER_SERVER_CONNECTIONS = 10
DATASETS = {"5k": Dataset(users=500, stories=5_000, follows_per_user=30), "50k": Dataset(2_000, 50_000, 50)}


@dataclass(frozen=True)
class TargetSpec:
    """A target as given on the command line: a checkout to build (`checkout`) or a running `base_url`."""

    name: str
    checkout: Path | None = None
    base_url: str | None = None
    pid: int | None = None


@dataclass(frozen=True)
class Endpoint:
    """Where a target answers, and what the bench knows about its processes."""

    base_url: str
    pid: int | None  # the server's process (its tree is sampled); None: no CPU or RSS figures
    database: str | None  # the bench database: scopes PostgreSQL CPU to its backends (None: every postgres)
    log_path: Path | None
    source: str  # the checkout (and its commit) or the URL, for the report
    pooler_pid: int | None = None  # the PgBouncer in front of its database (--pooled), sampled apart
    database_url: str | None = None  # the bench database (--build): each run's stories are deleted after it


@dataclass(frozen=True)
class Target:
    """A target ready to be measured."""

    name: str
    endpoint: Endpoint
    data_path: Path  # the wrk script's users and stories
    written_after: datetime | None = None  # stories created after it are the runs' own (`forget_writes`)


@dataclass(frozen=True)
class WrkOptions:
    connections: int
    threads: int
    warmup: float
    duration: float


@dataclass(frozen=True)
class WrkResult:
    """What the wrk script's done() printed; latencies in microseconds."""

    requests: int
    duration_us: int
    p50_us: int
    p90_us: int
    p99_us: int
    max_us: int
    statuses: dict[str, int]
    socket_errors: dict[str, int]

    @property
    def non_2xx(self) -> int:
        return sum(count for status, count in self.statuses.items() if not status.startswith("2"))

    @property
    def failures(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())


@dataclass(frozen=True)
class Usage:
    """Cumulative CPU seconds and current RSS; None where the process cannot be seen."""

    server_cpu: float | None
    server_rss: int | None
    pg_cpu: float | None
    client_cpu: float  # this process's finished children (wrk)
    machine_busy: float  # every CPU's non-idle time (/proc/stat)
    pooler_cpu: float | None = None


@dataclass(frozen=True)
class Row:
    """One target, one scenario, one run."""

    target: str
    scenario: str
    run: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int
    statuses: dict[str, int]
    socket_errors: dict[str, int]
    server_cpu_us: float | None
    pg_cpu_us: float | None
    client_cpu_us: float | None  # wrk
    other_cores: float | None  # CPU used by other processes during the run, in cores
    rss_before: int | None
    rss_after: int | None
    pooler_cpu_us: float | None = None  # PgBouncer's (--pooled targets)

    @property
    def failure_share(self) -> float:
        return (self.non_2xx + sum(self.socket_errors.values())) / max(self.requests, 1)


@dataclass(frozen=True)
class Summary:
    """Medians over the runs of one target and scenario; `flagged` when any run had too many failures."""

    target: str
    scenario: str
    runs: int
    rps: float
    p50_ms: float
    p99_ms: float
    server_cpu_us: float | None
    pg_cpu_us: float | None
    other_cores: float | None
    rss_after: int | None
    non_2xx: int
    socket_errors: int
    flagged: bool
    rps_all: list[float]
    pooler_cpu_us: float | None = None


@dataclass(frozen=True)
class SoakSample:
    seconds: float
    requests: int
    rss: int


@dataclass(frozen=True)
class Soak:
    target: str
    samples: list[SoakSample]
    requests: int
    rps: float
    non_2xx: int
    socket_errors: int

    def growth_per_requests(self) -> tuple[SoakSample, float]:
        """The first sample after warm-up and the RSS growth (bytes) per SOAK_GROWTH_REQUESTS from it on."""
        end = self.samples[-1]
        start = next(s for s in self.samples if s.seconds >= end.seconds * SOAK_WARMUP_SHARE)
        served = end.requests - start.requests
        return start, (end.rss - start.rss) * SOAK_GROWTH_REQUESTS / served if served > 0 else 0.0


# --- processes --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    comm: str
    cpu_ticks: int  # utime + stime + the reaped children's cutime + cstime
    rss_pages: int


def processes() -> dict[int, Proc]:
    """Every process this user can see, from /proc/<pid>/stat."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it exited while we looked
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
        found[int(entry.name)] = Proc(int(entry.name), int(fields[1]), comm, ticks, int(fields[21]))
    return found


def process_tree(procs: dict[int, Proc], root: int) -> list[Proc]:
    """`root` and all its descendants (`stories serve --workers N` forks children)."""
    children: dict[int, list[int]] = {}
    for proc in procs.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in procs:
            tree.append(procs[pid])
            todo.extend(children.get(pid, []))
    return tree


def postgres_processes(procs: dict[int, Proc], database: str | None) -> list[Proc]:
    """PostgreSQL processes; with `database`, only those whose title names it (its backends and autovacuum)."""
    found = []
    for proc in procs.values():
        if proc.comm != "postgres":
            continue
        if database is None or database in _cmdline(proc.pid):
            found.append(proc)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def usage(target: Target) -> Usage:
    procs = processes()
    postgres = postgres_processes(procs, target.endpoint.database)
    pg_cpu = sum(p.cpu_ticks for p in postgres) / CLOCK_TICKS if postgres else None
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    pooler = procs.get(target.endpoint.pooler_pid or -1)
    server_cpu: float | None = None
    server_rss: int | None = None
    pid = target.endpoint.pid
    if pid is not None and pid in procs:
        tree = process_tree(procs, pid)
        server_cpu = sum(p.cpu_ticks for p in tree) / CLOCK_TICKS
        server_rss = sum(p.rss_pages for p in tree) * PAGE_SIZE
    return Usage(
        server_cpu=server_cpu,
        server_rss=server_rss,
        pg_cpu=pg_cpu,
        client_cpu=children.ru_utime + children.ru_stime,
        machine_busy=machine_busy(),
        pooler_cpu=None if pooler is None else pooler.cpu_ticks / CLOCK_TICKS,
    )


def machine_busy() -> float:
    """CPU seconds all cores spent not idle (user, nice, system, irq, softirq, steal) since boot."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def other_cores(before: Usage, after: Usage, seconds: float) -> float | None:
    """Cores busy with anything but the server, its PostgreSQL backends and wrk: the noise of a shared box."""
    if before.server_cpu is None or after.server_cpu is None:
        return None
    ours = (after.server_cpu - before.server_cpu) + (after.client_cpu - before.client_cpu)
    ours += (after.pg_cpu or 0.0) - (before.pg_cpu or 0.0) + (after.pooler_cpu or 0.0) - (before.pooler_cpu or 0.0)
    return max(0.0, (after.machine_busy - before.machine_busy - ours) / seconds)


def server_rss(target: Target) -> int:
    """The server tree's RSS now (the soak needs a PID)."""
    rss = usage(target).server_rss
    if rss is None:
        raise RuntimeError(f"{target.name}: no server process to sample (give --url NAME=URL@PID)")
    return rss


# --- targets ----------------------------------------------------------------------------------------------


def parse_build(raw: str) -> TargetSpec:
    name, _, directory = raw.partition("=")
    checkout = Path(directory).resolve()
    if not name or not (checkout / "stories" / "__main__.py").is_file():
        raise argparse.ArgumentTypeError(f"--build wants NAME=DIR with DIR a checkout of this project: {raw!r}")
    return TargetSpec(name=name, checkout=checkout)


def parse_url(raw: str) -> TargetSpec:
    match = re.fullmatch(r"([^=]+)=(https?://[^@]+?)(?:@(\d+))?/?", raw)
    if not match:
        raise argparse.ArgumentTypeError(f"--url wants NAME=http://HOST:PORT[@PID]: {raw!r}")
    name, base_url, pid = match.groups()
    return TargetSpec(name=name, base_url=base_url, pid=int(pid) if pid else None)


def parse_env(raw: str) -> tuple[str, str]:
    key, sep, value = raw.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--env wants K=V: {raw!r}")
    return key, value


def parse_build_env(raw: str) -> tuple[str, str, str]:
    name, sep, assignment = raw.partition(":")
    key, equals, value = assignment.partition("=")
    if not (name and sep and key and equals):
        raise argparse.ArgumentTypeError(f"--build-env wants NAME:K=V: {raw!r}")
    return name, key, value


def parse_pin(raw: str) -> tuple[str, frozenset[int]]:
    """NAME=CPUS, CPUS as taskset -c writes them: 0, 0,1 or 0-1."""
    name, _, cpus = raw.partition("=")
    try:
        return name, parse_cpus(cpus)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--pin wants NAME=CPUS (0, 0,1 or 0-1): {raw!r}") from None


def parse_cpus(raw: str) -> frozenset[int]:
    cpus: set[int] = set()
    for part in raw.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    if not cpus or max(cpus) >= (os.cpu_count() or 1):
        raise ValueError(raw)
    return frozenset(cpus)


@contextmanager
def spawning_on(cpus: frozenset[int] | None) -> Iterator[None]:
    """Processes started inside run on `cpus` (they inherit this process's affinity; their children and threads
    too); this process's own affinity is restored on the way out."""
    if cpus is None:
        yield
        return
    own = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, own)


def parse_seconds(raw: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m)?", raw)
    if not match:
        raise argparse.ArgumentTypeError(f"a duration like 20s, 1m or 20: {raw!r}")
    return float(match[1]) * (60 if match[2] == "m" else 1)


def git_describe(checkout: Path) -> str:
    """`<commit>` or `<commit>+dirty` of a checkout (read-only: no index refresh)."""

    def git(*args: str) -> str:
        run = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(checkout), *args], capture_output=True, text=True, check=False
        )
        return run.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return f"{commit}+dirty" if git("status", "--porcelain", "--untracked-files=no") else commit


def seed(checkout: Path, database_url: str, dataset: Dataset, tag: str) -> None:
    """The checkout's own `stories seed` (it migrates first) on the target's database."""
    command = [
        sys.executable,
        "-m",
        "stories",
        "seed",
        f"--users={dataset.users}",
        f"--stories={dataset.stories}",
        f"--follows-per-user={dataset.follows_per_user}",
        f"--tag={tag}",
    ]
    with tempfile.TemporaryDirectory(prefix="stories-seed-") as data_dir:
        env = stories_env(database_url, Path(data_dir), SERVER_ENV, checkout=checkout)
        done = subprocess.run(
            command, env=env, cwd=checkout, capture_output=True, text=True, timeout=SEED_TIMEOUT_SECONDS, check=False
        )
    if done.returncode != 0:
        raise RuntimeError(f"stories seed in {checkout} exited with {done.returncode}: {done.stderr[-2000:]}")
    print(f"  {done.stdout.strip()}")


@contextmanager
def build_target(spec: TargetSpec, args: argparse.Namespace) -> Iterator[Endpoint]:
    """Database, seed and server of one --build."""
    assert spec.checkout is not None
    with fresh_database(args.admin_url) as database_url:
        database = urlsplit(database_url).path.lstrip("/")
        print(f"{spec.name}: seeding {database} with {spec.checkout} ({args.dataset})")
        seed(spec.checkout, database_url, DATASETS[args.dataset], args.seed_tag)
        own_env = {key: value for name, key, value in args.build_env if name == spec.name}
        env = {**SERVER_ENV, **dict(args.env), **own_env}
        cpus = dict(args.pin).get(spec.name)
        with ExitStack() as stack:
            served_url, pooler_pid = database_url, None
            if spec.name in args.uncached:
                # Another spelling of the same server: the service takes it for a pooler's other side and turns
                # its statement cache off, with no pooler in the path.
                env["DATABASE_DIRECT_URL"] = f"{database_url}?application_name=stories-direct"
            if spec.name in args.pooled:
                bouncer = stack.enter_context(running_pgbouncer(database_url, pool_size=POOLER_SERVER_CONNECTIONS))
                served_url, pooler_pid = bouncer.url_for(database_url), bouncer.pid
                env["DATABASE_DIRECT_URL"] = database_url
                print(f"{spec.name}: through PgBouncer (transaction mode) on port {bouncer.port} (pid {bouncer.pid})")
            with spawning_on(cpus):
                server = stack.enter_context(stories_server(served_url, env, checkout=spec.checkout, port=free_port()))
            extras = [f"{key}={value}" for key, value in own_env.items()]
            extras += [f"on CPUs {','.join(map(str, sorted(cpus)))}"] if cpus else []
            source = f"{spec.checkout} @ {git_describe(spec.checkout)}" + (f" ({', '.join(extras)})" if extras else "")
            print(f"{spec.name}: serving {source} on {server.base_url} (pid {server.pid})")
            yield Endpoint(server.base_url, server.pid, database, server.log_path, source, pooler_pid, database_url)


def open_target(stack: ExitStack, spec: TargetSpec, args: argparse.Namespace, workdir: Path) -> Target:
    if spec.checkout is not None:
        endpoint = stack.enter_context(build_target(spec, args))
    else:
        assert spec.base_url is not None
        endpoint = Endpoint(spec.base_url, spec.pid, None, None, spec.base_url)
    data_path = workdir / f"{spec.name}.users"
    users = trio.run(prepare_users, endpoint.base_url, args.seed_tag, args.users, args.feed_pages)
    if args.hot:
        hot = trio.run(hot_story, endpoint.base_url, users[0][0])
        print(f"  --hot: every user drives story {hot}")
        users = [(token, [hot], authors) for token, _, authors in users]
    write_users(data_path, users)
    return Target(spec.name, endpoint, data_path, datetime.now(UTC) if endpoint.database_url else None)


def forget_writes(target: Target) -> int:
    """Delete the stories the runs created (their views and reactions go with them), so that every run reads what
    the seed wrote: a create run adds some 3,000 stories to what the next runs read, and two targets' reads would
    drift apart with their write throughput (bench/http.md, "A fixed dataset per run"). A create still in flight
    when wrk stopped may commit after this: the next call deletes it. Not for a --url target: its database is not
    the bench's."""
    if target.endpoint.database_url is None or target.written_after is None:
        return 0
    status = run_sql(target.endpoint.database_url, f"DELETE FROM stories WHERE created_at > '{target.written_after}'")
    return int(status.split()[-1])


def error_lines(target: Target) -> list[str]:
    """The error lines the server logged (build targets only)."""
    log_path = target.endpoint.log_path
    if log_path is None or not log_path.exists():
        return []
    return [line.decode(errors="replace") for line in log_path.read_bytes().splitlines() if b'"level":"error"' in line]


def log_errors(target: Target) -> int:
    return len(error_lines(target))


# --- preparation ------------------------------------------------------------------------------------------


async def login(http: httpx.AsyncClient, limiter: trio.CapacityLimiter, email: str) -> str:
    async with limiter:
        response = await http.post("/login", json={"email": email, "password": SEED_PASSWORD})
    if response.status_code != 200:
        raise RuntimeError(f"login {email}: {response.status_code} {response.text[:200]} (is it seeded?)")
    return str(response.json()["token"])


async def visible_stories(
    http: httpx.AsyncClient, limiter: trio.CapacityLimiter, token: str, pages: int
) -> tuple[list[str], list[str]]:
    """The ids of up to `pages` feed pages of 100 (the newest stories this user may see), and their authors."""
    ids: list[str] = []
    authors: dict[str, None] = {}
    cursor = None
    for _ in range(pages):
        params: dict[str, str | int] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        async with limiter:
            response = await http.get("/feed", params=params, headers={"Authorization": f"Bearer {token}"})
        response.raise_for_status()
        page = response.json()
        ids.extend(story["id"] for story in page["stories"])
        authors.update(dict.fromkeys(story["author_id"] for story in page["stories"]))
        cursor = page["next_cursor"]
        if cursor is None:
            break
    return ids, list(authors)


async def prepare_users(base_url: str, tag: str, count: int, pages: int) -> list[UserData]:
    """Log in seeded users 0..count-1 and collect the stories each may see: [(token, story ids, author ids)]."""
    users: list[UserData] = [("", [], [])] * count
    limiter = trio.CapacityLimiter(SETUP_CONCURRENCY)

    async def one(index: int) -> None:
        token = await login(http, limiter, f"{tag}-{index:06d}@example.com")
        users[index] = (token, *await visible_stories(http, limiter, token, pages))

    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http, trio.open_nursery() as nursery:
        for index in range(count):
            nursery.start_soon(one, index)
    return users


async def hot_story(base_url: str, token: str) -> str:
    """A public story created for this run: with --hot, every user's views and reactions go to it."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        response = await http.post(
            "/stories",
            json={"text": "the hot story", "visibility": "public"},
            headers={"Authorization": f"Bearer {token}"},
        )
    response.raise_for_status()
    return str(response.json()["id"])


def write_users(path: Path, users: list[UserData]) -> None:
    """The wrk script's data: one line per user, `<token>\\t<story id> <story id> ...\\t<author id> ...`."""
    path.write_text("".join(f"{token}\t{' '.join(ids)}\t{' '.join(authors)}\n" for token, ids, authors in users))
    stories = sum(len(ids) for _, ids, _ in users)
    print(f"  logged in {len(users)} users; {stories} (user, visible story) pairs")


# --- wrk --------------------------------------------------------------------------------------------------


def wrk_command(target: Target, scenario: str, seconds: float, opts: WrkOptions, progress: Path | None) -> list[str]:
    return [
        "wrk",
        f"--threads={opts.threads}",
        f"--connections={opts.connections}",
        f"--duration={seconds:g}s",
        f"--timeout={WRK_TIMEOUT}",
        f"--script={LUA_SCRIPT}",
        target.endpoint.base_url,
        "--",
        str(target.data_path),
        scenario,
        *([str(progress)] if progress else []),
    ]


def parse_wrk(stdout: str, stderr: str) -> WrkResult:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"wrk printed no result: {stdout[-1000:]} {stderr[-1000:]}")
    return WrkResult(**orjson.loads(lines[-1]))


def run_wrk(target: Target, scenario: str, seconds: float, opts: WrkOptions) -> WrkResult:
    command = wrk_command(target, scenario, seconds, opts, None)
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + WRK_GRACE_SECONDS, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr[-2000:]}")
    return parse_wrk(done.stdout, done.stderr)


def per_request_us(before: float | None, after: float | None, requests: int) -> float | None:
    if before is None or after is None or requests == 0:
        return None
    return (after - before) * 1e6 / requests


def measure(target: Target, scenario: str, run: int, opts: WrkOptions) -> Row:
    before = usage(target)
    result = run_wrk(target, scenario, opts.duration, opts)
    after = usage(target)
    seconds = result.duration_us / 1e6
    return Row(
        target=target.name,
        scenario=scenario,
        run=run,
        requests=result.requests,
        seconds=seconds,
        rps=result.requests / seconds,
        p50_ms=result.p50_us / 1000,
        p90_ms=result.p90_us / 1000,
        p99_ms=result.p99_us / 1000,
        max_ms=result.max_us / 1000,
        non_2xx=result.non_2xx,
        statuses=result.statuses,
        socket_errors=result.socket_errors,
        server_cpu_us=per_request_us(before.server_cpu, after.server_cpu, result.requests),
        pg_cpu_us=per_request_us(before.pg_cpu, after.pg_cpu, result.requests),
        client_cpu_us=per_request_us(before.client_cpu, after.client_cpu, result.requests),
        other_cores=other_cores(before, after, seconds),
        rss_before=before.server_rss,
        rss_after=after.server_rss,
        pooler_cpu_us=per_request_us(before.pooler_cpu, after.pooler_cpu, result.requests),
    )


def run_matrix(targets: Sequence[Target], scenarios: Sequence[str], runs: int, opts: WrkOptions) -> list[Row]:
    """Run by run, target after target (interleaved), a warm-up then every scenario."""
    rows = []
    for run in range(1, runs + 1):
        for target in targets:
            run_wrk(target, "mixed", opts.warmup, opts)
            forget_writes(target)
            for scenario in scenarios:
                row = measure(target, scenario, run, opts)
                forgotten = forget_writes(target)
                print(
                    f"run {run} {target.name:>10} {scenario:<9} {row.rps:8.1f} req/s  p50 {row.p50_ms:6.1f} ms"
                    f"  p99 {row.p99_ms:6.1f} ms  non-2xx {row.non_2xx}  server {fmt(row.server_cpu_us)} µs/req"
                    f"  pg {fmt(row.pg_cpu_us)} µs/req"
                    + ("" if row.pooler_cpu_us is None else f"  pgbouncer {fmt(row.pooler_cpu_us)} µs/req")
                    + (f"  ({forgotten} stories of the run deleted)" if forgotten else "")
                )
                rows.append(row)
    return rows


# --- soak -------------------------------------------------------------------------------------------------


def progress_requests(prefix: Path) -> int:
    """Responses the wrk threads have reported so far (each writes its count to <prefix>.<thread>)."""
    paths = [path for path in prefix.parent.glob(f"{prefix.name}.*") if path.suffix[1:].isdigit()]
    return sum(int(path.read_text()) for path in paths)


def soak(target: Target, seconds: float, opts: WrkOptions, workdir: Path) -> Soak:
    """The mixed scenario for `seconds`, RSS and requests served sampled every SOAK_SAMPLE_SECONDS."""
    run_wrk(target, "mixed", opts.warmup, opts)
    prefix = workdir / f"{target.name}.progress"
    command = wrk_command(target, "mixed", seconds, opts, prefix)
    samples = [SoakSample(0.0, 0, server_rss(target))]
    started = time.monotonic()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        while process.poll() is None and time.monotonic() - started < seconds + WRK_GRACE_SECONDS:
            time.sleep(SOAK_SAMPLE_SECONDS - (time.monotonic() - started) % SOAK_SAMPLE_SECONDS)
            if process.poll() is None:
                samples.append(SoakSample(time.monotonic() - started, progress_requests(prefix), server_rss(target)))
        if process.poll() is None:
            process.kill()
        stdout, stderr = process.communicate()
    result = parse_wrk(stdout, stderr)
    samples.append(SoakSample(time.monotonic() - started, result.requests, server_rss(target)))
    return Soak(
        target=target.name,
        samples=samples,
        requests=result.requests,
        rps=result.requests / (result.duration_us / 1e6),
        non_2xx=result.non_2xx,
        socket_errors=sum(result.socket_errors.values()),
    )


# --- summaries and output ---------------------------------------------------------------------------------


def median_of(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(rows: Sequence[Row], targets: Sequence[str], scenarios: Sequence[str]) -> list[Summary]:
    summaries = []
    for scenario in scenarios:
        for target in targets:
            runs = [r for r in rows if r.target == target and r.scenario == scenario]
            summaries.append(
                Summary(
                    target=target,
                    scenario=scenario,
                    runs=len(runs),
                    rps=statistics.median(r.rps for r in runs),
                    p50_ms=statistics.median(r.p50_ms for r in runs),
                    p99_ms=statistics.median(r.p99_ms for r in runs),
                    server_cpu_us=median_of([r.server_cpu_us for r in runs]),
                    pg_cpu_us=median_of([r.pg_cpu_us for r in runs]),
                    other_cores=median_of([r.other_cores for r in runs]),
                    rss_after=runs[-1].rss_after,
                    non_2xx=sum(r.non_2xx for r in runs),
                    socket_errors=sum(sum(r.socket_errors.values()) for r in runs),
                    flagged=any(r.failure_share > NON_2XX_LIMIT for r in runs),
                    rps_all=[r.rps for r in runs],
                    pooler_cpu_us=median_of([r.pooler_cpu_us for r in runs]),
                )
            )
    return summaries


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f}"


def ratio(new: float | None, old: float | None) -> str:
    return "n/a" if new is None or not old else f"{new / old:.2f}x"


TABLE_HEADER = (
    "scenario",
    "target",
    "req/s",
    "p50 ms",
    "p99 ms",
    "server µs/req",
    "PG µs/req",
    "non-2xx",
    "RSS MiB",
    "other cores",
)


def summary_cells(s: Summary) -> list[str]:
    flag = " (!)" if s.flagged else ""
    return [
        s.scenario,
        s.target + flag,
        f"{s.rps:.1f}",
        f"{s.p50_ms:.1f}",
        f"{s.p99_ms:.1f}",
        fmt(s.server_cpu_us),
        fmt(s.pg_cpu_us),
        str(s.non_2xx + s.socket_errors),
        mib(s.rss_after),
        "n/a" if s.other_cores is None else f"{s.other_cores:.2f}",
    ]


def ratio_cells(new: Summary, base: Summary) -> list[str]:
    return [
        "",
        f"{new.target}/{base.target}",
        ratio(new.rps, base.rps),
        ratio(new.p50_ms, base.p50_ms),
        ratio(new.p99_ms, base.p99_ms),
        ratio(new.server_cpu_us, base.server_cpu_us),
        ratio(new.pg_cpu_us, base.pg_cpu_us),
        "",
        "",
        "",
    ]


def table_rows(summaries: Sequence[Summary], scenario: str) -> list[list[str]]:
    group = [s for s in summaries if s.scenario == scenario]
    return [summary_cells(s) for s in group] + [ratio_cells(s, group[0]) for s in group[1:]]


def print_table(summaries: Sequence[Summary], scenarios: Sequence[str]) -> None:
    """Medians per scenario and target, then each other target's ratio to the first; names left-aligned."""
    if not summaries:
        return
    rows = [list(TABLE_HEADER)] + [row for scenario in scenarios for row in table_rows(summaries, scenario)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_HEADER))]
    for row in rows:
        cells = [cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        print("  ".join(cells))


def soak_lines(soaks: Sequence[Soak]) -> list[str]:
    lines = []
    for s in soaks:
        start, growth = s.growth_per_requests()
        end = s.samples[-1]
        lines.append(
            f"{s.target}: {s.requests} requests in {end.seconds:.0f} s ({s.rps:.1f} req/s, "
            f"{s.non_2xx + s.socket_errors} failed); RSS {mib(s.samples[0].rss)} MiB at start, "
            f"{mib(start.rss)} MiB after warm-up ({start.seconds:.0f} s), {mib(end.rss)} MiB at the end; "
            f"growth after warm-up {growth / 2**20:.1f} MiB per {SOAK_GROWTH_REQUESTS:,} requests"
        )
    return lines


def markdown_table(rows: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(rows[0]) + " |",
        "|" + "|".join(" --- " for _ in rows[0]) + "|",
        *("| " + " | ".join(row) + " |" for row in rows[1:]),
    ]


def report_markdown(
    meta: dict[str, Any], summaries: Sequence[Summary], rows: Sequence[Row], soaks: Sequence[Soak], plots: list[Path]
) -> str:
    wrk = meta["wrk"]
    lines = [
        "# HTTP load benchmark",
        "",
        f"Measured {meta['date']} with `{meta['command']}`",
        f"on {meta['cpus']} CPUs (load average {meta['loadavg']} at start, {meta['loadavg_end']} at the end); "
        f"wrk {wrk['threads']} threads, {wrk['connections']} connections, {wrk['duration']:g} s per scenario "
        f"after a {wrk['warmup']:g} s mixed warm-up, {meta['runs']} interleaved run(s), medians reported. "
        f"Dataset `{meta['dataset']}` ({meta['dataset_plan']}); {meta['users']} logged-in users. "
        f"Server env: `{meta['server_env']}`.",
        "",
        "Targets:",
        "",
        *(f"- `{t['name']}`: {t['source']} ({t['log_errors']} error lines in its log)" for t in meta["targets"]),
        "",
        "CPU per request: the server's process tree (utime + stime) and the PostgreSQL backends of the target's "
        "own database, over the measured run, divided by the requests wrk completed. The client (wrk) runs "
        "on the same machine and takes CPU from both. `other cores`: CPU used during the run by everything else "
        "(other programs, PostgreSQL's shared background processes, the idle targets), in cores: the noise. "
        "`(!)` marks a row with more than 1 % non-2xx or socket errors in some run.",
        "",
    ]
    scenarios = list(dict.fromkeys(s.scenario for s in summaries))
    for scenario in scenarios:
        table = [list(TABLE_HEADER[1:]), *(row[1:] for row in table_rows(summaries, scenario))]
        lines += [f"## {scenario}", "", *markdown_table(table), ""]
    failures = [r for r in rows if r.non_2xx or any(r.socket_errors.values())]
    if failures:
        lines += ["## Failures", ""]
        lines += [f"- {r.target} {r.scenario} run {r.run}: {r.statuses}, socket {r.socket_errors}" for r in failures]
        lines.append("")
    if soaks:
        lines += ["## Memory soak (mixed, at saturation)", "", *(f"- {line}" for line in soak_lines(soaks)), ""]
    if plots:
        lines += ["## Plots", "", *(f"![{p.stem}]({p})" for p in plots), ""]
    return "\n".join(lines)


def write_plots(directory: Path, summaries: Sequence[Summary], soaks: Sequence[Soak]) -> list[Path]:
    """PNGs of the summaries (and soaks); matplotlib is imported only here."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    charts = [
        ("rps", "requests per second (bars: median, dots: runs)", lambda s: s.rps, lambda s: s.rps_all),
        ("p99", "p99 latency, ms (median)", lambda s: s.p99_ms, None),
        ("server_cpu", "server CPU per request, µs (median)", lambda s: s.server_cpu_us, None),
        ("pg_cpu", "PostgreSQL CPU per request, µs (median)", lambda s: s.pg_cpu_us, None),
    ]
    if summaries:
        for stem, title, value, runs in charts:
            figure = grouped_bars(pyplot, summaries, title, value, runs)
            written.append(save(pyplot, figure, directory / f"{stem}.png"))
    if soaks:
        written.append(save(pyplot, soak_figure(pyplot, soaks), directory / "soak_rss.png"))
    return written


def grouped_bars(pyplot: Any, summaries: Sequence[Summary], title: str, value: Any, runs: Any) -> Any:
    """One group of bars per scenario, one bar per target; with `runs`, each run's value as a dot."""
    scenarios = list(dict.fromkeys(s.scenario for s in summaries))
    targets = list(dict.fromkeys(s.target for s in summaries))
    figure, axes = pyplot.subplots(figsize=(9, 4.5))
    width = 0.8 / len(targets)
    for i, target in enumerate(targets):
        group = [s for sc in scenarios for s in summaries if s.scenario == sc and s.target == target]
        positions = [x + (i - (len(targets) - 1) / 2) * width for x in range(len(scenarios))]
        axes.bar(positions, [value(s) or 0 for s in group], width, label=target)
        if runs:
            for position, summary in zip(positions, group, strict=True):
                axes.scatter([position] * len(runs(summary)), runs(summary), color="black", s=8, zorder=3)
    axes.set_xticks(range(len(scenarios)), scenarios)
    axes.set_title(title)
    axes.legend()
    return figure


def soak_figure(pyplot: Any, soaks: Sequence[Soak]) -> Any:
    figure, axes = pyplot.subplots(figsize=(9, 4.5))
    for s in soaks:
        axes.plot([p.seconds for p in s.samples], [p.rss / 2**20 for p in s.samples], label=s.target)
    axes.set_xlabel("seconds")
    axes.set_ylabel("server RSS, MiB")
    axes.set_title("server RSS during the mixed soak")
    axes.legend()
    return figure


def save(pyplot: Any, figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


# --- main -------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--build", type=parse_build, action="append", default=[], metavar="NAME=DIR", help="a checkout to serve")
    add("--url", type=parse_url, action="append", default=[], metavar="NAME=URL[@PID]", help="a running server")
    add("--dataset", choices=sorted(DATASETS), default="5k", help="seed preset for --build targets (default 5k)")
    add("--seed-tag", default="bench", help="seeded emails are <tag>-000000@example.com ... (default bench)")
    add("--users", type=int, default=200, help="seeded users to log in and drive (default 200)")
    add("--feed-pages", type=int, default=3, help="feed pages of 100 read per user for story ids (default 3)")
    add("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset of " + ", ".join(SCENARIOS))
    add("--runs", type=int, default=3, help="runs per target and scenario, medians reported (default 3)")
    add("--duration", type=parse_seconds, default=20.0, help="per scenario and run (default 20s)")
    add("--warmup", type=parse_seconds, default=3.0, help="mixed warm-up per target and run (default 3s)")
    add("--connections", type=int, default=32, help="wrk connections (default 32)")
    add("--threads", type=int, default=2, help="wrk threads (default 2)")
    add("--hot", action="store_true", help="every user drives one public story (a hot row: view, react)")
    add("--pooled", action="append", default=[], metavar="NAME", help="serve build NAME through a PgBouncer")
    add("--uncached", action="append", default=[], metavar="NAME", help="build NAME without statement cache")
    add("--env", type=parse_env, action="append", default=[], metavar="K=V", help="extra server env (builds)")
    add("--build-env", type=parse_build_env, action="append", default=[], metavar="NAME:K=V", help="env of build NAME")
    add("--pin", type=parse_pin, action="append", default=[], metavar="NAME=CPUS", help="build NAME's server CPUs")
    add("--admin-url", default=DEFAULT_ADMIN_URL, help="PostgreSQL to create the bench databases on")
    add("--soak", type=float, metavar="SECONDS", help="memory soak instead of the scenario runs")
    add("--json", type=Path, help="raw results (default bench/results/http-<time>.json)")
    add("--report", type=Path, help="write a markdown report here")
    add("--plots", type=Path, metavar="DIR", help="write PNG plots here (needs matplotlib)")
    add("--allow-remote", action="store_true", help="allow --url targets that are not on loopback")
    args = parser.parse_args(argv)
    check_args(parser, args)
    return args


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    specs = [*args.build, *args.url]
    names = [spec.name for spec in specs]
    if not specs or len(set(names)) != len(names):
        parser.error("give one or more targets (--build / --url) with distinct names")
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    for spec in args.url:
        if urlsplit(spec.base_url).hostname not in LOOPBACK_HOSTS and not args.allow_remote:
            parser.error(f"{spec.base_url} is not on loopback (pass --allow-remote to measure it anyway)")
    if args.soak and any(spec.pid is None for spec in args.url):
        parser.error("--soak samples the server's RSS: give every --url target a PID (NAME=URL@PID)")
    if args.build and args.users > DATASETS[args.dataset].users:
        parser.error(f"--users {args.users} > the {args.dataset} dataset's {DATASETS[args.dataset].users} users")
    if args.runs < 1 or args.users < 1 or args.feed_pages < 1:
        parser.error("--runs, --users and --feed-pages must be >= 1")
    pinned = [name for name, _ in args.pin] + [name for name, _, _ in args.build_env]
    if set(args.pooled + args.uncached + pinned) - {spec.name for spec in args.build}:
        parser.error("--pooled, --uncached, --build-env and --pin name --build targets")
    if args.pooled and pgbouncer_binary() is None:
        parser.error("pgbouncer is not installed (apt-get install pgbouncer)")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install wrk)")


def wrk_version() -> str:
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return (done.stdout + done.stderr).split("Copyright")[0].strip()


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def metadata(
    args: argparse.Namespace, targets: Sequence[Target], opts: WrkOptions, load_at_start: str
) -> dict[str, Any]:
    """What the report says about the setup; taken after the runs, so the server logs are complete."""
    dataset = DATASETS[args.dataset]
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python -m bench.http", *sys.argv[1:]]),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "loadavg": load_at_start,
        "loadavg_end": loadavg(),
        "wrk": {"version": wrk_version(), **asdict(opts)},
        "runs": args.runs,
        "dataset": args.dataset,
        "dataset_plan": f"{dataset.users} users, {dataset.stories} stories, {dataset.follows_per_user} follows/user",
        "users": args.users,
        "server_env": " ".join(f"{k}={v}" for k, v in {**SERVER_ENV, **dict(args.env)}.items()),
        "targets": [
            {"name": t.name, "source": t.endpoint.source, "base_url": t.endpoint.base_url, "log_errors": log_errors(t)}
            for t in targets
        ],
    }


def write_outputs(
    args: argparse.Namespace, meta: dict[str, Any], rows: list[Row], summaries: list[Summary], soaks: list[Soak]
) -> None:
    json_path = args.json or RESULTS_DIR / f"http-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "rows": rows, "summaries": summaries, "soaks": soaks, "soak_lines": soak_lines(soaks)}
    json_path.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
    print(f"results written to {json_path}")
    plots = write_plots(args.plots, summaries, soaks) if args.plots else []
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        links = [Path(os.path.relpath(p, args.report.parent)) for p in plots]
        args.report.write_text(report_markdown(meta, summaries, rows, soaks, links) + "\n")
        print(f"report written to {args.report}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    opts = WrkOptions(args.connections, args.threads, args.warmup, args.duration)
    scenarios = args.scenarios.split(",")
    rows: list[Row] = []
    soaks: list[Soak] = []
    load_at_start = loadavg()
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stories-http-")))  # holds tokens
        targets = [open_target(stack, spec, args, workdir) for spec in [*args.build, *args.url]]
        if args.soak:
            soaks = [soak(target, args.soak, opts, workdir) for target in targets]
        else:
            rows = run_matrix(targets, scenarios, args.runs, opts)
        meta = metadata(args, targets, opts, load_at_start)
        for target in targets:  # the server's log goes with its DATA_DIR: show what went wrong while it is here
            for line in error_lines(target)[:ERROR_LINES_SHOWN]:
                print(f"{target.name} logged: {line[:ERROR_LINE_CHARS]}")
    summaries = summarize(rows, [t.name for t in targets], scenarios) if rows else []
    print_table(summaries, scenarios)
    print("\n".join(soak_lines(soaks)))
    write_outputs(args, meta, rows, summaries, soaks)
    flagged = [f"{s.target} {s.scenario}" for s in summaries if s.flagged]
    flagged += [s.target + " soak" for s in soaks if (s.non_2xx + s.socket_errors) > NON_2XX_LIMIT * s.requests]
    if flagged:
        print(f"WARNING: more than 1 % non-2xx or socket errors in: {', '.join(flagged)}", file=sys.stderr)
    return 1 if flagged else 0


if __name__ == "__main__":
    sys.exit(main())
