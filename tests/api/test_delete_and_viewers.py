"""DELETE /stories/{id} and GET /stories/{id}/viewers ("seen by")."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from stories.settings import Settings
from tests.helpers import post_story, signup, walk_pages

DAY = 86_400.0
TEN_YEARS = 10 * 365 * 86_400


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, jwt_ttl_seconds=TEN_YEARS, rate_limit_reactions_per_minute=1_000_000)


async def feed_ids(client, account):
    response = await client.get("/feed", headers=account.auth)
    assert response.status_code == 200
    return [story["id"] for story in (await response.get_json())["stories"]]


async def test_the_author_deletes_and_it_is_gone_from_every_read_at_once(client, clock):
    ada, bob = await signup(client), await signup(client)
    await client.post(f"/follow/{ada.user_id}", headers=bob.auth)
    story = await post_story(client, ada, "friends")
    clock.advance(1)
    other = await post_story(client, ada)
    assert await feed_ids(client, bob) == [other, story]
    await client.post(f"/stories/{story}/view", headers=bob.auth)

    assert (await client.delete(f"/stories/{story}", headers=bob.auth)).status_code == 404
    response = await client.delete(f"/stories/{story}", headers=ada.auth)
    assert (response.status_code, await response.get_data()) == (204, b"")

    for account in (ada, bob):
        assert (await client.get(f"/stories/{story}", headers=account.auth)).status_code == 404
        assert await feed_ids(client, account) == [other]
    assert (await client.post(f"/stories/{story}/view", headers=bob.auth)).status_code == 404
    response = await client.post(f"/stories/{story}/reactions", json={"emoji": "🔥"}, headers=bob.auth)
    assert response.status_code == 404
    # Idempotent; still counted in the author's stats, with its view.
    assert (await client.delete(f"/stories/{story}", headers=ada.auth)).status_code == 204
    stats = await (await client.get("/me/stats", headers=ada.auth)).get_json()
    assert (stats["posted"], stats["views"]) == (2, 1)


async def test_deleting_an_expired_story_of_ones_own_is_204_and_others_are_404(client, clock, app_deps):
    ada, bob = await signup(client), await signup(client)
    story = await post_story(client, ada)
    clock.advance(app_deps.settings.story_ttl_seconds)
    assert (await client.delete(f"/stories/{story}", headers=ada.auth)).status_code == 204
    for path in (f"/stories/{uuid.uuid4()}", "/stories/not-a-uuid"):
        response = await client.delete(path, headers=ada.auth)
        assert (response.status_code, (await response.get_json())["error"]) == (404, "not_found")
    bob_story = await post_story(client, bob)
    assert (await client.delete(f"/stories/{bob_story}", headers=ada.auth)).status_code == 404
    assert (await client.get(f"/stories/{bob_story}", headers=ada.auth)).status_code == 200
    assert (await client.delete(f"/stories/{story}")).status_code == 401


async def test_viewers_most_recent_first_with_reactions_oldest_first(client, clock):
    ada = await signup(client, display_name="Ada")
    fans = [await signup(client, display_name=f"fan {i}") for i in range(5)]
    story = await post_story(client, ada)
    for i, fan in enumerate(fans):
        clock.advance(0.001 * (i % 2))  # two pairs share a millisecond: the id breaks the tie
        assert (await client.post(f"/stories/{story}/view", headers=fan.auth)).status_code == 200
    await client.post(f"/stories/{story}/view", headers=ada.auth)  # the author's own view is not recorded
    for emoji in ("🔥", "😂", "🔥"):
        clock.advance(1)
        await client.post(f"/stories/{story}/reactions", json={"emoji": emoji}, headers=fans[1].auth)
    await client.post(f"/stories/{story}/reactions", json={"emoji": "👍"}, headers=fans[3].auth)

    response = await client.get(f"/stories/{story}/viewers", headers=ada.auth)
    assert response.status_code == 200
    page = await response.get_json()
    assert page["next_cursor"] is None
    viewers = page["viewers"]
    assert [(v["viewed_at"], v["user_id"]) for v in viewers] == sorted(
        ((v["viewed_at"], v["user_id"]) for v in viewers), reverse=True
    )
    assert {v["user_id"] for v in viewers} == {f.user_id for f in fans}
    by_user = {v["user_id"]: v for v in viewers}
    assert by_user[fans[1].user_id]["reactions"] == ["🔥", "😂", "🔥"]
    assert by_user[fans[3].user_id]["reactions"] == ["👍"]
    assert by_user[fans[0].user_id] == {
        "user_id": fans[0].user_id,
        "display_name": "fan 0",
        "viewed_at": by_user[fans[0].user_id]["viewed_at"],
        "reactions": [],
    }
    assert await walk_pages(client, ada, f"/stories/{story}/viewers", "viewers", 2) == viewers


async def test_viewers_are_the_authors_for_seven_days_whatever_became_of_the_story(client, clock):
    ada, bob = await signup(client), await signup(client)
    story = await post_story(client, ada)
    await client.post(f"/stories/{story}/view", headers=bob.auth)
    for path in (f"/stories/{story}/viewers", f"/stories/{uuid.uuid4()}/viewers", "/stories/nope/viewers"):
        response = await client.get(path, headers=bob.auth)
        assert (response.status_code, (await response.get_json())["error"]) == (404, "not_found")

    async def listed():
        response = await client.get(f"/stories/{story}/viewers", headers=ada.auth)
        return response.status_code, (await response.get_json()).get("viewers")

    clock.advance(DAY)  # expired
    assert (await listed())[1][0]["user_id"] == bob.user_id
    assert (await client.delete(f"/stories/{story}", headers=ada.auth)).status_code == 204
    assert (await listed())[1][0]["user_id"] == bob.user_id
    clock.advance(6 * DAY - 1)
    assert (await listed())[0] == 200
    clock.advance(1)
    assert (await listed())[0] == 404


async def test_viewers_the_author_blocked_are_left_out(client):
    ada, bob, cy = await signup(client), await signup(client), await signup(client)
    story = await post_story(client, ada)
    for viewer in (bob, cy):
        await client.post(f"/stories/{story}/view", headers=viewer.auth)
    assert (await client.post(f"/blocks/{bob.user_id}", headers=ada.auth)).status_code == 200
    page = await (await client.get(f"/stories/{story}/viewers", headers=ada.auth)).get_json()
    assert [v["user_id"] for v in page["viewers"]] == [cy.user_id]
    assert (await client.delete(f"/blocks/{bob.user_id}", headers=ada.auth)).status_code == 204
    page = await (await client.get(f"/stories/{story}/viewers", headers=ada.auth)).get_json()
    assert {v["user_id"] for v in page["viewers"]} == {bob.user_id, cy.user_id}


async def test_viewers_limit_and_cursor_are_checked(client):
    ada = await signup(client)
    story = await post_story(client, ada)
    for query in ("limit=0", "limit=101", "cursor=abc"):
        response = await client.get(f"/stories/{story}/viewers?{query}", headers=ada.auth)
        assert (response.status_code, (await response.get_json())["error"]) == (400, "invalid_request")
    page = await (await client.get(f"/stories/{story}/viewers?limit=100", headers=ada.auth)).get_json()
    assert page == {"viewers": [], "next_cursor": None}
