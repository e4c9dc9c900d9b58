"""GET /users/{id}/followers and /following: newest follow first, keyset pagination, blocks respected."""

from __future__ import annotations

import uuid

import pytest
import trio

from tests.helpers import signup, walk_pages


async def test_followers_and_following_newest_first_in_pages(client, clock):
    star = await signup(client, display_name="Star")
    fans = [await signup(client, display_name=f"fan {i}") for i in range(7)]
    for i, fan in enumerate(fans):
        # Pairs of follows share a millisecond: the user id breaks the tie, and pages never split a tie wrongly.
        clock.advance(0.001 * (i % 2))
        assert (await client.post(f"/follow/{star.user_id}", headers=fan.auth)).status_code == 200
    full = await walk_pages(client, fans[0], f"/users/{star.user_id}/followers", "users", 100)
    order = [(e["followed_at"], e["user_id"]) for e in full]
    assert order == sorted(order, reverse=True)
    assert {e["user_id"] for e in full} == {f.user_id for f in fans}
    assert {e["display_name"] for e in full} == {f"fan {i}" for i in range(7)}
    assert set(full[0]) == {"user_id", "display_name", "followed_at"}
    for limit in (1, 2, 3, 6, 7):
        assert await walk_pages(client, star, f"/users/{star.user_id}/followers", "users", limit) == full

    following = await walk_pages(client, star, f"/users/{fans[3].user_id}/following", "users", 1)
    assert [(e["user_id"], e["display_name"]) for e in following] == [(star.user_id, "Star")]
    assert await walk_pages(client, star, f"/users/{star.user_id}/following", "users", 50) == []


async def test_the_default_page_is_fifty_and_limits_are_checked(client):
    star = await signup(client)
    response = await client.get(f"/users/{star.user_id}/followers", headers=star.auth)
    assert await response.get_json() == {"users": [], "next_cursor": None}
    for bad in ("0", "101", "-1", "x", "1.5", "%C2%B2"):
        response = await client.get(f"/users/{star.user_id}/followers?limit={bad}", headers=star.auth)
        assert response.status_code == 400
        assert (await response.get_json())["fields"] == {"limit": "must be a whole number from 1 to 100"}
    response = await client.get(f"/users/{star.user_id}/following?cursor=%%%", headers=star.auth)
    assert (response.status_code, (await response.get_json())["error"]) == (400, "invalid_request")


async def test_fifty_one_followers_make_two_default_pages(client):
    star = await signup(client)
    async with trio.open_nursery() as nursery:
        for _ in range(51):

            async def follow():
                fan = await signup(client)
                await client.post(f"/follow/{star.user_id}", headers=fan.auth)

            nursery.start_soon(follow)
    first = await (await client.get(f"/users/{star.user_id}/followers", headers=star.auth)).get_json()
    assert len(first["users"]) == 50
    rest = await (
        await client.get(f"/users/{star.user_id}/followers?cursor={first['next_cursor']}", headers=star.auth)
    ).get_json()
    assert (len(rest["users"]), rest["next_cursor"]) == (1, None)
    assert (await (await client.get("/me", headers=star.auth)).get_json())["followers"] == 51


@pytest.mark.parametrize("which", ["followers", "following"])
async def test_unknown_users_and_users_who_blocked_the_reader_are_404(client, which):
    ada, bob = await signup(client), await signup(client)
    response = await client.get(f"/users/{uuid.uuid4()}/{which}", headers=ada.auth)
    assert response.status_code == 404
    assert (await client.post(f"/blocks/{bob.user_id}", headers=ada.auth)).status_code == 200
    response = await client.get(f"/users/{ada.user_id}/{which}", headers=bob.auth)
    assert (response.status_code, (await response.get_json())["error"]) == (404, "not_found")
    # The blocker still reads the lists of the user they blocked.
    assert (await client.get(f"/users/{bob.user_id}/{which}", headers=ada.auth)).status_code == 200


async def test_users_in_a_block_with_the_reader_are_left_out_of_lists(client):
    star, ada, bob, cy = [await signup(client) for _ in range(4)]
    for fan in (ada, bob, cy):
        await client.post(f"/follow/{star.user_id}", headers=fan.auth)
    assert (await client.post(f"/blocks/{bob.user_id}", headers=ada.auth)).status_code == 200
    # Bob cannot follow Ada's activity through Star's list, and Ada does not see Bob there either.
    seen_by_bob = await walk_pages(client, bob, f"/users/{star.user_id}/followers", "users", 10)
    assert ada.user_id not in {e["user_id"] for e in seen_by_bob}
    seen_by_ada = await walk_pages(client, ada, f"/users/{star.user_id}/followers", "users", 10)
    assert bob.user_id not in {e["user_id"] for e in seen_by_ada}
    seen_by_cy = await walk_pages(client, cy, f"/users/{star.user_id}/followers", "users", 1)
    assert {e["user_id"] for e in seen_by_cy} == {ada.user_id, bob.user_id, cy.user_id}
