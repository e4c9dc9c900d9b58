import dataclasses

import pytest

from stories.actors.ratelimit import BucketKeeper
from stories.api import create_app
from tests.helpers import signup


@pytest.fixture
def settings(settings):
    return dataclasses.replace(settings, rate_limit_stories_per_minute=3, rate_limit_reactions_per_minute=2)


async def _create(client, account):
    return await client.post("/stories", json={"text": "x", "visibility": "public"}, headers=account.auth)


async def test_story_creation_is_limited_per_user(client, metrics):
    alice, bob = await signup(client), await signup(client)
    assert [(await _create(client, alice)).status_code for _ in range(3)] == [201, 201, 201]
    refused = await _create(client, alice)
    assert refused.status_code == 429
    assert await refused.get_json() == {
        "error": "rate_limited",
        "message": "story creation is limited to 3 per minute",
    }
    assert 1 <= int(refused.headers["Retry-After"]) <= 20
    assert (await _create(client, bob)).status_code == 201
    exported = metrics.render().decode()
    assert 'rate_limited_total{action="stories"} 1.0' in exported


async def test_reactions_are_limited_per_user(client):
    alice, bob = await signup(client), await signup(client)
    story = await (await _create(client, alice)).get_json()
    url = f"/stories/{story['id']}/reactions"
    codes = [(await client.post(url, json={"emoji": "🔥"}, headers=bob.auth)).status_code for _ in range(3)]
    assert codes == [201, 201, 429]
    assert (await client.post(url, json={"emoji": "🔥"}, headers=alice.auth)).status_code == 201


async def test_limits_are_shared_through_redis(app_deps, redis_link):
    """Two processes are two apps with their own keepers on one Redis: the budget is shared."""
    shared = [
        create_app(dataclasses.replace(app_deps, limiter=BucketKeeper.from_settings(app_deps.settings, redis_link)))
        for _ in range(2)
    ]
    first, second = (app.test_client() for app in shared)
    alice = await signup(first)
    codes = [(await _create(client, alice)).status_code for client in (first, second, first, second)]
    assert codes == [201, 201, 201, 429]
