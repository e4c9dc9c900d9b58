"""Fault injection (issue 7): a real `stories serve` under concurrent load while its dependencies fail.

The server reaches PostgreSQL through a TCP relay the test controls (tests/proxy.py) and, in the Redis test, a
redis-server the test kills. API.md "Operations" and "Graceful degradation" are the contract:
- database closed: requests answer 503 (`database_unavailable` or `overloaded`) fast, never 500; the process
  recovers when the database returns, and no acknowledged write is lost or doubled;
- database hung: requests answer 503 within REQUEST_TIMEOUT_SECONDS, /healthz says db "down" within its bound,
  and the process recovers when the database answers again;
- Redis killed: nothing fails; rate limits and caches fall back to the process, /healthz says "degraded".

Every request is timed by the client, so a slow 503 fails as surely as a 500. Failure messages carry a histogram
of (kind, status, error) per phase, the slowest answers and the server's log tail.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from tests.processes import Account, ServerProcess, signup, stories_serve
from tests.proxy import Relay, open_relay, via
from tests.sql import sql_connection

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from tests.fixtures.redis import RedisProcess

REQUEST_TIMEOUT_SECONDS = 2.0
DB_ACQUIRE_TIMEOUT_SECONDS = 1.0
SERVER_ENV = {
    "DB_ACQUIRE_TIMEOUT_SECONDS": f"{DB_ACQUIRE_TIMEOUT_SECONDS:g}",
    "REQUEST_TIMEOUT_SECONDS": f"{REQUEST_TIMEOUT_SECONDS:g}",
    "RATE_LIMIT_STORIES_PER_MINUTE": "100000",
    "RATE_LIMIT_REACTIONS_PER_MINUTE": "100000",
    # No embedded object store: nothing here uploads, and it would only slow the start.
    "MINIO_ENDPOINT": "off",
}
# Every answer, a 503 above all, comes within the request deadline plus slack for a busy 2-core machine.
FAST_SECONDS = REQUEST_TIMEOUT_SECONDS + 1.0
# Longer than any answer may take: a hung request shows as a slow answer, not as a client timeout.
CLIENT_TIMEOUT_SECONDS = 10.0
CLIENTS = 16
# Each client's pause between rounds: a steady load, not a benchmark of a 2-core machine.
PACE_SECONDS = 0.05
OUTAGE_SECONDS = 2.0
# Bounds each test once its server listens (starting one has its own bound).
TEST_SECONDS = 40.0
# How long recovery (or a degradation showing up) may take before the test fails with a report.
SETTLE_SECONDS = 15.0
HEALTH_POLL_SECONDS = 0.1

SHED = {"database_unavailable", "overloaded"}
UP = {"status": "ok", "checks": {"db": "ok", "redis": "disabled", "storage": "disabled"}}
DB_DOWN = {"status": "degraded", "checks": {"db": "down", "redis": "disabled", "storage": "disabled"}}
REDIS_UP = {"status": "ok", "checks": {"db": "ok", "redis": "ok", "storage": "disabled"}}
REDIS_DOWN = {"status": "degraded", "checks": {"db": "ok", "redis": "down", "storage": "disabled"}}


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str
    status: int  # 0: no HTTP answer at all (the client's transport failed)
    error: str | None  # the error body's `error` (or the transport error)
    message: str | None
    began: float
    seconds: float

    @property
    def answered(self) -> float:
        return self.began + self.seconds

    def __str__(self) -> str:
        return f"{self.kind} {self.status} {self.error} {self.seconds:.2f}s {self.message or ''}"


@dataclass
class Load:
    """Every request's outcome, in answer order, and the creates to check against the database.

    `until(condition)` waits for the outcomes to satisfy `condition` (re-checked on every new outcome)."""

    outcomes: list[Outcome] = field(default_factory=list)
    # Idempotency-Key -> the story id of its 201.
    acked: dict[str, str] = field(default_factory=dict)
    # Idempotency-Key -> who sent which body, for creates that got no 201 (to retry after recovery).
    unacked: dict[str, tuple[Account, dict[str, str]]] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    _changed: trio.Event = field(default_factory=trio.Event)

    async def request(self, kind: str, send: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response | None:
        began = trio.current_time()
        try:
            response = await send()
        except httpx.TransportError as exc:
            self._record(Outcome(kind, 0, repr(exc), None, began, trio.current_time() - began))
            return None
        error = message = None
        if response.status_code >= 400:
            try:
                body = response.json()
                error, message = body.get("error"), body.get("message")
            except ValueError:
                error = response.text[:200]
        self._record(Outcome(kind, response.status_code, error, message, began, trio.current_time() - began))
        return response

    def _record(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self._changed.set()
        self._changed = trio.Event()

    async def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._changed.wait()

    def mark(self, phase: str) -> float:
        self.phases[phase] = now = trio.current_time()
        return now

    def count(self, kind: str | None = None, status: int | None = None, since: float = 0.0) -> int:
        return sum(
            1
            for o in self.outcomes
            if (kind is None or o.kind == kind) and (status is None or o.status == status) and o.answered >= since
        )

    def report(self, server: ServerProcess) -> str:
        """Histograms per phase, the slowest answers, and what the server logged."""
        bounds = sorted(self.phases.items(), key=lambda item: item[1])
        starts = [("start", 0.0), *bounds]
        lines = []
        for (name, start), end in zip(starts, [*(t for _, t in bounds), math.inf], strict=True):
            histogram = Counter(f"{o.kind} {o.status} {o.error}" for o in self.outcomes if start <= o.answered < end)
            lines.append(f"  {name}: {dict(sorted(histogram.items()))}")
        slowest = sorted(self.outcomes, key=lambda o: o.seconds, reverse=True)[:5]
        problems = [
            {k: str(v)[:300] for k, v in line.items() if k in {"event", "level", "error", "route", "status"}}
            for line in server.lines()
            if line.get("level") in {"error", "critical"} or (line.get("status") or 0) in range(500, 503)
        ]
        return "\n".join(
            [
                "outcomes by phase (kind status error: count):",
                *lines,
                "slowest: " + "; ".join(map(str, slowest)),
                f"server errors and 5xx ({len(problems)}): {problems[:10]}",
                server.describe(),
            ]
        )


async def wait_until(load: Load, server: ServerProcess, what: str, condition: Callable[[], bool]) -> None:
    """Wait for `condition` over the outcomes; past SETTLE_SECONDS fail with the load's report."""
    with trio.move_on_after(SETTLE_SECONDS):
        await load.until(condition)
        return
    raise AssertionError(f"not within {SETTLE_SECONDS:g} s: {what}\n{load.report(server)}")


