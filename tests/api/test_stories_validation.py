"""Every documented 4xx of the Stories and Social graph routes (API.md), and what must never leak."""

from __future__ import annotations

import base64
import dataclasses
import uuid
from typing import Any

import pytest

from stories.settings import Settings
from stories.store.uploads import Uploads
from tests.helpers import Account, signup

# Many stories are created per test within one instant of the fixed clock; rate limits are not tested here.
UNLIMITED = 1_000_000


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings, rate_limit_stories_per_minute=UNLIMITED, rate_limit_reactions_per_minute=UNLIMITED
    )


async def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    """The error body, after checking API.md's shape: {"error", "message"[, "fields"]}."""
    body = await response.get_json()
    assert response.status_code == status, body
    assert body["error"] == code
    assert isinstance(body["message"], str)
    assert body["message"]
    assert set(body) <= {"error", "message", "fields"}
    return dict(body)


async def create(client: Any, author: Account, body: Any) -> Any:
    return await client.post("/stories", json=body, headers=author.auth)


async def feed_ids(client: Any, account: Account) -> list[str]:
    response = await client.get("/feed?limit=100", headers=account.auth)
    assert response.status_code == 200
    return [story["id"] for story in (await response.get_json())["stories"]]


@pytest.fixture
async def alice(client) -> Account:
    return await signup(client)


@pytest.fixture
async def bob(client) -> Account:
    return await signup(client)


# --- POST /stories -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text": "hi"}, "visibility"),
        ({"text": "hi", "visibility": None}, "visibility"),
        ({"text": "hi", "visibility": "everyone"}, "visibility"),
        ({"text": "hi", "visibility": "Public"}, "visibility"),
        ({"text": "hi", "visibility": 1}, "visibility"),
        ({"text": "hi", "visibility": ["public"]}, "visibility"),
        ({"visibility": "public"}, "text"),
        ({"text": None, "media_key": None, "visibility": "public"}, "text"),
        ({"text": "", "visibility": "public"}, "text"),
        ({"text": " \t\n ", "visibility": "public"}, "text"),
        ({"text": "x" * 2201, "visibility": "public"}, "text"),
        ({"text": 123, "visibility": "public"}, "text"),
        ({"text": ["hi"], "visibility": "public"}, "text"),
        ({"text": {"en": "hi"}, "visibility": "public"}, "text"),
        ({"text": True, "visibility": "public"}, "text"),
        ({"media_key": 5, "visibility": "public"}, "media_key"),
        ({"text": "hi", "visibility": "public", "audience_user_ids": ["{other}"]}, "audience_user_ids"),
        ({"text": "hi", "visibility": "private", "audience_user_ids": ["{other}"]}, "audience_user_ids"),
        ({"text": "hi", "visibility": "friends", "audience_user_ids": "everyone"}, "audience_user_ids"),
        ({"text": "hi", "visibility": "friends", "audience_user_ids": ["not-a-uuid"]}, "audience_user_ids"),
        ({"text": "hi", "visibility": "friends", "audience_user_ids": [42]}, "audience_user_ids"),
        ({"text": "hi", "visibility": "friends", "audience_user_ids": [str(uuid.uuid4())]}, "audience_user_ids"),
    ],
)
async def test_create_rejects_invalid_bodies_and_creates_nothing(client, alice, bob, body, field):
    if body.get("audience_user_ids") == ["{other}"]:
        body = {**body, "audience_user_ids": [bob.user_id]}
    error = await error_of(await create(client, alice, body), 400, "invalid_request")
    assert field in error.get("fields", {}), error
    assert await feed_ids(client, alice) == []


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"[1, 2]", b'"text"', b"null", b'{"text": "hi", "visibility": "public"'],
)
async def test_create_rejects_malformed_json(client, alice, raw):
    headers = {**alice.auth, "Content-Type": "application/json"}
    response = await client.post("/stories", data=raw, headers=headers)
    await error_of(response, 400, "invalid_request")


async def test_create_rejects_non_json_body(client, alice):
    headers = {**alice.auth, "Content-Type": "text/plain"}
    response = await client.post("/stories", data=b'{"text": "hi", "visibility": "public"}', headers=headers)
    await error_of(response, 415, "unsupported_media_type")


async def test_text_length_is_counted_after_trimming(client, alice):
    response = await create(client, alice, {"text": "x" * 2200, "visibility": "public"})
    assert response.status_code == 201
    padded = "  " + "é" * 2200 + "\n"
    response = await create(client, alice, {"text": padded, "visibility": "public"})
    assert response.status_code == 201
    assert (await response.get_json())["text"] == "é" * 2200


