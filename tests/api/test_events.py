"""Views and reactions reach the author's sockets through the hub (in-process; cross-process is the relay's)."""

from uuid import UUID

import orjson
import trio

from tests.helpers import signup


async def _story(client, author, visibility="public"):
    response = await client.post("/stories", json={"text": "hi", "visibility": visibility}, headers=author.auth)
    return (await response.get_json())["id"]


def _drain(mailbox):
    messages = []
    while True:
        try:
            messages.append(orjson.loads(mailbox.receive.receive_nowait()))
        except trio.WouldBlock:
            return messages


async def test_first_view_and_reactions_notify_the_author_only(client, hub):
    author, viewer = await signup(client), await signup(client)
    story_id = await _story(client, author)
    with hub.subscribe(UUID(author.user_id)) as author_box, hub.subscribe(UUID(viewer.user_id)) as viewer_box:
        await client.post(f"/stories/{story_id}/view", headers=viewer.auth)
        await client.post(f"/stories/{story_id}/view", headers=viewer.auth)
        await client.post(f"/stories/{story_id}/view", headers=author.auth)
        reacted = await client.post(f"/stories/{story_id}/reactions", json={"emoji": "🔥"}, headers=viewer.auth)
        await client.post(f"/stories/{story_id}/reactions", json={"emoji": "👍"}, headers=author.auth)
        received = _drain(author_box)
        assert _drain(viewer_box) == []
    assert [m["type"] for m in received] == ["story.viewed", "story.reacted"]
    viewed, reaction = received
    assert set(viewed["payload"]) == {"story_id", "viewer_id", "viewed_at"}
    assert viewed["payload"]["viewer_id"] == viewer.user_id
    assert reaction["payload"] == {
        "story_id": story_id,
        "user_id": viewer.user_id,
        "emoji": "🔥",
        "created_at": (await reacted.get_json())["created_at"],
    }
    assert viewed["id"] != reaction["id"]
