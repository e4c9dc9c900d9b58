"""/ws against one real `stories serve` process: refusal before the upgrade, delivery to every socket of the
author and to nobody else, silence for self-views and self-reactions, and 1001 closes on SIGTERM."""

from __future__ import annotations

import signal

import httpx
import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed

from stories.domain import EventId
from tests.processes import (
    Account,
    connections_gauge,
    open_socket,
    refused_upgrade,
    signup,
    stories_serve,
    wait_for_connections,
)

WAIT = 15.0
# API.md: a signal drains within DRAIN_SECONDS (default 5); the process must be gone well before this.
SHUTDOWN_LIMIT_SECONDS = 10.0


async def create_story(http: httpx.AsyncClient, base_url: str, author: Account) -> str:
    response = await http.post(f"{base_url}/stories", json={"text": "hi", "visibility": "public"}, headers=author.auth)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def next_event(socket) -> dict:
    message = orjson.loads(await socket.get_message())
    EventId.parse(message["id"])
    return message


async def test_bad_token_is_refused_with_401_before_the_upgrade(database_url, tmp_path):
    async with stories_serve(database_url, tmp_path) as server:
        with trio.fail_after(WAIT):
            for token, headers, message in [
                (None, None, "missing token"),
                ("not-a-jwt", None, "malformed"),
                (None, [("Authorization", "Token abc")], "Bearer"),
            ]:
                rejected = await refused_upgrade(server, token, headers)
                assert rejected.status_code == 401
                assert dict(rejected.headers)[b"content-type"].startswith(b"application/json")
                body = orjson.loads(rejected.body)
                assert body["error"] == "unauthorized"
                assert message in body["message"]
            async with httpx.AsyncClient(timeout=WAIT) as http:
                assert await connections_gauge(http, server.base_url) == 0
    refusals = server.logged("ws.refused")
    assert len(refusals) == 3, server.describe()
    assert not server.logged("ws.connected")


async def test_events_reach_every_socket_of_the_author_and_self_actions_send_nothing(database_url, tmp_path):
    async with stories_serve(database_url, tmp_path) as server, httpx.AsyncClient(timeout=WAIT) as http:
        url = server.base_url
        author, viewer, bystander = [await signup(http, url, label) for label in ("author", "viewer", "bystander")]
        story_id = await create_story(http, url, author)
        with trio.fail_after(WAIT):
            async with (
                open_socket(server, author.token) as by_query,
                open_socket(server, headers=[("Authorization", f"Bearer {author.token}")]) as by_header,
                open_socket(server, bystander.token) as other,
            ):
                await wait_for_connections(http, url, 3)
                # The author's own view and reaction: answered, but no event.
                own_view = await http.post(f"{url}/stories/{story_id}/view", headers=author.auth)
                assert own_view.status_code == 200
                assert own_view.json()["first_view"] is False
                own_reaction = await http.post(
                    f"{url}/stories/{story_id}/reactions", json={"emoji": "😂"}, headers=author.auth
                )
                assert own_reaction.status_code == 201

                view = await http.post(f"{url}/stories/{story_id}/view", headers=viewer.auth)
                assert view.status_code == 200
                assert view.json()["first_view"] is True
                # A repeated view is not a first view: no second event.
                again = await http.post(f"{url}/stories/{story_id}/view", headers=viewer.auth)
                assert again.json()["first_view"] is False
                reaction = await http.post(
                    f"{url}/stories/{story_id}/reactions", json={"emoji": "❤"}, headers=viewer.auth
                )
                assert reaction.status_code == 201

                expected_view = {key: value for key, value in view.json().items() if key != "first_view"}
                expected_reaction = {key: value for key, value in reaction.json().items() if key != "id"}
                assert expected_reaction["emoji"] == "❤️"
                event_ids = []
                for socket in (by_query, by_header):
                    # Events of one process arrive in the order they were caused: had the self-view or the
                    # self-reaction (or the repeated view) sent anything, it would show up here first.
                    viewed = await next_event(socket)
                    assert viewed["type"] == "story.viewed"
                    assert viewed["payload"] == expected_view
                    reacted = await next_event(socket)
                    assert reacted["type"] == "story.reacted"
                    assert reacted["payload"] == expected_reaction
                    assert reacted["id"] != reaction.json()["id"]  # an event id, not the reaction's
                    event_ids.append((viewed["id"], reacted["id"]))
                # One event, fanned out: both sockets see the same event ids.
                assert event_ids[0] == event_ids[1]

                # The bystander got nothing of the above: its first message is an event of its own.
                bystander_story = await create_story(http, url, bystander)
                response = await http.post(f"{url}/stories/{bystander_story}/view", headers=viewer.auth)
                assert response.status_code == 200
                own = await next_event(other)
                assert own["type"] == "story.viewed"
                assert own["payload"]["story_id"] == bystander_story


async def test_sigterm_closes_every_socket_with_1001_and_exits_0(database_url, tmp_path):
    sockets = 3
    codes: list[int] = []

    async def hold(server, account: Account, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with open_socket(server, account.token) as socket:
            task_status.started()
            with pytest.raises(ConnectionClosed) as closed:
                await socket.get_message()
            codes.append(closed.value.reason.code)

    async with stories_serve(database_url, tmp_path) as server:
        with trio.fail_after(WAIT + SHUTDOWN_LIMIT_SECONDS):
            async with trio.open_nursery() as nursery:
                # The HTTP client is closed before the signal: an idle keep-alive connection would hold the
                # shutdown for the whole DRAIN_SECONDS, and this test is about the sockets.
                async with httpx.AsyncClient(timeout=WAIT) as http:
                    accounts = [await signup(http, server.base_url) for _ in range(2)]
                    for index in range(sockets):
                        await nursery.start(hold, server, accounts[index % len(accounts)])
                    await wait_for_connections(http, server.base_url, sockets)
                elapsed = await server.stop(signal.SIGTERM)
    assert server.process.returncode == 0, server.describe()
    assert elapsed < SHUTDOWN_LIMIT_SECONDS
    assert codes == [1001] * sockets
    events = [line.get("event") for line in server.lines()]
    assert "ws.closing_all" in events
    assert events[-1] == "shutdown.complete", server.describe()
    disconnected = server.logged("ws.disconnected")
    assert [(line["by"], line["code"]) for line in disconnected] == [("server", 1001)] * sockets
    assert "Traceback" not in server.stderr(), server.describe()
