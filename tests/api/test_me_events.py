"""GET /me/events, and GET /ws?after= on the real app: the caller's events from the log, the window, resync."""

from functools import partial
from uuid import UUID, uuid4

import orjson
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from stories.domain import EventId
from tests.conftest import START
from tests.helpers import open_ws, signup


async def _story(client, author):
    response = await client.post("/stories", json={"text": "hi", "visibility": "public"}, headers=author.auth)
    return (await response.get_json())["id"]


async def _events(client, account, query=""):
    response = await client.get(f"/me/events{query}", headers=account.auth)
    return response.status_code, await response.get_json()


async def test_events_over_http_oldest_first_paged_and_only_the_callers(client):
    author, viewer, other = await signup(client), await signup(client), await signup(client)
    story_id = await _story(client, author)
    await client.post(f"/stories/{story_id}/view", headers=viewer.auth)
    for emoji in ("🔥", "😂", "👍"):
        await client.post(f"/stories/{story_id}/reactions", json={"emoji": emoji}, headers=viewer.auth)
    await client.post(f"/stories/{story_id}/reactions", json={"emoji": "😮"}, headers=author.auth)  # no event

    status, body = await _events(client, author)
    assert status == 200
    assert [e["type"] for e in body["events"]] == ["story.viewed"] + ["story.reacted"] * 3
    assert [e["payload"].get("emoji") for e in body["events"][1:]] == ["🔥", "😂", "👍"]
    assert body["next_cursor"] is None
    ids = [e["id"] for e in body["events"]]
    assert ids == sorted(ids)

    status, page = await _events(client, author, "?limit=2")
    assert [e["id"] for e in page["events"]] == ids[:2]
    assert page["next_cursor"] == ids[1]
    status, page = await _events(client, author, f"?limit=2&after={page['next_cursor']}")
    assert [e["id"] for e in page["events"]] == ids[2:]
    assert page["next_cursor"] is None
    status, page = await _events(client, author, f"?after={ids[-1]}")
    assert page == {"events": [], "next_cursor": None}
    # Another user's cursor names none of the caller's events: resync, then the caller's window.
    assert (await _events(client, other))[1] == {"events": [], "next_cursor": None}
    status, page = await _events(client, other, f"?after={ids[0]}")
    assert page == {"events": [{"type": "resync"}], "next_cursor": None}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=x", "limit"),
        ("?after=abc", "after"),
        # Well-formed, but a sequence number past the bigint range (it answered 500).
        (f"?after={'0' * 16}8000000000000000", "after"),
        (f"?after={'f' * 32}", "after"),
    ],
)
async def test_bad_parameters_are_400(client, query, field):
    account = await signup(client)
    status, body = await _events(client, account, query)
    assert status == 400
    assert body["error"] == "invalid_request"
    assert field in body["fields"]


async def test_events_need_a_token(client):
    response = await client.get("/me/events")
    assert response.status_code == 401


async def _serve(app, nursery) -> int:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    shutdown = trio.Event()
    binds = await nursery.start(partial(serve, app, config, shutdown_trigger=shutdown.wait))
    return int(binds[0].rsplit(":", 1)[1])


async def test_reconnecting_past_the_replay_limit_or_with_a_foreign_cursor_gets_resync(
    app, client, nursery, live_relay, monkeypatch
):
    monkeypatch.setattr("stories.api.ws.REPLAY_LIMIT", 3)
    author, viewer = await signup(client), await signup(client)
    story_id = await _story(client, author)
    await client.post(f"/stories/{story_id}/view", headers=viewer.auth)
    first = (await _events(client, author))[1]["events"][0]["id"]
    port = await _serve(app, nursery)
    with trio.fail_after(10):
        for _ in range(4):
            await client.post(f"/stories/{story_id}/reactions", json={"emoji": "🔥"}, headers=viewer.auth)
        # Four missed, three at most: resync, then the live stream.
        async with open_ws(port, f"/ws?token={author.token}&after={first}") as socket:
            assert orjson.loads(await socket.get_message()) == {"type": "resync"}
            await client.post(f"/stories/{story_id}/reactions", json={"emoji": "😢"}, headers=viewer.auth)
            # Then live events. (A missed one committed above the horizon at the replay may come first: other
            # transactions on the server, of any database, hold the horizon back.)
            while (live := orjson.loads(await socket.get_message()))["payload"]["emoji"] != "😢":
                assert live["payload"]["emoji"] == "🔥"
        # A cursor that is not one of the author's events: resync too.
        foreign = str(EventId(1, 1))
        async with open_ws(port, f"/ws?token={author.token}&after={foreign}") as socket:
            assert orjson.loads(await socket.get_message()) == {"type": "resync"}
        # Within the limit: exactly the missed ones.
        everything = (await _events(client, author))[1]["events"]
        async with open_ws(port, f"/ws?token={author.token}&after={everything[-3]['id']}") as socket:
            assert [orjson.loads(await socket.get_message())["id"] for _ in range(2)] == [
                e["id"] for e in everything[-2:]
            ]