@pytest.mark.parametrize(
    "key",
    [
        "uploads/{other}/photo.jpg",
        "uploads/{me}/../{other}/photo.jpg",
        "uploads/{me}/a/../../{other}/photo.jpg",
        "uploads/{me}/..",
        "uploads/{me}/",
        "uploads/{me}",
        "uploads/{me}photo.jpg",
        "/uploads/{me}/photo.jpg",
        "media/{me}/photo.jpg",
        "Uploads/{me}/photo.jpg",
        "photo.jpg",
        "",
        "s3://bucket/uploads/{me}/photo.jpg",
    ],
)
async def test_media_key_outside_the_callers_namespace(client, alice, bob, key):
    media_key = key.format(me=alice.user_id, other=bob.user_id)
    response = await create(client, alice, {"media_key": media_key, "visibility": "public"})
    error = await error_of(response, 400, "invalid_request")
    assert "media_key" in error.get("fields", {}), error
    assert await feed_ids(client, alice) == []


async def test_media_key_issued_to_the_caller(client, store, clock, alice):
    """With object storage off, nobody can be asked whether the object is there: a key issued to the caller is
    taken as it is (tests/media/ cover storage on)."""
    media_key = f"uploads/{alice.user_id}/0f3c9a.jpg"
    await Uploads(store.database).issue(media_key, uuid.UUID(alice.user_id), "image/jpeg", 10, clock.now())
    response = await create(client, alice, {"media_key": media_key, "visibility": "public"})
    assert response.status_code == 201, await response.get_data()
    story = await response.get_json()
    assert (story["media_key"], story["text"]) == (media_key, None)


async def test_audience_size_limit_counts_distinct_users(client, store, clock, alice):
    # 101 users straight through the store: signing that many up over HTTP would only add bcrypt time.
    others = []
    for n in range(101):
        user_id = uuid.uuid4()
        assert await store.create_user(user_id, f"audience-{n}-{user_id.hex[:8]}@example.com", "x", clock.now(), None)
        others.append(str(user_id))

    too_many = {"text": "hi", "visibility": "friends", "audience_user_ids": others}
    error = await error_of(await create(client, alice, too_many), 400, "invalid_request")
    assert "audience_user_ids" in error.get("fields", {})
    assert await feed_ids(client, alice) == []

    hundred = {"text": "hi", "visibility": "friends", "audience_user_ids": others[:100]}
    assert (await create(client, alice, hundred)).status_code == 201
    repeated = {"text": "hi", "visibility": "friends", "audience_user_ids": others[:100] + others[:50] + others[:1]}
    assert (await create(client, alice, repeated)).status_code == 201
    assert len(await feed_ids(client, alice)) == 2


async def test_audience_is_all_or_nothing(client, alice, bob):
    # One known user and one unknown one: neither the story nor bob's audience row may be left behind.
    body = {"text": "hi", "visibility": "friends", "audience_user_ids": [bob.user_id, str(uuid.uuid4())]}
    await error_of(await create(client, alice, body), 400, "invalid_request")
    assert (await client.post(f"/follow/{alice.user_id}", headers=bob.auth)).status_code == 200
    assert await feed_ids(client, alice) == []
    assert await feed_ids(client, bob) == []


# --- reads ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "story_id", ["not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g", "%20", str(uuid.uuid4())]
)
async def test_unknown_or_malformed_story_ids_are_404(client, alice, story_id):
    await error_of(await client.get(f"/stories/{story_id}", headers=alice.auth), 404, "not_found")
    await error_of(await client.post(f"/stories/{story_id}/view", headers=alice.auth), 404, "not_found")
    response = await client.post(f"/stories/{story_id}/reactions", json={"emoji": "🔥"}, headers=alice.auth)
    await error_of(response, 404, "not_found")


@pytest.mark.parametrize(
    "limit",
    [
        "0",
        "101",
        "abc",
        "-1",
        "",
        "1.5",
        "20 ",
        "+5",
        "0x10",
        "99999999999999999999999",
        "１",
        "²",
    ],
)
async def test_feed_rejects_bad_limits(client, alice, limit):
    response = await client.get("/feed", query_string={"limit": limit}, headers=alice.auth)
    error = await error_of(response, 400, "invalid_request")
    assert "limit" in error.get("fields", {}), error


