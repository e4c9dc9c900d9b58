"""What N server processes cost PostgreSQL (and Redis): connections, LISTEN sessions, statements at rest, and the
event-log reads per realtime event, for `stories serve --workers N` at several N, with and without Redis.

    python -m bench.scaleout                                  # N = 2, 8, 32; PostgreSQL NOTIFY and Redis
    python -m bench.scaleout --workers 2,8 --transports redis --rest 30 --events 100

It starts a PostgreSQL cluster of its own (initdb in a temporary directory, a free port, `max_connections`
high enough for 32 processes, `pg_stat_statements` preloaded), so nothing else on the machine's server is
counted and its connection limit is not in the way, and a private redis-server. For each transport and N:
a fresh database, `stories serve --workers N` on it; once every process has its event tail (and, without Redis,
its two LISTEN sessions) it measures, from PostgreSQL's own views:
- connections by `application_name` and state (`pg_stat_activity`), and Redis clients (`INFO clients`);
- at rest (no requests) for `--rest` seconds: statements per second by kind (`pg_stat_statements`),
  transactions per second (`pg_stat_database`), the CPU of the service and of PostgreSQL;
- then `--events` reactions posted one by one at `--rate` per second (each a realtime event): how many event-log
  reads and wake-up NOTIFYs the relays ran per event, above the rest rate, across all processes.
Prints a table and writes it as JSON (--json).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import httpx
import orjson

from bench.http import CLOCK_TICKS, loadavg, process_tree, processes
from bench.server import free_port, stories_server
from stories.actors.relay import RELAY_APPLICATION_NAME
from stories.store.events import TAIL_APPLICATION_NAME
from tests.fixtures.redis import RedisProcess

if TYPE_CHECKING:
    from collections.abc import Iterator

START_SECONDS = 300.0
SETTLE_SECONDS = 10.0
DRAIN_SECONDS = 3.0
MAX_CONNECTIONS = 600
SERVER_ENV = {
    "BCRYPT_COST": "4",
    "RATE_LIMIT_REACTIONS_PER_MINUTE": "100000",
    "LOG_LEVEL": "warning",
    "MINIO_ENDPOINT": "off",
}
# Statement kinds, by a fragment of their text (the first that matches), in the order the table prints them.
KINDS = (
    ("relay tail read", "pg_snapshot_xip"),
    ("relay NOTIFY", "pg_notify"),
    ("LISTEN", "LISTEN"),
    ("access log read", "access_changes"),
    ("expiry leader lock", "pg_try_advisory_xact_lock"),
    ("moderation backlog", "report_cases"),
    ("health ping", "SELECT 1"),
)


@dataclass
class Measurement:
    transport: str
    workers: int
    connections: dict[str, int]  # "<application_name or pool>/<state>" -> count
    listen_sessions: int
    redis_clients: int | None
    rest_seconds: float
    rest_statements_per_s: dict[str, float]
    rest_xacts_per_s: float
    rest_service_cpu_ms_per_s: float
    rest_postgres_cpu_ms_per_s: float
    events: int
    event_seconds: float
    tail_reads_per_event: float
    notifies_per_event: float
    tail_read_ms_at_rest: float  # mean execution time of one read, PostgreSQL's side
    tail_read_ms_with_events: float
    statements_per_event: dict[str, float] = field(default_factory=dict)
    loadavg: str = ""


# --- a private PostgreSQL and Redis -------------------------------------------------------------------------


@contextmanager
def private_postgres(directory: Path) -> Iterator[tuple[str, int]]:
    """initdb + start on a free port; yields (admin URL, postmaster pid); stops and removes it at the end."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise SystemExit("bench: initdb and pg_ctl must be on PATH (the PostgreSQL server package)")
    data = directory / "pgdata"
    # PostgreSQL refuses to run as root: as root, run it as the postgres user, in a directory it owns.
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_owner:
        shutil.chown(directory, "postgres")
    subprocess.run(
        [*as_owner, initdb, "-D", str(data), "-U", "root", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    options = (
        f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={directory} "
        f"-c max_connections={MAX_CONNECTIONS} -c shared_preload_libraries=pg_stat_statements "
        "-c pg_stat_statements.track=all -c fsync=off"
    )
    log = directory / "postgres.log"
    subprocess.run([*as_owner, pg_ctl, "-D", str(data), "-o", options, "-l", str(log), "-w", "start"], check=True)
    try:
        pid = int((data / "postmaster.pid").read_text().split()[0])
        admin_url = f"postgres://root@127.0.0.1:{port}/postgres"
        run_sql(admin_url, "CREATE EXTENSION pg_stat_statements")
        yield admin_url, pid
    finally:
        subprocess.run(
            [*as_owner, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], check=False, capture_output=True
        )


def run_sql(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def redis_clients(port: int) -> int:
    """connected_clients from INFO clients (an inline command on a raw socket)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"INFO clients\r\n")
        reply = b""
        while b"connected_clients" not in reply or not reply.endswith(b"\r\n"):
            reply += sock.recv(65536)
    for line in reply.decode().splitlines():
        if line.startswith("connected_clients:"):
            return int(line.split(":")[1]) - 1  # this connection
    raise RuntimeError(f"no connected_clients in {reply!r}")


# --- what PostgreSQL says ------------------------------------------------------------------------------------


def kind_of(query: str) -> str:
    for kind, fragment in KINDS:
        if fragment in query:
            return kind
    return "other: " + " ".join(query.split())[:60]


def statements(admin_url: str, database: str) -> tuple[Counter[str], Counter[str]]:
    """Calls and execution milliseconds by kind, since the last reset."""
    rows = run_sql(
        admin_url,
        "SELECT query, calls, total_exec_time FROM pg_stat_statements "
        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1)",
        database,
    )
    calls: Counter[str] = Counter()
    milliseconds: Counter[str] = Counter()
    for row in rows:
        calls[kind_of(row["query"])] += row["calls"]
        milliseconds[kind_of(row["query"])] += row["total_exec_time"]
    return calls, milliseconds


def mean_ms(calls: Counter[str], milliseconds: Counter[str], kind: str) -> float:
    return round(milliseconds[kind] / calls[kind], 3) if calls[kind] else 0.0


def reset_statements(admin_url: str) -> None:
    run_sql(admin_url, "SELECT pg_stat_statements_reset()")


def xact_commits(admin_url: str, database: str) -> int:
    rows = run_sql(admin_url, "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", database)
    return int(rows[0]["xact_commit"])


def connections(admin_url: str, database: str) -> dict[str, int]:
    """Sessions on `database` by role and state: the relay's and access watcher's LISTEN sessions (both named
    `stories-relay`), the event tails (`stories-events`), the health ping's (its last statement `SELECT 1`) and
    the pool's (the rest)."""
    rows = run_sql(
        admin_url,
        "SELECT CASE WHEN application_name <> '' THEN application_name WHEN query = 'SELECT 1' THEN 'health' "
        "ELSE 'pool' END AS name, state, count(*) AS n "
        "FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() GROUP BY 1, 2 ORDER BY 1, 2",
        database,
    )
    return {f"{row['name']}/{row['state']}": int(row["n"]) for row in rows}


def named(held: dict[str, int], name: str) -> int:
    return sum(n for key, n in held.items() if key.startswith(name + "/"))


def cpu_seconds(root: int) -> float:
    return sum(p.cpu_ticks for p in process_tree(processes(), root)) / CLOCK_TICKS


def wait_started(admin_url: str, database: str, workers: int, transport: str) -> None:
    """Until every process has its event tail and, on PostgreSQL, its two LISTEN sessions."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        held = connections(admin_url, database)
        listeners = named(held, RELAY_APPLICATION_NAME)
        if named(held, TAIL_APPLICATION_NAME) == workers and (transport == "redis" or listeners == 2 * workers):
            return
        time.sleep(1)
    raise RuntimeError(f"{workers} processes did not all start within {START_SECONDS:g} s: {held}")


# --- one configuration ---------------------------------------------------------------------------------------


def setup_story(base_url: str) -> tuple[str, str]:
    """An author with a public story, and a reactor's token: (story id, reactor token)."""
    tokens = []
    for _ in range(2):
        response = httpx.post(
            f"{base_url}/signup",
            json={"email": f"scale-{uuid.uuid4().hex}@example.com", "password": "scaleout-password"},
            timeout=30,
        )
        response.raise_for_status()
        tokens.append(response.json()["token"])
    response = httpx.post(
        f"{base_url}/stories",
        json={"text": "scale-out", "visibility": "public"},
        headers={"Authorization": f"Bearer {tokens[0]}"},
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["id"]), tokens[1]


def post_reactions(base_url: str, story_id: str, token: str, count: int, rate: float) -> None:
    """`count` reactions, one at a time, at most `rate` per second: each its own event and its own wake-up."""
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        start = time.monotonic()
        for index in range(count):
            time.sleep(max(0.0, start + index / rate - time.monotonic()))
            http.post(f"/stories/{story_id}/reactions", json={"emoji": "🔥"}).raise_for_status()


def measure(
    args: argparse.Namespace, admin_url: str, postmaster: int, redis: RedisProcess | None, workers: int
) -> Measurement:
    transport = "redis" if redis else "postgres"
    database = f"scaleout_{transport}_{workers}_{uuid.uuid4().hex[:6]}"
    run_sql(admin_url, f"CREATE DATABASE {database}")
    database_url = admin_url.rsplit("/", 1)[0] + f"/{database}"
    env = {**SERVER_ENV, "WORKERS": str(workers), **({"REDIS_URL": redis.url} if redis else {})}
    try:
        with stories_server(database_url, env, port=free_port()) as server:
            wait_started(admin_url, database, workers, transport)
            time.sleep(SETTLE_SECONDS)
            held = connections(admin_url, database)
            listeners = named(held, RELAY_APPLICATION_NAME)
            clients = redis_clients(redis.port) if redis else None

            reset_statements(admin_url)
            xacts, service_cpu, pg_cpu = (
                xact_commits(admin_url, database),
                cpu_seconds(server.pid),
                cpu_seconds(postmaster),
            )
            started = time.monotonic()
            time.sleep(args.rest)
            rest = time.monotonic() - started
            at_rest, rest_ms = statements(admin_url, database)
            rest_xacts = (xact_commits(admin_url, database) - xacts) / rest
            rest_service = (cpu_seconds(server.pid) - service_cpu) * 1000 / rest
            rest_pg = (cpu_seconds(postmaster) - pg_cpu) * 1000 / rest

            story_id, token = setup_story(server.base_url)
            time.sleep(DRAIN_SECONDS)
            reset_statements(admin_url)
            started = time.monotonic()
            post_reactions(server.base_url, story_id, token, args.events, args.rate)
            time.sleep(DRAIN_SECONDS)
            window = time.monotonic() - started
            during, during_ms = statements(admin_url, database)
            after_load = connections(admin_url, database)
    finally:
        run_sql(admin_url, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")

    events: int = args.events

    def per_event(kind: str) -> float:
        return (during[kind] - at_rest[kind] / rest * window) / events

    return Measurement(
        transport=transport,
        workers=workers,
        connections={key: max(n, after_load.get(key, 0)) for key, n in {**after_load, **held}.items()},
        listen_sessions=listeners,
        redis_clients=clients,
        rest_seconds=round(rest, 1),
        rest_statements_per_s={kind: round(n / rest, 2) for kind, n in at_rest.most_common()},
        rest_xacts_per_s=round(rest_xacts, 1),
        rest_service_cpu_ms_per_s=round(rest_service, 1),
        rest_postgres_cpu_ms_per_s=round(rest_pg, 1),
        events=events,
        event_seconds=round(window, 1),
        tail_reads_per_event=round(per_event("relay tail read"), 2),
        notifies_per_event=round(per_event("relay NOTIFY"), 2),
        tail_read_ms_at_rest=mean_ms(at_rest, rest_ms, "relay tail read"),
        tail_read_ms_with_events=mean_ms(during, during_ms, "relay tail read"),
        statements_per_event={kind: round(per_event(kind), 2) for kind in sorted(during)},
        loadavg=loadavg(),
    )


def print_measurement(m: Measurement) -> None:
    print(f"\n== {m.transport}, N = {m.workers} (load {m.loadavg})")
    print("connections (max of at rest and after the events):")
    for key, n in sorted(m.connections.items()):
        print(f"  {key:40} {n}")
    print(f"LISTEN sessions {m.listen_sessions}; Redis clients {m.redis_clients}")
    print(
        f"at rest ({m.rest_seconds:g} s): {m.rest_xacts_per_s:g} transactions/s, service CPU "
        f"{m.rest_service_cpu_ms_per_s:g} ms/s, PostgreSQL CPU {m.rest_postgres_cpu_ms_per_s:g} ms/s"
    )
    for kind, rate in m.rest_statements_per_s.items():
        print(f"  {kind:60} {rate:g}/s")
    print(f"one tail read: {m.tail_read_ms_at_rest:g} ms at rest, {m.tail_read_ms_with_events:g} ms with events")
    print(f"{m.events} events in {m.event_seconds:g} s, per event above the rest rate:")
    for kind, per in m.statements_per_event.items():
        print(f"  {kind:60} {per:g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="2,8,32", help="comma-separated process counts (default 2,8,32)")
    parser.add_argument("--transports", default="postgres,redis", help="postgres (NOTIFY), redis, or both")
    parser.add_argument("--rest", type=float, default=60.0, help="seconds measured at rest (default 60)")
    parser.add_argument("--events", type=int, default=200, help="reactions posted (default 200)")
    parser.add_argument("--rate", type=float, default=20.0, help="reactions per second (default 20)")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    results = []
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stories-scaleout-")))
        admin_url, postmaster = stack.enter_context(private_postgres(directory))
        for transport in args.transports.split(","):
            redis = None
            if transport == "redis":
                (directory / "redis").mkdir()
                redis = RedisProcess(shutil.which("redis-server") or "redis-server", directory / "redis")
                redis.start()
                stack.callback(redis.stop)
            for workers in counts:
                result = measure(args, admin_url, postmaster, redis, workers)
                print_measurement(result)
                results.append(result)
    if args.json:
        args.json.write_bytes(orjson.dumps([asdict(r) for r in results], option=orjson.OPT_INDENT_2))
        print(f"\nwritten to {args.json}")
    print("\nsummary: transport N | tail reads/s at rest | NOTIFY/s at rest | tail reads per event")
    for r in results:
        rest = r.rest_statements_per_s
        print(
            f"  {r.transport:8} {r.workers:3} | {rest.get('relay tail read', 0):8g} | "
            f"{rest.get('relay NOTIFY', 0):6g} | {r.tail_reads_per_event:g}"
        )


if __name__ == "__main__":
    main()