async def healthz_until(
    load: Load, http: httpx.AsyncClient, server: ServerProcess, expected: tuple[int, dict[str, Any]]
) -> None:
    """Poll /healthz (each answer recorded as load) until it answers `expected`, within SETTLE_SECONDS."""
    last = None
    with trio.move_on_after(SETTLE_SECONDS):
        while True:
            response = await load.request("healthz", lambda: http.get(f"{server.base_url}/healthz"))
            last = None if response is None else (response.status_code, response.json())
            if last == expected:
                return
            await trio.sleep(HEALTH_POLL_SECONDS)
    raise AssertionError(f"/healthz never answered {expected} (last: {last})\n{load.report(server)}")


def story_body(key: str) -> dict[str, str]:
    return {"text": f"fault {key}", "visibility": "public"}


async def create(
    load: Load, http: httpx.AsyncClient, server: ServerProcess, account: Account, key: str
) -> httpx.Response | None:
    """POST /stories with `key` as its Idempotency-Key; records the answer in `load.acked`/`load.unacked`."""
    body = story_body(key)
    headers = {**account.auth, "Idempotency-Key": key}
    response = await load.request("create", lambda: http.post(f"{server.base_url}/stories", json=body, headers=headers))
    if response is not None and response.status_code == 201:
        load.acked[key] = response.json()["id"]
        load.unacked.pop(key, None)
    else:
        load.unacked[key] = (account, body)
    return response


async def client_loop(
    load: Load,
    http: httpx.AsyncClient,
    server: ServerProcess,
    account: Account,
    name: str,
    stop: trio.Event,
    react_to: str | None = None,
) -> None:
    """One client until `stop`: create a story (a fresh Idempotency-Key each), react (if given), read the feed."""
    auth = account.auth
    round_ = 0
    while not stop.is_set():
        await create(load, http, server, account, f"{name}-{round_}")
        if react_to is not None:
            url = f"{server.base_url}/stories/{react_to}/reactions"
            await load.request("react", lambda url=url: http.post(url, json={"emoji": "🔥"}, headers=auth))
        await load.request("feed", lambda: http.get(f"{server.base_url}/feed?limit=5", headers=auth))
        round_ += 1
        await trio.sleep(PACE_SECONDS)


def start_clients(
    nursery: trio.Nursery,
    load: Load,
    http: httpx.AsyncClient,
    server: ServerProcess,
    accounts: list[Account],
    stop: trio.Event,
    react_to: str | None = None,
) -> None:
    """A `client_loop` for each account in `nursery` until `stop`, each with Idempotency-Keys of its own."""
    run = os.urandom(3).hex()
    for index, account in enumerate(accounts):
        nursery.start_soon(client_loop, load, http, server, account, f"{run}-{index}", stop, react_to)


