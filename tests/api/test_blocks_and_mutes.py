"""Blocks and mutes (API.md "Social graph"), enforced on every read path, atomic with the follow removals."""

from __future__ import annotations

import uuid

import pytest
import trio

from tests.helpers import post_story, signup
from tests.sql import fetch

VISIBILITIES = ("public", "friends", "private")


async def feed_ids(client, account):
    response = await client.get("/feed?limit=100", headers=account.auth)
    assert response.status_code == 200
    return {story["id"] for story in (await response.get_json())["stories"]}


async def status(client, method, path, account, body=None):
    response = await client.open(path, method=method, json=body, headers=account.auth)
    return response.status_code


@pytest.mark.parametrize(
    ("edges", "source", "target"),
    [
        pytest.param("blocks", "blocker_id", "blocked_id", id="block"),
        pytest.param("mutes", "muter_id", "muted_id", id="mute"),
    ],
)
async def test_an_edge_is_answered_idempotently_and_refused_for_oneself_and_unknown_users(
    client, clock, edges, source, target
):
    ada, bob = await signup(client), await signup(client)
    response = await client.post(f"/{edges}/{bob.user_id}", headers=ada.auth)
    assert response.status_code == 200
    first = await response.get_json()
    assert first == {source: ada.user_id, target: bob.user_id, "created_at": "2026-11-24T10:00:00.000Z"}
    clock.advance(5)
    assert await (await client.post(f"/{edges}/{bob.user_id}", headers=ada.auth)).get_json() == first
    assert await status(client, "POST", f"/{edges}/{ada.user_id}", ada) == 400
    assert await status(client, "POST", f"/{edges}/{uuid.uuid4()}", ada) == 404
    assert await status(client, "POST", f"/{edges}/nope", ada) == 404
    assert await status(client, "DELETE", f"/{edges}/{bob.user_id}", ada) == 204
    assert await status(client, "DELETE", f"/{edges}/{bob.user_id}", ada) == 204


async def test_blocking_someone_who_blocked_you_is_allowed(client):
    ada, bob = await signup(client), await signup(client)
    assert await status(client, "POST", f"/blocks/{ada.user_id}", bob) == 200
    # Ada blocks Bob, who blocked her: both are then protected.
    assert await status(client, "POST", f"/blocks/{bob.user_id}", ada) == 200


async def test_a_block_removes_the_follows_both_ways_and_forbids_new_ones(client):
    ada, bob, cy = await signup(client), await signup(client), await signup(client)
    for follower, followee in ((ada, bob), (bob, ada), (cy, ada), (cy, bob)):
        assert await status(client, "POST", f"/follow/{followee.user_id}", follower) == 200
    assert await status(client, "POST", f"/blocks/{bob.user_id}", ada) == 200
    ada_me = await (await client.get("/me", headers=ada.auth)).get_json()
    assert (ada_me["followers"], ada_me["following"]) == (1, 0)  # cy still follows ada
    bob_profile = await (await client.get(f"/users/{bob.user_id}", headers=ada.auth)).get_json()
    assert (bob_profile["followed_by_me"], bob_profile["follows_me"], bob_profile["followers"]) == (False, False, 1)
    # Neither can follow the other: 404, as for an unknown user.
    for follower, followee in ((ada, bob), (bob, ada)):
        response = await client.post(f"/follow/{followee.user_id}", headers=follower.auth)
        assert (response.status_code, (await response.get_json())["error"]) == (404, "not_found")
    # Unblocking does not restore the follows, and allows new ones.
    assert await status(client, "DELETE", f"/blocks/{bob.user_id}", ada) == 204
    profile = await (await client.get(f"/users/{bob.user_id}", headers=ada.auth)).get_json()
    assert (profile["followed_by_me"], profile["follows_me"]) == (False, False)
    assert await status(client, "POST", f"/follow/{ada.user_id}", bob) == 200


