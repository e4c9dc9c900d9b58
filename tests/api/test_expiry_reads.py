"""Expiry at read time (API.md "Visibility rules"): with the injected clock and no expiry worker running, a story
is readable until its expires_at and absent from every read from that instant on. STORY_TTL is honoured."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

import pytest

from stories.settings import Settings
from tests.helpers import Account, signup

# Tokens must outlive the TTLs tried here; the feed cache stays at its default: expiry must apply at once anyway.
TEN_YEARS = 10 * 365 * 86_400


@pytest.fixture(params=[90, 86_400, 3 * 86_400], ids=lambda ttl: f"ttl={ttl}s")
def settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    return dataclasses.replace(settings, story_ttl_seconds=request.param, jwt_ttl_seconds=TEN_YEARS)


def parse(wire: str) -> datetime:
    return datetime.fromisoformat(wire.replace("Z", "+00:00"))


async def reads(client: Any, viewer: Account, story_id: str) -> tuple[int, bool, int, int]:
    """(GET status, in the feed?, view status, reaction status) for one viewer and story."""
    get = await client.get(f"/stories/{story_id}", headers=viewer.auth)
    feed = await client.get("/feed?limit=100", headers=viewer.auth)
    assert feed.status_code == 200
    in_feed = story_id in [s["id"] for s in (await feed.get_json())["stories"]]
    view = await client.post(f"/stories/{story_id}/view", headers=viewer.auth)
    reaction = await client.post(f"/stories/{story_id}/reactions", json={"emoji": "🔥"}, headers=viewer.auth)
    return get.status_code, in_feed, view.status_code, reaction.status_code


async def test_story_lives_exactly_until_expires_at(client, clock, settings):
    ttl = settings.story_ttl_seconds
    alice, bob = await signup(client), await signup(client)
    assert (await client.post(f"/follow/{alice.user_id}", headers=bob.auth)).status_code == 200
    clock.advance(0.123)  # created_at then has milliseconds, which expires_at must keep
    stories = {}
    for visibility in ("public", "friends", "private"):
        response = await client.post(
            "/stories", json={"text": visibility, "visibility": visibility}, headers=alice.auth
        )
        assert response.status_code == 201
        story = await response.get_json()
        assert parse(story["expires_at"]) - parse(story["created_at"]) == timedelta(seconds=ttl)
        assert parse(story["created_at"]) == clock.now()
        stories[visibility] = story["id"]

    clock.advance(ttl - 0.001)  # the last millisecond of its life
    alive = (200, True, 200, 201)
    for visibility, story_id in stories.items():
        assert await reads(client, alice, story_id) == alive
        if visibility != "private":
            assert await reads(client, bob, story_id) == alive

    clock.advance(0.001)  # now == expires_at: gone, everywhere, for everyone
    gone = (404, False, 404, 404)
    for story_id in stories.values():
        assert await reads(client, alice, story_id) == gone
        assert await reads(client, bob, story_id) == gone

    # Gone from reads, still counted by the author's stats (expired stories are included).
    response = await client.get("/me/stats", headers=alice.auth)
    stats = await response.get_json()
    assert (stats["posted"], stats["views"], stats["reactions"]) == (3, 2, {"🔥": 5})


async def test_later_stories_outlive_earlier_ones(client, clock, settings):
    ttl = settings.story_ttl_seconds
    alice = await signup(client)
    ids = []
    for n in range(3):
        response = await client.post("/stories", json={"text": str(n), "visibility": "public"}, headers=alice.auth)
        ids.append((await response.get_json())["id"])
        clock.advance(ttl / 3)
    # Now the first story is exactly ttl old; the others have a third and two thirds of their life behind them.
    response = await client.get("/feed", headers=alice.auth)
    assert [s["id"] for s in (await response.get_json())["stories"]] == [ids[2], ids[1]]
    clock.advance(ttl / 3)
    response = await client.get("/feed", headers=alice.auth)
    assert [s["id"] for s in (await response.get_json())["stories"]] == [ids[2]]