async def signups(http: httpx.AsyncClient, server: ServerProcess, count: int) -> list[Account]:
    accounts: list[Account] = []

    async def one(index: int) -> None:
        accounts.append(await signup(http, server.base_url, f"fault{index}"))

    async with trio.open_nursery() as nursery:
        for index in range(count):
            nursery.start_soon(one, index)
    return accounts


def assert_answers(load: Load, server: ServerProcess, allowed: set[int]) -> None:
    """Every request got an answer with an allowed status, 503s only for shedding, and all of them fast."""
    # /healthz answers 503 with its own body (checks, not an error code) while the database is down.
    wrong = [
        o
        for o in load.outcomes
        if o.status not in allowed or (o.status == 503 and o.kind != "healthz" and o.error not in SHED)
    ]
    slow = [o for o in load.outcomes if o.seconds >= FAST_SECONDS]
    assert not wrong, (
        f"{len(wrong)} answers outside {sorted(allowed)}: {list(map(str, wrong[:5]))}\n{load.report(server)}"
    )
    assert not slow, (
        f"{len(slow)} answers took >= {FAST_SECONDS:g} s: {list(map(str, slow[:5]))}\n{load.report(server)}"
    )


async def stories_in(database_url: str) -> list[tuple[str, str]]:
    """(id, text) of every story, read from the database directly (not through the relay)."""
    async with sql_connection(database_url) as connection:
        rows = await connection.fetch("SELECT id, text FROM stories")
    return [(str(row["id"]), row["text"]) for row in rows]


async def open_service(
    stack: AsyncExitStack, database_url: str, directory: Path, **env: str
) -> tuple[Relay, ServerProcess, httpx.AsyncClient, Load]:
    """A relay to the database, a server behind it (the relay outlives the server), an HTTP client, and the `Load`
    that records the requests it makes."""
    relay = await stack.enter_async_context(open_relay(database_url))
    server = await stack.enter_async_context(stories_serve(via(relay, database_url), directory, **SERVER_ENV, **env))
    limits = httpx.Limits(max_connections=4 * CLIENTS, max_keepalive_connections=4 * CLIENTS)
    http = await stack.enter_async_context(httpx.AsyncClient(timeout=CLIENT_TIMEOUT_SECONDS, limits=limits))
    return relay, server, http, Load()


async def test_database_closed_under_load_sheds_fast_recovers_and_loses_no_acknowledged_write(database_url, tmp_path):
    async with AsyncExitStack() as stack:
        relay, server, http, load = await open_service(stack, database_url, tmp_path)
        with trio.fail_after(TEST_SECONDS):
            accounts = await signups(http, server, CLIENTS)
            stop = trio.Event()
            async with trio.open_nursery() as clients:
                start_clients(clients, load, http, server, accounts, stop)
                await wait_until(
                    load, server, "creates before the outage", lambda: load.count("create", 201) >= CLIENTS
                )

                relay.stop()
                closed = load.mark("database closed")
                await wait_until(load, server, "a 503 in the outage", lambda: load.count(status=503, since=closed) > 0)
                # The outage's length, not a wait for a condition.
                await trio.sleep(OUTAGE_SECONDS)
                await relay.restart()
                back = load.mark("database back")

                await wait_until(
                    load, server, "creates after recovery", lambda: load.count("create", 201, since=back) >= CLIENTS
                )
                stop.set()

            assert_answers(load, server, {200, 201, 503})
            await healthz_until(load, http, server, (200, UP))

            # A client that got no 201 retries with the same key: each ends as exactly one story.
            retried: dict[str, str] = {}
            unacked = dict(load.unacked)
            limiter = trio.CapacityLimiter(CLIENTS)

            async def retry(key: str, account: Account) -> None:
                async with limiter:
                    response = await create(load, http, server, account, key)
                assert response is not None, key
                assert response.status_code == 201, (key, response.status_code, response.text)
                retried[key] = response.json()["id"]

            async with trio.open_nursery() as retries:
                for key, (account, _) in unacked.items():
                    retries.start_soon(retry, key, account)

        stored = await stories_in(database_url)
        texts = Counter(text for _, text in stored)
        doubled = {text: n for text, n in texts.items() if n > 1}
        assert not doubled, f"stories created more than once: {doubled}"
        by_id = dict(stored)
        lost = {key: story_id for key, story_id in load.acked.items() if by_id.get(story_id) != f"fault {key}"}
        assert not lost, f"{len(lost)} acknowledged stories missing: {list(lost.items())[:5]}\n{load.report(server)}"
        wrong = {key: story_id for key, story_id in retried.items() if by_id.get(story_id) != f"fault {key}"}
        assert not wrong, f"retries answered with ids not stored: {list(wrong.items())[:5]}"
        assert set(texts) == {f"fault {key}" for key in load.acked}, "stories nobody asked for"
        assert load.count(status=503) > 0, f"the outage was never seen\n{load.report(server)}"
        print(f"{len(load.outcomes)} requests; {len(unacked)} creates retried\n{load.report(server)}")


