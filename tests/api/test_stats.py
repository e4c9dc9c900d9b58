"""GET /me/stats: exact figures for a constructed scenario (API.md "Stats")."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from stories.settings import Settings
from tests.helpers import Account, post_story, signup

DAY = 86_400.0
# Tokens must outlive the eight days the clock is moved; rate limits are not what is tested here.
TEN_YEARS = 10 * 365 * 86_400


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, jwt_ttl_seconds=TEN_YEARS, rate_limit_reactions_per_minute=1_000_000)


async def view(client: Any, viewer: Account, story_id: str, status: int = 200) -> Any:
    response = await client.post(f"/stories/{story_id}/view", headers=viewer.auth)
    assert response.status_code == status, await response.get_data()
    return await response.get_json()


async def react(client: Any, user: Account, story_id: str, emoji: str) -> None:
    response = await client.post(f"/stories/{story_id}/reactions", json={"emoji": emoji}, headers=user.auth)
    assert response.status_code == 201, await response.get_data()


async def stats(client: Any, user: Account) -> Any:
    response = await client.get("/me/stats", headers=user.auth)
    assert response.status_code == 200, await response.get_data()
    return await response.get_json()


async def test_stats_scenario(client, clock, counters):
    alice, bob, carol, dave = [await signup(client) for _ in range(4)]

    # Older than 7 days by the time stats are read: none of its views or reactions count.
    old = await post_story(client, alice, "public")
    await view(client, bob, old)
    await view(client, dave, old)
    await react(client, bob, old, "👍")
    clock.advance(7 * DAY + 1)

    # Expires before stats are read, but was created within 7 days: it counts.
    expired = await post_story(client, alice, "public")
    await view(client, bob, expired)
    await view(client, carol, expired)
    await react(client, carol, expired, "❤")  # stored as ❤️
    await react(client, carol, expired, "❤️")
    clock.advance(DAY + 60)
    await view(client, dave, expired, status=404)

    friends = await post_story(client, alice, "friends")
    assert (await client.post(f"/follow/{alice.user_id}", headers=bob.auth)).status_code == 200
    first = await view(client, bob, friends)
    clock.advance(5)
    again = await view(client, bob, friends)
    assert (first["first_view"], again["first_view"]) == (True, False)
    assert again["viewed_at"] == first["viewed_at"]
    own = await view(client, alice, friends)  # answered, not recorded
    assert own["first_view"] is False
    await view(client, carol, friends, status=404)  # carol does not follow alice
    await react(client, bob, friends, "🔥")
    await react(client, bob, friends, "🔥")
    await react(client, bob, friends, "❤")
    await react(client, alice, friends, "😂")  # self-reactions are reactions (only the event is skipped)

    private = await post_story(client, alice, "private")
    await view(client, alice, private)
    await view(client, bob, private, status=404)

    # Another author's story: none of it is alice's.
    bobs = await post_story(client, bob, "public")
    await view(client, alice, bobs)
    await view(client, carol, bobs)
    await react(client, carol, bobs, "😮")

    assert await stats(client, alice) == {
        "posted": 3,
        "views": 3,  # expired: bob, carol; friends: bob (repeat and self-view not recorded)
        "unique_viewers": 2,  # bob, carol
        "reactions": {"❤️": 3, "🔥": 2, "😂": 1},
    }
    assert await stats(client, bob) == {"posted": 1, "views": 2, "unique_viewers": 2, "reactions": {"😮": 1}}
    assert await stats(client, carol) == {"posted": 0, "views": 0, "unique_viewers": 0, "reactions": {}}

    # The story counters agree with the rows the stats count, once the counter flusher has run.
    await counters.flush()
    response = await client.get(f"/stories/{friends}", headers=alice.auth)
    story = await response.get_json()
    assert (story["view_count"], story["reaction_count"]) == (1, 4)

    # A week later only the newer stories' figures are left; a day after that, nothing.
    clock.advance(6 * DAY)
    assert await stats(client, alice) == {
        "posted": 2,
        "views": 1,
        "unique_viewers": 1,
        "reactions": {"🔥": 2, "❤️": 1, "😂": 1},
    }
    clock.advance(DAY + 1)
    assert await stats(client, alice) == {"posted": 0, "views": 0, "unique_viewers": 0, "reactions": {}}