@pytest.mark.parametrize("visibility", VISIBILITIES)
async def test_neither_sees_any_story_of_the_other(client, visibility):
    ada, bob = await signup(client), await signup(client)
    await client.post(f"/follow/{ada.user_id}", headers=bob.auth)
    await client.post(f"/follow/{bob.user_id}", headers=ada.auth)
    ada_story, bob_story = await post_story(client, ada, visibility), await post_story(client, bob, visibility)
    assert await status(client, "POST", f"/blocks/{bob.user_id}", ada) == 200
    for reader, story in ((bob, ada_story), (ada, bob_story)):
        assert await status(client, "GET", f"/stories/{story}", reader) == 404
        assert await status(client, "POST", f"/stories/{story}/view", reader) == 404
        assert await status(client, "POST", f"/stories/{story}/reactions", reader, {"emoji": "🔥"}) == 404
        assert story not in await feed_ids(client, reader)
    # Each still sees their own.
    assert await feed_ids(client, ada) == {ada_story}
    assert await status(client, "GET", f"/stories/{ada_story}", ada) == 200


async def test_a_profile_of_the_blocker_is_404_to_the_blocked_only(client):
    ada, bob = await signup(client), await signup(client)
    await client.post(f"/blocks/{bob.user_id}", headers=ada.auth)
    response = await client.get(f"/users/{ada.user_id}", headers=bob.auth)
    assert (response.status_code, (await response.get_json())["error"]) == (404, "not_found")
    assert await status(client, "GET", f"/users/{bob.user_id}", ada) == 200


async def test_blocked_users_past_views_and_reactions_stay_in_stats(client):
    ada, bob = await signup(client), await signup(client)
    story = await post_story(client, ada)
    await client.post(f"/stories/{story}/view", headers=bob.auth)
    await client.post(f"/stories/{story}/reactions", json={"emoji": "😮"}, headers=bob.auth)
    await client.post(f"/blocks/{bob.user_id}", headers=ada.auth)
    stats = await (await client.get("/me/stats", headers=ada.auth)).get_json()
    assert stats == {"posted": 1, "views": 1, "unique_viewers": 1, "reactions": {"😮": 1}}


async def test_my_blocks_newest_first_in_pages(client, clock):
    ada = await signup(client)
    others = [await signup(client, display_name=f"u{i}") for i in range(5)]
    for other in others:
        clock.advance(1)
        await client.post(f"/blocks/{other.user_id}", headers=ada.auth)
    page = await (await client.get("/me/blocks?limit=3", headers=ada.auth)).get_json()
    assert [u["display_name"] for u in page["users"]] == ["u4", "u3", "u2"]
    assert set(page["users"][0]) == {"user_id", "display_name", "blocked_at"}
    rest = await (await client.get(f"/me/blocks?limit=3&cursor={page['next_cursor']}", headers=ada.auth)).get_json()
    assert ([u["display_name"] for u in rest["users"]], rest["next_cursor"]) == (["u1", "u0"], None)
    await client.delete(f"/blocks/{others[4].user_id}", headers=ada.auth)
    page = await (await client.get("/me/blocks", headers=ada.auth)).get_json()
    assert [u["display_name"] for u in page["users"]] == ["u3", "u2", "u1", "u0"]
    # Only the caller's own blocks: nobody learns who blocked them.
    assert await (await client.get("/me/blocks", headers=others[0].auth)).get_json() == {
        "users": [],
        "next_cursor": None,
    }