async def test_database_hung_answers_503_within_the_request_deadline_and_recovers(database_url, tmp_path):
    async with AsyncExitStack() as stack:
        relay, server, http, load = await open_service(stack, database_url, tmp_path)
        with trio.fail_after(TEST_SECONDS):
            accounts = await signups(http, server, CLIENTS)
            await healthz_until(load, http, server, (200, UP))

            relay.stall()
            stalled = load.mark("database hung")
            stop = trio.Event()
            async with trio.open_nursery() as clients:
                start_clients(clients, load, http, server, accounts, stop)
                health = await load.request("healthz", lambda: http.get(f"{server.base_url}/healthz"))
                # Hung long enough that requests meet both deadlines: the first ones REQUEST_TIMEOUT_SECONDS
                # (their calls keep the pool's slots), later ones DB_ACQUIRE_TIMEOUT_SECONDS waiting for a slot.
                await wait_until(
                    load, server, "503s while hung", lambda: load.count("create", 503, since=stalled) >= 2 * CLIENTS
                )
                relay.resume()
                resumed = load.mark("database answers again")
                await wait_until(
                    load, server, "creates after the hang", lambda: load.count("create", 201, since=resumed) >= CLIENTS
                )
                stop.set()

            await healthz_until(load, http, server, (200, UP))
        report = load.report(server)
        assert_answers(load, server, {200, 201, 503})
        hung = [o for o in load.outcomes if o.kind == "create" and stalled <= o.began and o.answered < resumed]
        assert hung, report
        assert {o.status for o in hung} == {503}, report
        probe = next(o for o in load.outcomes if o.kind == "healthz" and o.began >= stalled)
        assert probe.seconds < FAST_SECONDS, f"/healthz took {probe.seconds:.2f} s while the database hung\n{report}"
        assert health is not None
        assert (health.status_code, health.json()) == (503, DB_DOWN), f"/healthz while hung: {probe}\n{report}"
        print(report)


@pytest.mark.redis
async def test_redis_killed_under_load_degrades_without_failing_and_recovers(
    database_url, tmp_path, redis_process: RedisProcess
):
    async with AsyncExitStack() as stack:
        _, server, http, load = await open_service(
            stack, database_url, tmp_path / "server", REDIS_URL=redis_process.url
        )
        with trio.fail_after(TEST_SECONDS):
            accounts = await signups(http, server, CLIENTS)
            first = await create(load, http, server, accounts[0], f"{os.urandom(3).hex()}-shared")
            assert first is not None, load.report(server)
            assert first.status_code == 201, first.text
            shared = first.json()["id"]
            await healthz_until(load, http, server, (200, REDIS_UP))

            stop = trio.Event()
            async with trio.open_nursery() as clients:
                start_clients(clients, load, http, server, accounts, stop, react_to=shared)
                await wait_until(load, server, "load before the kill", lambda: load.count("react", 201) >= CLIENTS)

                await trio.to_thread.run_sync(redis_process.stop)
                killed = load.mark("redis killed")
                await healthz_until(load, http, server, (200, REDIS_DOWN))
                for kind in ("create", "react"):
                    await wait_until(
                        load,
                        server,
                        f"{kind} while Redis is down",
                        lambda kind=kind: load.count(kind, 201, since=killed) >= CLIENTS,
                    )

                await trio.to_thread.run_sync(redis_process.start)
                restarted = load.mark("redis back")
                await healthz_until(load, http, server, (200, REDIS_UP))
                await wait_until(
                    load, server, "creates after Redis is back", lambda: load.count("create", 201, since=restarted) >= 4
                )
                stop.set()

        assert_answers(load, server, {200, 201})
        stored = dict(await stories_in(database_url))
        lost = {key: story_id for key, story_id in load.acked.items() if stored.get(story_id) != f"fault {key}"}
        assert not lost, f"{len(lost)} acknowledged stories missing\n{load.report(server)}"
        print(load.report(server))