async def test_a_mailbox_that_overflows_is_refilled_from_the_log_for_that_socket_only(
    app, app_deps, client, nursery, live_relay
):
    app_deps.hub.mailbox_size = 2
    author, viewer, other = await signup(client), await signup(client), await signup(client)
    story_id, other_story = await _story(client, author), await _story(client, other)
    port = await _serve(app, nursery)
    with trio.fail_after(10):
        async with (
            open_ws(port, f"/ws?token={author.token}") as socket,
            open_ws(port, f"/ws?token={other.token}") as bystander,
        ):
            while app_deps.hub.stats().connections < 2:  # noqa: ASYNC110 (the server registers after the upgrade)
                await trio.sleep(0.01)
            # Committed without waking the relay, so its next read publishes all ten at once into a mailbox of 2.
            for emoji in ("🔥", "😂", "👍", "😮", "😢") * 2:
                await app_deps.store.add_reaction(UUID(viewer.user_id), START, UUID(story_id), uuid4(), emoji)
            live_relay.wake()
            received = [orjson.loads(await socket.get_message()) for _ in range(10)]
            assert [e["payload"]["emoji"] for e in received] == ["🔥", "😂", "👍", "😮", "😢"] * 2
            ids = [e["id"] for e in received]
            assert ids == sorted(set(ids))
            # Still open; the other author's socket saw nothing of it, and gets its own event next.
            await client.post(f"/stories/{other_story}/view", headers=viewer.auth)
            assert orjson.loads(await bystander.get_message())["payload"]["story_id"] == other_story
            await client.post(f"/stories/{story_id}/view", headers=viewer.auth)
            assert orjson.loads(await socket.get_message())["type"] == "story.viewed"
    # The mailbox took three at most (one handed to the waiting handler, two buffered): the rest came from the log.
    assert app_deps.metrics.registry.get_sample_value("ws_events_dropped_total") > 0


async def test_a_socket_without_after_gets_no_event_committed_before_it_opened(app, app_deps, client, nursery):
    # The socket started at the hub's position, which lags behind the log: a view answered before the upgrade
    # arrived on the new socket as if live, once the relay read it.
    author, viewer = await signup(client), await signup(client)
    story_id = await _story(client, author)
    relay = app_deps.relay
    port = await _serve(app, nursery)
    with trio.fail_after(10):
        async with trio.open_nursery() as first_run:
            first_run.start_soon(relay.run)
            await relay.wait_listening()
            first_run.cancel_scope.cancel("the relay falls behind")
        # The relay has not read this view yet (it keeps its cursor, before the view) when the socket opens.
        assert (await client.post(f"/stories/{story_id}/view", headers=viewer.auth)).status_code == 200
        async with open_ws(port, f"/ws?token={author.token}") as socket:
            while app_deps.hub.stats().connections < 1:  # noqa: ASYNC110 (registered after the upgrade)
                await trio.sleep(0.01)
            nursery.start_soon(relay.run)
            await relay.wait_listening()
            await client.post(f"/stories/{story_id}/reactions", json={"emoji": "🔥"}, headers=viewer.auth)
            assert orjson.loads(await socket.get_message())["type"] == "story.reacted"
