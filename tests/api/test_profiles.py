"""Profiles (API.md "Profiles"): display names, GET/PATCH /me, GET /users/{id}, the author object on stories,
and emails shown to nobody but their owner."""

from __future__ import annotations

import uuid

import pytest

from tests.helpers import signup


async def get_json(client, path, account, status=200):
    response = await client.get(path, headers=account.auth)
    assert response.status_code == status, await response.get_data()
    return await response.get_json()


async def post_story(client, account, visibility="public"):
    response = await client.post("/stories", json={"text": "hi", "visibility": visibility}, headers=account.auth)
    assert response.status_code == 201, await response.get_data()
    return await response.get_json()


async def test_signup_takes_an_optional_display_name_trimmed(client):
    ada = await signup(client, display_name="  Ada Lovelace \t")
    me = await get_json(client, "/me", ada)
    assert me == {
        "user_id": ada.user_id,
        "email": ada.email,
        "display_name": "Ada Lovelace",
        "created_at": me["created_at"],
        "followers": 0,
        "following": 0,
    }
    nameless = await signup(client)
    assert (await get_json(client, "/me", nameless))["display_name"] is None
    response = await client.post(
        "/signup", json={"email": f"{uuid.uuid4().hex}@example.com", "password": "long enough", "display_name": None}
    )
    assert response.status_code == 201


@pytest.mark.parametrize(
    "name",
    ["", "   ", "x" * 51, "tab\tinside", "new\nline", "nul\x00", "del\x7f", "c1\x85c1", 42, ["Ada"], {"n": 1}],
)
async def test_invalid_display_names_are_400_on_signup_and_patch(client, name):
    response = await client.post(
        "/signup", json={"email": f"{uuid.uuid4().hex}@example.com", "password": "long enough", "display_name": name}
    )
    assert response.status_code == 400
    body = await response.get_json()
    assert body["error"] == "invalid_request"
    assert "display_name" in body["fields"]
    ada = await signup(client)
    response = await client.patch("/me", json={"display_name": name}, headers=ada.auth)
    assert response.status_code == 400
    assert "display_name" in (await response.get_json())["fields"]


async def test_fifty_characters_and_emoji_sequences_are_names(client):
    # 50 code points exactly, and a family emoji held together by zero-width joiners (format characters).
    ada = await signup(client, display_name="é" * 50)
    assert (await get_json(client, "/me", ada))["display_name"] == "é" * 50
    response = await client.patch("/me", json={"display_name": "👨\u200d👩\u200d👧 Ada"}, headers=ada.auth)
    assert response.status_code == 200
    assert (await response.get_json())["display_name"] == "👨\u200d👩\u200d👧 Ada"


async def test_patch_me_sets_and_clears_the_name_and_nothing_else(client):
    ada = await signup(client)
    response = await client.patch("/me", json={"display_name": " Ada "}, headers=ada.auth)
    assert response.status_code == 200
    changed = await response.get_json()
    assert changed == {**(await get_json(client, "/me", ada)), "display_name": "Ada"}
    assert changed["email"] == ada.email

    response = await client.patch("/me", json={}, headers=ada.auth)
    assert (response.status_code, (await response.get_json())["display_name"]) == (200, "Ada")

    response = await client.patch("/me", json={"display_name": None}, headers=ada.auth)
    assert (response.status_code, (await response.get_json())["display_name"]) == (200, None)

    response = await client.patch("/me", json={"display_name": "Ada", "email": "x@example.com"}, headers=ada.auth)
    assert response.status_code == 400
    assert (await response.get_json())["fields"] == {"email": "cannot be changed"}
    assert (await get_json(client, "/me", ada))["display_name"] is None

    assert (await client.patch("/me", data="nope", headers=ada.auth)).status_code == 415
    assert (await client.patch("/me", json={"display_name": "Ada"})).status_code == 401