@pytest.mark.parametrize("limit", ["1", "100"])
async def test_feed_accepts_limits_at_the_bounds(client, alice, limit):
    assert (await client.get(f"/feed?limit={limit}", headers=alice.auth)).status_code == 200


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "!!!",
        "abc",
        "a" * 1000,
        _b64(b"garbage"),
        _b64(b"123:not-a-uuid"),
        _b64(b"x:" + str(uuid.uuid4()).encode()),
        _b64(b"99999999999999999999999:" + str(uuid.uuid4()).encode()),
        _b64(b"\xff\xfe:" + str(uuid.uuid4()).encode()),
    ],
)
async def test_feed_rejects_bad_cursors(client, alice, cursor):
    response = await client.get("/feed", query_string={"cursor": cursor}, headers=alice.auth)
    await error_of(response, 400, "invalid_request")


# --- who may see what: 404, never 403 ------------------------------------------------------------------


async def test_hidden_stories_are_404_for_every_route(client, alice, bob):
    carol = await signup(client)
    # bob follows alice; carol is on no list and follows nobody.
    assert (await client.post(f"/follow/{alice.user_id}", headers=bob.auth)).status_code == 200
    assert (await client.post(f"/follow/{alice.user_id}", headers=carol.auth)).status_code == 200
    assert (await client.delete(f"/follow/{alice.user_id}", headers=carol.auth)).status_code == 204
    dave = await signup(client)
    assert (await client.post(f"/follow/{alice.user_id}", headers=dave.auth)).status_code == 200

    hidden = {}
    for name, body in {
        "friends": {"text": "f", "visibility": "friends"},
        "private": {"text": "p", "visibility": "private"},
        "listed": {"text": "l", "visibility": "friends", "audience_user_ids": [bob.user_id]},
    }.items():
        response = await create(client, alice, body)
        assert response.status_code == 201
        hidden[name] = (await response.get_json())["id"]

    cases = [(carol, "friends"), (carol, "private"), (carol, "listed"), (bob, "private"), (dave, "private")]
    cases += [(dave, "listed")]  # a follower who is not on the audience list
    for viewer, name in cases:
        story_id = hidden[name]
        await error_of(await client.get(f"/stories/{story_id}", headers=viewer.auth), 404, "not_found")
        await error_of(await client.post(f"/stories/{story_id}/view", headers=viewer.auth), 404, "not_found")
        response = await client.post(f"/stories/{story_id}/reactions", json={"emoji": "👍"}, headers=viewer.auth)
        await error_of(response, 404, "not_found")
        assert story_id not in await feed_ids(client, viewer)

    # Nothing the refused callers did was recorded.
    for story_id in hidden.values():
        story = await (await client.get(f"/stories/{story_id}", headers=alice.auth)).get_json()
        assert (story["view_count"], story["reaction_count"]) == (0, 0)

    # The ones who may see it, may.
    for viewer, name in [(bob, "friends"), (bob, "listed"), (dave, "friends"), (alice, "private")]:
        assert (await client.get(f"/stories/{hidden[name]}", headers=viewer.auth)).status_code == 200


# --- reactions -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"emoji": None},
        {"emoji": ""},
        {"emoji": "😀"},
        {"emoji": "heart"},
        {"emoji": ":fire:"},
        {"emoji": "👍👍"},
        {"emoji": " 👍"},
        {"emoji": "❤\ufe0f\ufe0f"},
        {"emoji": 1},
        {"emoji": ["👍"]},
        {"reaction": "👍"},
    ],
)
async def test_reaction_rejects_bad_emoji(client, alice, body):
    story_id = (await (await create(client, alice, {"text": "hi", "visibility": "public"})).get_json())["id"]
    response = await client.post(f"/stories/{story_id}/reactions", json=body, headers=alice.auth)
    error = await error_of(response, 400, "invalid_request")
    assert "emoji" in error.get("fields", {}), error
    story = await (await client.get(f"/stories/{story_id}", headers=alice.auth)).get_json()
    assert story["reaction_count"] == 0


@pytest.mark.parametrize("emoji", ["👍", "❤️", "❤", "😂", "😮", "😢", "🔥"])
async def test_reaction_accepts_each_documented_emoji(client, alice, bob, emoji):
    story_id = (await (await create(client, alice, {"text": "hi", "visibility": "public"})).get_json())["id"]
    response = await client.post(f"/stories/{story_id}/reactions", json={"emoji": emoji}, headers=bob.auth)
    assert response.status_code == 201
    body = await response.get_json()
    assert body["emoji"] == ("❤️" if emoji == "❤" else emoji)
    assert (body["story_id"], body["user_id"]) == (story_id, bob.user_id)


