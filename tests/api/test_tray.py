"""The tray and an author's stories (API.md "The tray ... and an author's stories"), one test per contract line.

The cache's own rules (hits, the seen log across processes) are in test_tray_cache.py; the model-based walk over
any sequence of posts, follows, blocks, mutes, views, deletes and expiries is in test_feed_model.py.
"""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from tests.helpers import authors_a_second_apart, post_stories_apart, post_story, signup, walk_pages


@pytest.fixture
def settings(settings):
    # The cache is tested on its own; here every read is the store's. Room for 101 stories of one author.
    return dataclasses.replace(
        settings, feed_cache_seconds=0, rate_limit_stories_per_minute=1_000, story_ttl_seconds=600
    )


async def tray(client, account, query=""):
    response = await client.get(f"/tray{query}", headers=account.auth)
    assert response.status_code == 200, await response.get_data()
    return await response.get_json()


async def groups(client, account, limit=50):
    """[(author id, [story ids])] of a whole walk."""
    walked = await walk_pages(client, account, "/tray", "authors", limit)
    return [(group["author"]["user_id"], [story["id"] for story in group["stories"]]) for group in walked]


async def view(client, account, story_id):
    response = await client.post(f"/stories/{story_id}/view", headers=account.auth)
    assert response.status_code == 200, await response.get_data()


async def test_the_tray_groups_the_feed_by_author_with_seen_and_latest_at(client, clock):
    ada, bob = await signup(client, display_name="Ada"), await signup(client)
    first = await post_story(client, ada, text="first")
    clock.advance(1)
    second = await post_story(client, ada, text="second")
    single = await (await client.get(f"/stories/{first}", headers=bob.auth)).get_json()
    await view(client, bob, first)

    page = await tray(client, bob)
    assert page["next_cursor"] is None
    [group] = page["authors"]
    assert group["author"] == {"user_id": ada.user_id, "display_name": "Ada"}
    assert [s["id"] for s in group["stories"]] == [first, second]  # oldest first
    assert group["stories"][0] == {**single, "seen": True}
    assert group["stories"][1]["seen"] is False
    assert group["has_unseen"] is True
    assert group["latest_at"] == "2026-11-24T10:00:01.000Z"

    await view(client, bob, second)
    [group] = (await tray(client, bob))["authors"]
    assert [s["seen"] for s in group["stories"]] == [True, True]
    assert group["has_unseen"] is False


async def test_the_tray_holds_exactly_the_feeds_stories(client, clock):
    viewer, friend, stranger, blocked, blocker, muted = [await signup(client) for _ in range(6)]
    for followee in (friend, muted):
        assert (await client.post(f"/follow/{followee.user_id}", headers=viewer.auth)).status_code == 200
    for author in (viewer, friend, stranger, blocked, blocker, muted):
        for visibility in ("public", "friends", "private"):
            clock.advance(0.001)
            await post_story(client, author, visibility)
    response = await client.post(
        "/stories",
        json={"text": "not for you", "visibility": "friends", "audience_user_ids": [stranger.user_id]},
        headers=friend.auth,
    )
    assert response.status_code == 201
    assert (await client.post(f"/blocks/{blocked.user_id}", headers=viewer.auth)).status_code == 200
    assert (await client.post(f"/blocks/{viewer.user_id}", headers=blocker.auth)).status_code == 200
    assert (await client.post(f"/mutes/{muted.user_id}", headers=viewer.auth)).status_code == 200

    feed = await walk_pages(client, viewer, "/feed", "stories", 100)
    walked = await groups(client, viewer)
    assert sorted(s for _, ids in walked for s in ids) == sorted(s["id"] for s in feed)
    assert len(feed) == 3 + 2 + 1  # own three, the friend's public and friends story, the stranger's public one
    assert [author for author, _ in walked] == [viewer.user_id, stranger.user_id, friend.user_id]


async def test_a_group_holds_the_authors_100_newest_stories(client, clock):
    ada, bob = await signup(client), await signup(client)
    ids = await post_stories_apart(client, clock, ada, 101, 0.001)
    [group] = (await tray(client, bob))["authors"]
    assert [s["id"] for s in group["stories"]] == ids[1:]


async def test_order_own_then_unseen_then_seen_each_by_latest_at_then_author_id(client, clock):
    me = await signup(client)
    authors = [await signup(client) for _ in range(4)]
    latest = {}
    for author in authors[:2]:
        latest[author.user_id] = await post_story(client, author)
    for author in authors[2:]:
        clock.advance(1)
        latest[author.user_id] = await post_story(client, author)
    clock.advance(1)
    await post_story(client, me, "private")
    await view(client, me, latest[authors[3].user_id])  # the newest author, all seen
    await view(client, me, latest[authors[0].user_id])

    walked = [author for author, _ in await groups(client, me, limit=1)]
    a0, a1, a2, a3 = (a.user_id for a in authors)
    assert walked == [me.user_id, a2, a1, a3, a0]


async def test_ties_on_latest_at_go_by_author_id(client):
    me = await signup(client)
    authors = [await signup(client) for _ in range(3)]
    for author in authors:
        await post_story(client, author)
    walked = [author for author, _ in await groups(client, me, limit=2)]
    assert walked == sorted((a.user_id for a in authors), key=uuid.UUID)


async def test_limit_defaults_to_20_and_must_be_1_to_50(client, clock):
    me = await signup(client)
    for _ in range(21):
        clock.advance(0.001)
        await post_story(client, await signup(client))
    page = await tray(client, me)
    assert len(page["authors"]) == 20
    assert page["next_cursor"] is not None
    assert len((await tray(client, me, "?limit=50"))["authors"]) == 21
    for bad in ("0", "51", "x", "-1", "1.5", ""):
        response = await client.get(f"/tray?limit={bad}", headers=me.auth)
        assert response.status_code == 400, bad
        assert (await response.get_json())["error"] == "invalid_request"