async def test_a_mute_hides_the_muted_from_the_muters_feed_only(client):
    ada, bob = await signup(client), await signup(client)
    await client.post(f"/follow/{bob.user_id}", headers=ada.auth)
    stories = {v: await post_story(client, bob, v) for v in ("public", "friends")}
    ada_story = await post_story(client, ada)
    assert await status(client, "POST", f"/mutes/{bob.user_id}", ada) == 200
    assert await feed_ids(client, ada) == {ada_story}
    # Direct reads, views and reactions still work; the follow stays.
    for story in stories.values():
        assert await status(client, "GET", f"/stories/{story}", ada) == 200
        assert await status(client, "POST", f"/stories/{story}/view", ada) == 200
        assert await status(client, "POST", f"/stories/{story}/reactions", ada, {"emoji": "👍"}) == 201
    assert (await (await client.get(f"/users/{bob.user_id}", headers=ada.auth)).get_json())["followed_by_me"]
    # The muted user can tell no difference.
    assert await feed_ids(client, bob) == set(stories.values()) | {ada_story}
    profile = await (await client.get(f"/users/{ada.user_id}", headers=bob.auth)).get_json()
    assert profile["follows_me"] is True
    assert set(profile) == {
        "user_id",
        "display_name",
        "created_at",
        "followers",
        "following",
        "followed_by_me",
        "follows_me",
    }
    assert await status(client, "DELETE", f"/mutes/{bob.user_id}", ada) == 204
    assert await feed_ids(client, ada) == set(stories.values()) | {ada_story}


async def test_my_mutes_newest_first_in_pages(client, clock):
    ada, bob, cy = await signup(client), await signup(client, display_name="Bob"), await signup(client)
    await client.post(f"/mutes/{bob.user_id}", headers=ada.auth)
    clock.advance(1)
    await client.post(f"/mutes/{cy.user_id}", headers=ada.auth)
    page = await (await client.get("/me/mutes?limit=1", headers=ada.auth)).get_json()
    assert [u["user_id"] for u in page["users"]] == [cy.user_id]
    assert set(page["users"][0]) == {"user_id", "display_name", "muted_at"}
    rest = await (await client.get(f"/me/mutes?cursor={page['next_cursor']}", headers=ada.auth)).get_json()
    assert rest["users"] == [{"user_id": bob.user_id, "display_name": "Bob", "muted_at": "2026-11-24T10:00:00.000Z"}]
    assert rest["next_cursor"] is None
    assert (await client.get("/me/mutes?limit=101", headers=ada.auth)).status_code == 400


async def test_blocks_and_follows_racing_never_leave_a_follow_and_counters_stay_exact(client, database_url):
    """Blocks, follows both ways and unfollows of one pair, concurrently: after each round with a block, no follow
    between the two exists; the follower counters always equal the rows (and no deadlock)."""
    ada, bob = await signup(client), await signup(client)
    for _ in range(6):
        async with trio.open_nursery() as nursery:
            for method, path, account in (
                ("POST", f"/follow/{bob.user_id}", ada),
                ("POST", f"/follow/{ada.user_id}", bob),
                ("POST", f"/blocks/{bob.user_id}", ada),
                ("POST", f"/follow/{bob.user_id}", ada),
                ("POST", f"/follow/{ada.user_id}", bob),
            ):
                nursery.start_soon(status, client, method, path, account)
        follows = await fetch(
            database_url,
            "SELECT 1 FROM follows WHERE follower_id = ANY($1::uuid[]) AND followee_id = ANY($1::uuid[])",
            [uuid.UUID(ada.user_id), uuid.UUID(bob.user_id)],
        )
        assert follows == []
        assert await status(client, "DELETE", f"/blocks/{bob.user_id}", ada) == 204
        async with trio.open_nursery() as nursery:
            for follower, followee in ((ada, bob), (bob, ada), (ada, bob), (bob, ada)):
                nursery.start_soon(status, client, "POST", f"/follow/{followee.user_id}", follower)
            nursery.start_soon(status, client, "DELETE", f"/follow/{bob.user_id}", ada)
    drift = await fetch(
        database_url,
        """SELECT u.id FROM users u
           WHERE u.followers_count <> (SELECT count(*) FROM follows f WHERE f.followee_id = u.id)
              OR u.following_count <> (SELECT count(*) FROM follows f WHERE f.follower_id = u.id)""",
    )
    assert drift == []