# --- follow / unfollow ---------------------------------------------------------------------------------


async def test_follow_errors(client, alice, bob):
    await error_of(await client.post(f"/follow/{alice.user_id}", headers=alice.auth), 400, "invalid_request")
    await error_of(await client.post(f"/follow/{uuid.uuid4()}", headers=alice.auth), 404, "not_found")
    await error_of(await client.post("/follow/not-a-uuid", headers=alice.auth), 404, "not_found")
    # Unfollowing someone you do not follow (or who does not exist) is not an error.
    assert (await client.delete(f"/follow/{bob.user_id}", headers=alice.auth)).status_code == 204
    assert (await client.delete(f"/follow/{uuid.uuid4()}", headers=alice.auth)).status_code == 204
    assert (await client.delete(f"/follow/{alice.user_id}", headers=alice.auth)).status_code == 204


async def test_follow_is_idempotent(client, clock, alice, bob):
    first = await client.post(f"/follow/{bob.user_id}", headers=alice.auth)
    clock.advance(10)
    again = await client.post(f"/follow/{bob.user_id}", headers=alice.auth)
    assert (first.status_code, again.status_code) == (200, 200)
    assert await first.get_json() == await again.get_json()
    assert (await client.delete(f"/follow/{bob.user_id}", headers=alice.auth)).status_code == 204
    assert (await client.delete(f"/follow/{bob.user_id}", headers=alice.auth)).status_code == 204


# --- auth ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/stories"),
        ("GET", f"/stories/{uuid.uuid4()}"),
        ("GET", "/feed"),
        ("POST", f"/stories/{uuid.uuid4()}/view"),
        ("POST", f"/stories/{uuid.uuid4()}/reactions"),
        ("POST", f"/follow/{uuid.uuid4()}"),
        ("DELETE", f"/follow/{uuid.uuid4()}"),
        ("GET", "/me/stats"),
    ],
)
async def test_routes_need_a_token(client, method, path):
    response = await client.open(path, method=method, json={"text": "hi", "visibility": "public", "emoji": "👍"})
    await error_of(response, 401, "unauthorized")


# --- no other user's email, anywhere -------------------------------------------------------------------


async def test_no_other_users_email_in_any_response(client):
    alice = await signup(client, email="alice.secret@example.com")
    bob = await signup(client, email="bob.secret@example.com")
    emails = {alice.user_id: alice.email, bob.user_id: bob.email}
    seen: list[tuple[Account, bytes]] = []

    async def call(account: Account, method: str, path: str, body: Any = None) -> Any:
        response = await client.open(path, method=method, json=body, headers=account.auth)
        seen.append((account, await response.get_data()))
        return await response.get_json() if response.status_code != 204 else None

    await call(bob, "POST", f"/follow/{alice.user_id}")
    await call(alice, "POST", f"/follow/{bob.user_id}")
    story = await call(
        alice, "POST", "/stories", {"text": "hi", "visibility": "friends", "audience_user_ids": [bob.user_id]}
    )
    public = await call(bob, "POST", "/stories", {"text": "yo", "visibility": "public"})
    await call(
        alice, "POST", "/stories", {"text": "x", "visibility": "friends", "audience_user_ids": [str(uuid.uuid4())]}
    )
    for viewer, story_id in [(bob, story["id"]), (alice, public["id"])]:
        await call(viewer, "GET", f"/stories/{story_id}")
        await call(viewer, "POST", f"/stories/{story_id}/view")
        await call(viewer, "POST", f"/stories/{story_id}/reactions", {"emoji": "🔥"})
        await call(viewer, "POST", f"/stories/{story_id}/reactions", {"emoji": "nope"})
    for account in (alice, bob):
        await call(account, "GET", "/feed?limit=1")
        await call(account, "GET", "/me/stats")
        await call(account, "POST", f"/follow/{account.user_id}")
        await call(account, "DELETE", f"/follow/{next(u for u in emails if u != account.user_id)}")

    for caller, raw in seen:
        text = raw.decode()
        for user_id, email in emails.items():
            if user_id != caller.user_id:
                assert email not in text, (caller.email, text)
                assert email.split("@")[0] not in text, (caller.email, text)
