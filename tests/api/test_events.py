"""Views and reactions reach the author's mailboxes: the relay reads them from the log into the hub."""

from uuid import UUID

import orjson
import trio

from tests.helpers import signup


async def _story(client, author, visibility="public"):
    response = await client.post("/stories", json={"text": "hi", "visibility": visibility}, headers=author.auth)
    return (await response.get_json())["id"]


async def _next(mailbox):
    with trio.fail_after(10):
        _, text = await mailbox.receive.receive()
    return orjson.loads(text)


async def test_first_view_and_reactions_notify_the_author_only(client, hub, live_relay):
    author, viewer, witness = await signup(client), await signup(client), await signup(client)
    story_id = await _story(client, author)
    viewer_story = await _story(client, viewer)
    with hub.subscribe(UUID(author.user_id)) as author_box, hub.subscribe(UUID(viewer.user_id)) as viewer_box:
        await client.post(f"/stories/{story_id}/view", headers=viewer.auth)
        await client.post(f"/stories/{story_id}/view", headers=viewer.auth)
        await client.post(f"/stories/{story_id}/view", headers=author.auth)
        reacted = await client.post(f"/stories/{story_id}/reactions", json={"emoji": "🔥"}, headers=viewer.auth)
        await client.post(f"/stories/{story_id}/reactions", json={"emoji": "👍"}, headers=author.auth)
        # Later events, by a third user: the relay delivers in id order, so whatever arrives before them is
        # all each mailbox got of the above.
        await client.post(f"/stories/{story_id}/view", headers=witness.auth)
        await client.post(f"/stories/{viewer_story}/view", headers=witness.auth)
        received = [await _next(author_box) for _ in range(3)]
        to_viewer = await _next(viewer_box)
    assert [m["type"] for m in received] == ["story.viewed", "story.reacted", "story.viewed"]
    viewed, reaction, marker = received
    assert marker["payload"]["viewer_id"] == witness.user_id
    assert to_viewer["payload"] == {**to_viewer["payload"], "story_id": viewer_story, "viewer_id": witness.user_id}
    assert set(viewed["payload"]) == {"story_id", "viewer_id", "viewed_at"}
    assert viewed["payload"]["viewer_id"] == viewer.user_id
    assert reaction["payload"] == {
        "story_id": story_id,
        "user_id": viewer.user_id,
        "emoji": "🔥",
        "created_at": (await reacted.get_json())["created_at"],
    }
    assert viewed["id"] < reaction["id"] < marker["id"]