async def test_a_public_profile_shows_counts_and_relations_but_never_the_email(client):
    ada, bob, cy = await signup(client, display_name="Ada"), await signup(client), await signup(client)
    for follower, followee in ((bob, ada), (cy, ada), (ada, bob)):
        assert (await client.post(f"/follow/{followee.user_id}", headers=follower.auth)).status_code == 200
    profile = await get_json(client, f"/users/{ada.user_id}", bob)
    assert profile == {
        "user_id": ada.user_id,
        "display_name": "Ada",
        "created_at": (await get_json(client, "/me", ada))["created_at"],
        "followers": 2,
        "following": 1,
        "followed_by_me": True,
        "follows_me": True,
    }
    assert (await get_json(client, f"/users/{ada.user_id}", cy))["follows_me"] is False
    assert (await get_json(client, f"/users/{bob.user_id}", cy))["followed_by_me"] is False

    assert (await client.delete(f"/follow/{ada.user_id}", headers=bob.auth)).status_code == 204
    profile = await get_json(client, f"/users/{ada.user_id}", bob)
    assert (profile["followers"], profile["followed_by_me"]) == (1, False)
    me = await get_json(client, "/me", bob)
    assert (me["followers"], me["following"]) == (1, 0)


async def test_unknown_and_malformed_users_are_404(client):
    ada = await signup(client)
    for path in (f"/users/{uuid.uuid4()}", "/users/not-a-uuid", "/users/not-a-uuid/followers"):
        body = await get_json(client, path, ada, status=404)
        assert body["error"] == "not_found"


async def test_every_story_carries_its_author(client):
    ada, bob = await signup(client, display_name="Ada"), await signup(client)
    created = await post_story(client, ada)
    assert created["author"] == {"user_id": ada.user_id, "display_name": "Ada"}
    keyed = await client.post(
        "/stories", json={"text": "k", "visibility": "public"}, headers={**ada.auth, "Idempotency-Key": "k1"}
    )
    assert (await keyed.get_json())["author"] == {"user_id": ada.user_id, "display_name": "Ada"}
    with_audience = await client.post(
        "/stories",
        json={"text": "a", "visibility": "friends", "audience_user_ids": [bob.user_id]},
        headers=ada.auth,
    )
    assert (await with_audience.get_json())["author"]["display_name"] == "Ada"

    assert (await get_json(client, f"/stories/{created['id']}", bob))["author"]["display_name"] == "Ada"
    assert (await client.patch("/me", json={"display_name": "Countess"}, headers=ada.auth)).status_code == 200
    assert (await get_json(client, f"/stories/{created['id']}", bob))["author"]["display_name"] == "Countess"
    # The caller's own feed shows their new name at once, cache or not.
    feed = await get_json(client, "/feed", ada)
    assert {s["author"]["display_name"] for s in feed["stories"]} == {"Countess"}
    bob_story = await post_story(client, bob)
    assert bob_story["author"] == {"user_id": bob.user_id, "display_name": None}
    # A replay returns the original response, name included.
    replay = await client.post(
        "/stories", json={"text": "k", "visibility": "public"}, headers={**ada.auth, "Idempotency-Key": "k1"}
    )
    assert (await replay.get_json())["author"]["display_name"] == "Ada"


async def test_emails_are_shown_to_their_owner_only(client):
    ada = await signup(client, display_name="Ada")
    bob = await signup(client)
    story = await post_story(client, ada)
    await client.post(f"/follow/{ada.user_id}", headers=bob.auth)
    await client.post(f"/stories/{story['id']}/view", headers=bob.auth)
    await client.post(f"/stories/{story['id']}/reactions", json={"emoji": "🔥"}, headers=bob.auth)
    seen_by_bob = [
        await client.get(path, headers=bob.auth)
        for path in (
            f"/users/{ada.user_id}",
            f"/users/{ada.user_id}/followers",
            f"/users/{bob.user_id}/following",
            f"/stories/{story['id']}",
            "/feed",
        )
    ]
    seen_by_ada = [
        await client.get(path, headers=ada.auth)
        for path in (f"/stories/{story['id']}/viewers", f"/users/{ada.user_id}/followers", "/feed")
    ]
    for response in seen_by_bob:
        assert response.status_code == 200
        assert ada.email not in (await response.get_data()).decode()
    for response in seen_by_ada:
        assert response.status_code == 200
        assert bob.email not in (await response.get_data()).decode()
    assert ada.email in (await (await client.get("/me", headers=ada.auth)).get_data()).decode()