@pytest.mark.parametrize("cursor", ["nope", "bm9wZQ", "MTox", "MToxOjE6bm90LWEtdXVpZA", "MTo5OjE6" + "A" * 8])
async def test_a_bad_cursor_is_400(client, cursor):
    me = await signup(client)
    response = await client.get(f"/tray?cursor={cursor}", headers=me.auth)
    assert response.status_code == 400
    body = await response.get_json()
    assert (body["error"], body["fields"]) == ("invalid_request", {"cursor": "invalid"})


async def test_the_tray_needs_a_token(client):
    assert (await client.get("/tray")).status_code == 401
    assert (await client.get(f"/users/{uuid.uuid4()}/stories")).status_code == 401


async def test_a_walk_returns_every_author_once_while_the_caller_views_and_others_post(client, clock):
    me = await signup(client)
    authors, stories = await authors_a_second_apart(client, clock, 6)
    await view(client, me, stories[authors[0].user_id])  # one seen author, last in the order

    first = await tray(client, me, "?limit=2")
    served = [g["author"]["user_id"] for g in first["authors"]]
    cursor = first["next_cursor"]
    # During the walk: the caller views everything not yet served (which would move those authors to the
    # seen part of a new walk) and an author already served posts again (which would move them to the top).
    for author in authors:
        if author.user_id not in served:
            await view(client, me, stories[author.user_id])
    clock.advance(1)
    await post_story(client, authors[-1])
    while cursor is not None:
        page = await tray(client, me, f"?limit=2&cursor={cursor}")
        served += [g["author"]["user_id"] for g in page["authors"]]
        cursor = page["next_cursor"]
    assert served == [a.user_id for a in reversed(authors[1:])] + [authors[0].user_id]

    # The next walk sees the views at once: the one author with an unseen story (their new one) comes first.
    walked = [author for author, _ in await groups(client, me, limit=2)]
    assert walked[0] == authors[-1].user_id
    assert sorted(walked) == sorted(a.user_id for a in authors)


async def test_deletes_and_expiry_apply_at_once(client, clock, app_deps):
    ada, bob = await signup(client), await signup(client)
    old = await post_story(client, ada)
    clock.advance(1)
    doomed = await post_story(client, ada)
    assert await groups(client, bob) == [(ada.user_id, [old, doomed])]
    assert (await client.delete(f"/stories/{doomed}", headers=ada.auth)).status_code == 204
    assert await groups(client, bob) == [(ada.user_id, [old])]
    clock.advance(app_deps.settings.story_ttl_seconds - 1)
    assert await groups(client, bob) == []


async def test_an_authors_stories_oldest_first_with_seen(client, clock):
    ada, bob = await signup(client, display_name="Ada"), await signup(client)
    public = await post_story(client, ada)
    clock.advance(1)
    await post_story(client, ada, "friends")
    clock.advance(1)
    await post_story(client, ada, "private")
    clock.advance(1)
    later = await post_story(client, ada)
    await view(client, bob, later)
    single = await (await client.get(f"/stories/{public}", headers=bob.auth)).get_json()

    response = await client.get(f"/users/{ada.user_id}/stories", headers=bob.auth)
    assert response.status_code == 200
    body = await response.get_json()
    assert body == {"stories": [{**single, "seen": False}, {**body["stories"][1], "seen": True}]}
    assert body["stories"][1]["id"] == later
    # The author sees all of their own; their own views are never recorded, so never seen.
    own = await (await client.get(f"/users/{ada.user_id}/stories", headers=ada.auth)).get_json()
    assert [s["seen"] for s in own["stories"]] == [False] * 4
    # Muting hides an author from the feed and the tray, not from their own page.
    assert (await client.post(f"/mutes/{ada.user_id}", headers=bob.auth)).status_code == 200
    listed = await (await client.get(f"/users/{ada.user_id}/stories", headers=bob.auth)).get_json()
    assert [s["id"] for s in listed["stories"]] == [public, later]


async def test_an_authors_stories_are_their_100_newest(client, clock):
    ada, bob = await signup(client), await signup(client)
    ids = await post_stories_apart(client, clock, ada, 101, 0.001)
    body = await (await client.get(f"/users/{ada.user_id}/stories", headers=bob.auth)).get_json()
    assert [s["id"] for s in body["stories"]] == ids[1:]


async def test_an_authors_stories_404_unknown_malformed_or_blocked(client):
    ada, bob, cy = await signup(client), await signup(client), await signup(client)
    await post_story(client, ada)
    for path in (f"/users/{uuid.uuid4()}/stories", "/users/nope/stories"):
        response = await client.get(path, headers=bob.auth)
        assert response.status_code == 404
        assert (await response.get_json())["error"] == "not_found"
    assert (await client.post(f"/blocks/{bob.user_id}", headers=ada.auth)).status_code == 200
    assert (await client.post(f"/blocks/{ada.user_id}", headers=cy.auth)).status_code == 200
    for reader in (bob, cy):  # blocked by the author, and blocking the author
        assert (await client.get(f"/users/{ada.user_id}/stories", headers=reader.auth)).status_code == 404
    # A user without stories: an empty list, not a 404.
    empty = await client.get(f"/users/{bob.user_id}/stories", headers=cy.auth)
    assert (empty.status_code, await empty.get_json()) == (200, {"stories": []})
