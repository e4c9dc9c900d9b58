"""GET /me/export (API.md "Your account and your data"): one JSON document with everything stored about the caller,
read in chunks, no token or password material, 1 per 10 minutes."""

from __future__ import annotations

import dataclasses
from typing import Any
from uuid import UUID

import orjson
import pytest
import trio

import stories.api.account as account_module
from stories.store.account import EXPORT_SECTIONS
from stories.store.uploads import Uploads
from tests.helpers import PASSWORD, Account, post_story, signup

DAY = 86_400
TEN_YEARS = 10 * 365 * DAY


@pytest.fixture
def settings(settings):
    return dataclasses.replace(settings, jwt_ttl_seconds=TEN_YEARS, rate_limit_reactions_per_minute=1_000_000)


async def export(client: Any, account: Account) -> tuple[bytes, dict[str, Any]]:
    response = await client.get("/me/export", headers=account.auth)
    assert response.status_code == 200, await response.get_data()
    assert response.content_type == "application/json; charset=utf-8"
    assert "attachment" in response.headers["Content-Disposition"]
    raw = await response.get_data()
    return raw, orjson.loads(raw)


async def test_the_document_holds_everything_of_the_caller_and_no_secret(client, clock, store, counters):
    ada, bob, cy = await signup(client, display_name="Ada"), await signup(client), await signup(client)
    await client.post(f"/follow/{bob.user_id}", headers=ada.auth)
    await client.post(f"/follow/{ada.user_id}", headers=cy.auth)
    await client.post(f"/blocks/{cy.user_id}", headers=ada.auth)  # removes cy -> ada
    await client.post(f"/mutes/{bob.user_id}", headers=ada.auth)
    friends = await client.post(
        "/stories",
        json={"text": "for bob", "visibility": "friends", "audience_user_ids": [bob.user_id]},
        headers=ada.auth,
    )
    friends_id = (await friends.get_json())["id"]
    deleted = await post_story(client, ada, text="gone")
    assert (await client.delete(f"/stories/{deleted}", headers=ada.auth)).status_code == 204
    bobs = await post_story(client, bob)
    await client.post(f"/stories/{bobs}/view", headers=ada.auth)
    await client.post(f"/stories/{bobs}/reactions", json={"emoji": "🔥"}, headers=ada.auth)
    filed = await client.post(f"/users/{bob.user_id}/report", json={"reason": "spam"}, headers=ada.auth)
    assert filed.status_code == 201
    reported = await client.post(f"/users/{ada.user_id}/report", json={"reason": "spam"}, headers=cy.auth)
    assert reported.status_code in (201, 404)  # Ada blocks Cy: what Cy reports of her is not hers either way
    await Uploads(store.database).issue(
        f"uploads/{ada.user_id}/a.jpg", UUID(ada.user_id), "image/jpeg", 10, clock.now()
    )
    clock.advance(2 * DAY)  # every story of Ada's has expired by now: the export keeps them

    raw, document = await export(client, ada)

    assert list(document) == ["exported_at", "profile", *(section.name for section in EXPORT_SECTIONS)]
    assert document["profile"] == {
        "user_id": ada.user_id,
        "email": ada.email,
        "display_name": "Ada",
        "created_at": document["profile"]["created_at"],
        "followers_count": 0,
        "following_count": 1,
    }
    (session,) = document["sessions"]  # the signup's
    assert set(session) == {"session_id", "created_at", "last_used_at", "user_agent", "revoked_at"}
    by_id = {story["id"]: story for story in document["stories"]}
    assert set(by_id) == {friends_id, deleted}
    assert by_id[friends_id]["audience_user_ids"] == [bob.user_id]
    assert by_id[friends_id]["deleted_at"] is None
    assert by_id[deleted]["deleted_at"] is not None
    assert by_id[deleted]["created_at"].endswith("Z")
    assert [view["story_id"] for view in document["views"]] == [bobs]
    assert [(r["story_id"], r["emoji"]) for r in document["reactions"]] == [(bobs, "🔥")]
    assert [f["user_id"] for f in document["following"]] == [bob.user_id]
    assert document["followers"] == []
    assert [b["user_id"] for b in document["blocks"]] == [cy.user_id]
    assert [m["user_id"] for m in document["mutes"]] == [bob.user_id]
    assert [(r["target_type"], r["user_id"], r["reason"]) for r in document["reports"]] == [
        ("user", bob.user_id, "spam")
    ]
    assert [u["media_key"] for u in document["uploads"]] == [f"uploads/{ada.user_id}/a.jpg"]
    # No secrets: neither the password, nor its hash, nor a token.
    for secret in (PASSWORD, "$2b$", ada.token, ada.refresh_token, "password", "token"):
        assert secret.encode() not in raw


async def test_long_lists_are_read_in_chunks_each_row_once(client, monkeypatch):
    monkeypatch.setattr(account_module, "EXPORT_CHUNK_ROWS", 2)
    ada = await signup(client)
    others = [await signup(client) for _ in range(5)]
    for other in others:
        await client.post(f"/follow/{other.user_id}", headers=ada.auth)
        await client.post(f"/follow/{ada.user_id}", headers=other.auth)
    stories = {await post_story(client, ada, text=f"story {n}") for n in range(4)}

    _, document = await export(client, ada)

    ids = sorted(other.user_id for other in others)
    assert sorted(f["user_id"] for f in document["following"]) == ids
    assert len(document["following"]) == 5
    assert sorted(f["user_id"] for f in document["followers"]) == ids
    assert len(document["followers"]) == 5
    assert len(document["stories"]) == 4
    assert {s["id"] for s in document["stories"]} == stories


async def test_one_export_per_ten_minutes(client):
    ada, bob = await signup(client), await signup(client)
    await export(client, ada)
    again = await client.get("/me/export", headers=ada.auth)
    assert again.status_code == 429
    body = await again.get_json()
    assert body["error"] == "rate_limited"
    assert "10 minutes" in body["message"]
    assert 1 <= int(again.headers["Retry-After"]) <= 600
    await export(client, bob)  # per user


async def test_the_document_goes_out_piece_by_piece_as_it_is_read(client, monkeypatch):
    """With tiny chunks and pieces, every chunk is sent as it is read (one ASGI message each); the pieces make one
    valid document."""
    monkeypatch.setattr(account_module, "EXPORT_CHUNK_ROWS", 2)
    monkeypatch.setattr(account_module, "EXPORT_WRITE_BYTES", 1)
    ada = await signup(client)
    for n in range(9):
        await post_story(client, ada, text=f"story {n}")
    pieces: list[bytes] = []
    async with client.request("/me/export", headers=ada.auth) as connection:
        await connection.send_complete()
        while True:
            try:
                pieces.append(await connection.receive())
            except trio.EndOfChannel:
                break
    assert connection.status_code == 200
    document = orjson.loads(b"".join(pieces))
    assert len(document["stories"]) == 9
    assert len(pieces) >= 5  # the stories alone are five chunks
