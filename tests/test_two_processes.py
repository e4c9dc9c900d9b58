"""Two `stories serve` processes on one database: realtime events cross from one to the other (PostgreSQL
LISTEN/NOTIFY, or Redis pub/sub when configured), rate limits are shared through Redis, and the expiry ticker
runs in both while one of them at a time does the work.

Redis: both processes use the session's Redis (`redis_url`) as configured, db index included. Their keys
(`stories:rl:<action>:<user id>`) name users created by this test, so no other session can touch them; the
relay channel (`stories:stories_events`) is shared by everything on that Redis whatever the db index (pub/sub
ignores SELECT), but every event is addressed to an author created here, so another session's traffic is
delivered to no socket of this test, and ours to none of theirs.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import httpx
import orjson
import pytest
import trio

from tests.processes import Account, ServerProcess, open_socket, signup, stories_serve_many, wait_for_connections
from tests.sql import sql_connection

if TYPE_CHECKING:
    from pathlib import Path

WAIT = 20.0


async def two_servers(
    stack: AsyncExitStack, database_url: str, tmp_path: Path, **env: str
) -> tuple[ServerProcess, ServerProcess]:
    """Processes A and B, each with its relay subscribed (an event sent earlier would not reach it)."""
    a, b = await stack.enter_async_context(
        stories_serve_many(database_url, {"A": tmp_path / "A", "B": tmp_path / "B"}, **env)
    )
    with trio.fail_after(WAIT):
        for server in (a, b):
            await server.wait_for("relay.listening")
    return a, b


async def create_story(http: httpx.AsyncClient, server: ServerProcess, author: Account) -> httpx.Response:
    return await http.post(
        f"{server.base_url}/stories", json={"text": "across", "visibility": "public"}, headers=author.auth
    )


async def next_event(socket) -> dict:
    return orjson.loads(await socket.get_message())


async def test_an_event_caused_on_b_reaches_the_authors_socket_on_a_exactly_once(database_url, tmp_path, relay_env):
    async with AsyncExitStack() as stack:
        a, b = await two_servers(stack, database_url, tmp_path, **relay_env)
        transport = "redis" if relay_env else "postgres"
        assert {line["transport"] for server in (a, b) for line in server.logged("relay.listening")} == {transport}
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=WAIT))
        author, viewer, witness, bystander = [
            await signup(http, server.base_url, label)
            for server, label in ((a, "author"), (b, "viewer"), (b, "witness"), (a, "bystander"))
        ]
        created = await create_story(http, a, author)
        assert created.status_code == 201, created.text
        story_id = created.json()["id"]
        created = await create_story(http, b, bystander)
        assert created.status_code == 201, created.text
        bystander_story = created.json()["id"]

        with trio.fail_after(WAIT):
            async with (
                open_socket(a, author.token) as author_on_a,
                open_socket(b, author.token) as author_on_b,
                open_socket(a, bystander.token) as bystander_on_a,
                open_socket(b, bystander.token) as bystander_on_b,
            ):
                await wait_for_connections(http, a.base_url, 2)
                await wait_for_connections(http, b.base_url, 2)

                view = await http.post(f"{b.base_url}/stories/{story_id}/view", headers=viewer.auth)
                assert view.status_code == 200, view.text
                assert view.json()["first_view"] is True
                reaction = await http.post(
                    f"{b.base_url}/stories/{story_id}/reactions", json={"emoji": "🔥"}, headers=viewer.auth
                )
                assert reaction.status_code == 201, reaction.text
                # A later event from a third user: whatever arrives before it on a socket is all it got of
                # the two above (one relay channel keeps a process's events in order).
                marker = await http.post(f"{b.base_url}/stories/{story_id}/view", headers=witness.auth)
                assert marker.status_code == 200, marker.text

                viewed_payload = {k: v for k, v in view.json().items() if k != "first_view"}
                reacted_payload = {k: v for k, v in reaction.json().items() if k != "id"}
                received = {}
                # B delivers to its own socket directly and must skip its own record coming back through
                # the broker; A gets it through the broker only.
                for name, socket in (("A", author_on_a), ("B", author_on_b)):
                    viewed, reacted, last = [await next_event(socket) for _ in range(3)]
                    assert set(viewed) == set(reacted) == {"type", "id", "payload"}
                    assert viewed["type"] == "story.viewed"
                    assert viewed["payload"] == viewed_payload
                    assert reacted["type"] == "story.reacted"
                    assert reacted["payload"] == reacted_payload
                    assert last["type"] == "story.viewed"
                    assert last["payload"]["viewer_id"] == witness.user_id, f"a duplicate on {name}: {last}"
                    received[name] = [viewed["id"], reacted["id"], last["id"]]
                assert received["A"] == received["B"]
                assert len(set(received["A"])) == 3

                # Nothing of the above reached the bystander, on either process: its first event is its own.
                response = await http.post(f"{a.base_url}/stories/{bystander_story}/view", headers=viewer.auth)
                assert response.status_code == 200, response.text
                for socket in (bystander_on_a, bystander_on_b):
                    own = await next_event(socket)
                    assert own["type"] == "story.viewed"
                    assert own["payload"]["story_id"] == bystander_story


@pytest.mark.redis
async def test_rate_limits_are_shared_through_redis(database_url, tmp_path, redis_url):
    limit = 20  # API.md: story creations per user per minute
    async with AsyncExitStack() as stack:
        a, b = await two_servers(stack, database_url, tmp_path, REDIS_URL=redis_url)
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=WAIT))
        author = await signup(http, a.base_url)
        statuses: list[int] = []

        async def create(server: ServerProcess) -> None:
            statuses.append((await create_story(http, server, author)).status_code)

        # Concurrently, so all 20 land well within the 3 s in which the bucket earns a token back.
        began = trio.current_time()
        async with trio.open_nursery() as nursery:
            for index in range(limit):
                nursery.start_soon(create, (a, b)[index % 2])
        assert statuses == [201] * limit
        for server in (a, b):
            refused = await create_story(http, server, author)
            assert refused.status_code == 429, (server.name, refused.text, trio.current_time() - began)
            assert refused.json()["error"] == "rate_limited"
            assert int(refused.headers["Retry-After"]) >= 1


async def test_expiry_runs_in_both_and_expires_each_story_once(database_url, tmp_path):
    stories = 6
    async with AsyncExitStack() as stack:
        a, b = await two_servers(stack, database_url, tmp_path, EXPIRY_INTERVAL_SECONDS="1", STORY_TTL_SECONDS="2")
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=WAIT))
        author = await signup(http, a.base_url)
        for index in range(stories):
            created = await create_story(http, (a, b)[index % 2], author)
            assert created.status_code == 201, created.text

        def expired() -> list[int]:
            return [line["count"] for server in (a, b) for line in server.logged("stories_expired")]

        with trio.fail_after(WAIT):
            # Log lines come from another process: re-read them now and then.
            while sum(expired()) < stories:  # noqa: ASYNC110
                await trio.sleep(0.1)
            # Two more runs in each process after that: nothing is expired twice.
            for server in (a, b):
                await server.wait_for("stories_expired", len(server.logged("stories_expired")) + 2)
        assert sum(expired()) == stories, (expired(), a.describe(), b.describe())
        # The ticker runs in both processes (each logs its runs; a run that lost the lock logs nothing).
        assert a.logged("stories_expired")
        assert b.logged("stories_expired")

    async with sql_connection(database_url) as connection:
        deleted = await connection.fetchval(
            "SELECT count(*) FROM stories WHERE deleted_at IS NOT NULL AND deleted_at >= expires_at"
        )
    assert deleted == stories
