"""Catch-up across processes (API.md "Realtime"): an author disconnects from A, 50 events are caused through B,
and the author reconnects to A with `after`: exactly those 50 arrive, in order, then the live ones, each once,
even while more events are being caused during the switch."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import httpx
import orjson
import trio

from tests.helpers import open_ws
from tests.processes import Account, signup, stories_serve_many, wait_for_connections

if TYPE_CHECKING:
    from pathlib import Path

    from tests.processes import ServerProcess

WAIT = 30.0
MISSED = 50


async def next_event(socket) -> dict:
    return orjson.loads(await socket.get_message())


async def all_events(http: httpx.AsyncClient, server: ServerProcess, author: Account, after: str | None) -> list[dict]:
    """The log's answer over HTTP, page by page."""
    events: list[dict] = []
    params = {"limit": "100"} | ({} if after is None else {"after": after})
    while True:
        response = await http.get(f"{server.base_url}/me/events", params=params, headers=author.auth)
        assert response.status_code == 200, response.text
        body = response.json()
        events.extend(body["events"])
        if body["next_cursor"] is None:
            return events
        params["after"] = body["next_cursor"]


async def two_servers_and_a_story(
    stack: AsyncExitStack, database_url: str, tmp_path: Path, env: dict[str, str]
) -> tuple[ServerProcess, ServerProcess, httpx.AsyncClient, Account, Account, str]:
    """Servers A and B (their relays listening), an HTTP client, an author signed up on A with a public story
    and a viewer signed up on B."""
    a, b = await stack.enter_async_context(
        stories_serve_many(
            database_url, {"A": tmp_path / "A", "B": tmp_path / "B"}, RATE_LIMIT_REACTIONS_PER_MINUTE="1000", **env
        )
    )
    with trio.fail_after(WAIT):
        for server in (a, b):
            await server.wait_for("relay.listening")
    http = await stack.enter_async_context(httpx.AsyncClient(timeout=WAIT))
    author, viewer = await signup(http, a.base_url, "author"), await signup(http, b.base_url, "viewer")
    created = await http.post(f"{a.base_url}/stories", json={"text": "hi", "visibility": "public"}, headers=author.auth)
    return a, b, http, author, viewer, created.json()["id"]


async def test_reconnecting_with_after_replays_exactly_what_was_missed_then_goes_live(
    database_url: str, tmp_path: Path, relay_env: dict[str, str]
) -> None:
    async with AsyncExitStack() as stack:
        a, b, http, author, viewer, story_id = await two_servers_and_a_story(stack, database_url, tmp_path, relay_env)

        async def react(emoji: str = "🔥") -> dict:
            response = await http.post(
                f"{b.base_url}/stories/{story_id}/reactions", json={"emoji": emoji}, headers=viewer.auth
            )
            assert response.status_code == 201, response.text
            return response.json()

        with trio.fail_after(WAIT):
            async with open_ws(a.port, f"/ws?token={author.token}") as socket:
                view = await http.post(f"{b.base_url}/stories/{story_id}/view", headers=viewer.auth)
                assert view.status_code == 200
                seen = await next_event(socket)
                assert seen["type"] == "story.viewed"
            await wait_for_connections(http, a.base_url, 0)

            missed = [await react("😂" if n % 2 else "🔥") for n in range(MISSED)]

            async with open_ws(a.port, f"/ws?token={author.token}&after={seen['id']}") as socket:
                replayed = [await next_event(socket) for _ in range(MISSED)]
                assert [e["payload"]["created_at"] for e in replayed] == [r["created_at"] for r in missed]
                assert [e["payload"]["emoji"] for e in replayed] == [r["emoji"] for r in missed]
                ids = [e["id"] for e in replayed]
                assert ids == sorted(ids)
                assert len(set(ids)) == MISSED
                assert ids[0] > seen["id"]
                live = [await react() for _ in range(3)]
                received = [await next_event(socket) for _ in live]
                assert [e["payload"]["created_at"] for e in received] == [r["created_at"] for r in live]
                # Nothing twice: the next message is the next event.
                marker = await react("👍")
                last = await next_event(socket)
                assert (last["payload"]["emoji"], last["payload"]["created_at"]) == ("👍", marker["created_at"])
            # HTTP serves the same events, in the same order.
            over_http = await all_events(http, b, author, seen["id"])
            assert [e["id"] for e in over_http] == [*ids, *(e["id"] for e in received), last["id"]]


async def test_no_gap_and_no_duplicate_while_events_keep_coming_during_the_switch(
    database_url: str, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        a, b, http, author, viewer, story_id = await two_servers_and_a_story(stack, database_url, tmp_path, {})
        caused = 0

        async def react(server: ServerProcess) -> None:
            nonlocal caused
            response = await http.post(
                f"{server.base_url}/stories/{story_id}/reactions", json={"emoji": "🔥"}, headers=viewer.auth
            )
            assert response.status_code == 201, response.text
            caused += 1

        with trio.fail_after(WAIT):
            await react(b)
            first = await all_events(http, a, author, None)
            assert len(first) == 1
            for _ in range(20):
                await react(b)
            received: list[dict] = []
            async with trio.open_nursery() as nursery:

                async def keep_causing() -> None:
                    for n in range(40):
                        await react((a, b)[n % 2])

                nursery.start_soon(keep_causing)
                async with open_ws(a.port, f"/ws?token={author.token}&after={first[0]['id']}") as socket:
                    while len(received) < 60:
                        received.append(await next_event(socket))
            everything = await all_events(http, a, author, first[0]["id"])
        assert caused == 61
        assert [e["id"] for e in received] == [e["id"] for e in everything]
