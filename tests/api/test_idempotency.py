"""Idempotency-Key on POST /stories (API.md "Stories"): replays, reuse, scope, concurrency, 24 h lifetime."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import trio

from stories.actors.ratelimit import BucketKeeper
from stories.api import create_app
from stories.settings import Settings
from tests.helpers import Account, signup

DAY = 86_400.0
# Tokens must outlive the day the clock is moved; rate limits are not what is tested here.
TEN_YEARS = 10 * 365 * 86_400


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, jwt_ttl_seconds=TEN_YEARS, rate_limit_stories_per_minute=1_000_000)


async def post(client: Any, author: Account, body: Any, key: str | None) -> Any:
    headers = author.auth if key is None else {**author.auth, "Idempotency-Key": key}
    return await client.post("/stories", json=body, headers=headers)


async def own_story_ids(client: Any, account: Account) -> list[str]:
    response = await client.get("/feed?limit=100", headers=account.auth)
    assert response.status_code == 200
    return [story["id"] for story in (await response.get_json())["stories"]]


async def test_same_key_same_body_replays_the_original(client, clock):
    alice = await signup(client)
    body = {"text": "once", "visibility": "public"}
    first = await post(client, alice, body, "key-1")
    assert first.status_code == 201
    clock.advance(60)  # a replay answers the original, not a story created now
    again = await post(client, alice, body, "key-1")
    assert again.status_code == 201
    assert await again.get_data() == await first.get_data()
    assert await own_story_ids(client, alice) == [(await first.get_json())["id"]]


async def test_same_key_different_body_is_422(client):
    alice = await signup(client)
    first = await post(client, alice, {"text": "once", "visibility": "public"}, "key-1")
    assert first.status_code == 201
    for changed in [{"text": "twice", "visibility": "public"}, {"text": "once", "visibility": "private"}]:
        response = await post(client, alice, changed, "key-1")
        assert response.status_code == 422
        assert (await response.get_json())["error"] == "idempotency_key_reused"
    assert await own_story_ids(client, alice) == [(await first.get_json())["id"]]


async def test_keys_are_per_user(client):
    alice, bob = await signup(client), await signup(client)
    body = {"text": "same", "visibility": "private"}
    a = await post(client, alice, body, "shared-key")
    b = await post(client, bob, body, "shared-key")
    assert (a.status_code, b.status_code) == (201, 201)
    a_story, b_story = await a.get_json(), await b.get_json()
    assert a_story["id"] != b_story["id"]
    assert (a_story["author_id"], b_story["author_id"]) == (alice.user_id, bob.user_id)
    assert await own_story_ids(client, alice) == [a_story["id"]]
    assert await own_story_ids(client, bob) == [b_story["id"]]


@pytest.mark.parametrize("key", ["", "k" * 256, "clé", "two words", "tab\there", " leading"])
async def test_bad_keys_are_400(client, key):
    alice = await signup(client)
    response = await post(client, alice, {"text": "hi", "visibility": "public"}, key)
    assert response.status_code == 400, await response.get_data()
    assert (await response.get_json())["error"] == "invalid_request"
    assert await own_story_ids(client, alice) == []


@pytest.mark.parametrize("key", ["k", "k" * 255, "!~#$%&'*+-.^_`|0aZ", "550e8400-e29b-41d4-a716-446655440000"])
async def test_good_keys(client, key):
    alice = await signup(client)
    body = {"text": "hi", "visibility": "public"}
    first, again = await post(client, alice, body, key), await post(client, alice, body, key)
    assert (first.status_code, again.status_code) == (201, 201)
    assert (await first.get_json())["id"] == (await again.get_json())["id"]


async def test_a_refused_request_does_not_use_up_its_key(client):
    alice = await signup(client)
    assert (await post(client, alice, {"visibility": "public"}, "key-1")).status_code == 400
    response = await post(client, alice, {"text": "fixed", "visibility": "public"}, "key-1")
    assert response.status_code == 201


async def test_concurrent_requests_with_one_key_create_one_story(client):
    alice = await signup(client)
    # Several rounds, each with a key of its own, so the two requests overlap in at least some of them.
    for n in range(5):
        body, key = {"text": f"racing {n}", "visibility": "public"}, f"race-{n}"
        responses: list[Any] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_into, responses, client, alice, body, key)
            nursery.start_soon(send_into, responses, client, alice, body, key)
        assert [r.status_code for r in responses] == [201, 201]
        assert len({(await r.get_json())["id"] for r in responses}) == 1
    assert len(await own_story_ids(client, alice)) == 5


async def send_into(into: list[Any], client: Any, author: Account, body: Any, key: str) -> None:
    into.append(await post(client, author, body, key))


async def test_a_key_older_than_24_hours_can_be_reused(client, clock):
    alice = await signup(client)
    first = await post(client, alice, {"text": "day one", "visibility": "public"}, "daily")
    assert first.status_code == 201
    clock.advance(DAY - 1)
    assert (await post(client, alice, {"text": "day two", "visibility": "public"}, "daily")).status_code == 422
    clock.advance(2)
    second = await post(client, alice, {"text": "day two", "visibility": "public"}, "daily")
    assert second.status_code == 201
    second_id = (await second.get_json())["id"]
    assert second_id != (await first.get_json())["id"]
    # From now on the key names the new story.
    replay = await post(client, alice, {"text": "day two", "visibility": "public"}, "daily")
    assert (replay.status_code, (await replay.get_json())["id"]) == (201, second_id)
    assert await own_story_ids(client, alice) == [second_id]  # the first one has expired meanwhile


async def test_a_retry_is_never_rate_limited_and_costs_no_token(app_deps, clock):
    # Default limits (20 stories a minute): the budget is spent with keyed requests, then every retry of one of
    # them still replays, and a retry does not take a token from the next minute's budget either.
    defaults = dataclasses.replace(app_deps.settings, rate_limit_stories_per_minute=20)
    client = create_app(
        dataclasses.replace(app_deps, settings=defaults, limiter=BucketKeeper.from_settings(defaults, None))
    ).test_client()
    alice = await signup(client)
    body = {"text": "budget", "visibility": "public"}
    for n in range(20):
        assert (await post(client, alice, body, f"key-{n}")).status_code == 201
    assert (await post(client, alice, body, "one-too-many")).status_code == 429
    for n in range(20):
        retry = await post(client, alice, body, f"key-{n}")
        assert (retry.status_code, retry.headers.get("Idempotent-Replay")) == (201, "true")
    # The same key with another body is still a 422, not a 429.
    assert (await post(client, alice, {"text": "other", "visibility": "public"}, "key-0")).status_code == 422


async def react(client: Any, account: Account, story_id: str, emoji: str, key: str | None) -> Any:
    headers = account.auth if key is None else {**account.auth, "Idempotency-Key": key}
    return await client.post(f"/stories/{story_id}/reactions", json={"emoji": emoji}, headers=headers)


async def reactions_of(client: Any, author: Account, story_id: str) -> list[str]:
    """The ids of the reaction events of the author's story (each stored reaction by someone else is one)."""
    events = await client.get("/me/events?limit=100", headers=author.auth)
    return [
        event["id"]
        for event in (await events.get_json())["events"]
        if event["type"] == "story.reacted" and event["payload"]["story_id"] == story_id
    ]


async def test_a_retried_reaction_is_counted_once(client, clock):
    # A retried reaction was counted twice: the key was honoured on POST /stories only.
    alice, bob = await signup(client), await signup(client)
    story_id = (await (await post(client, alice, {"text": "hi", "visibility": "public"}, None)).get_json())["id"]
    first = await react(client, bob, story_id, "🔥", "r-1")
    assert first.status_code == 201
    clock.advance(60)
    again = await react(client, bob, story_id, "🔥", "r-1")
    assert again.status_code == 201
    assert again.headers["Idempotent-Replay"] == "true"
    assert await again.get_json() == await first.get_json()
    assert len(await reactions_of(client, alice, story_id)) == 1
    # Another emoji, or the same body on another story, with that key: a reuse.
    other_id = (await (await post(client, alice, {"text": "2", "visibility": "public"}, None)).get_json())["id"]
    for target, emoji in [(story_id, "😂"), (other_id, "🔥")]:
        reused = await react(client, bob, target, emoji, "r-1")
        assert reused.status_code == 422
        assert (await reused.get_json())["error"] == "idempotency_key_reused"
    # Without a key, or with another, a user may react again.
    assert (await react(client, bob, story_id, "🔥", "r-2")).status_code == 201
    assert (await react(client, bob, story_id, "🔥", None)).status_code == 201
    assert len(await reactions_of(client, alice, story_id)) == 3


async def test_concurrent_reactions_with_one_key_add_one(client):
    alice, bob = await signup(client), await signup(client)
    story_id = (await (await post(client, alice, {"text": "hi", "visibility": "public"}, None)).get_json())["id"]
    answers: list[Any] = []

    async def send() -> None:
        answers.append(await react(client, bob, story_id, "❤️", "same"))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(send)
    assert {answer.status_code for answer in answers} == {201}
    assert len({(await answer.get_json())["id"] for answer in answers}) == 1
    assert len(await reactions_of(client, alice, story_id)) == 1


async def test_a_reaction_to_an_invisible_story_keeps_no_key(client):
    alice, bob = await signup(client), await signup(client)
    private = (await (await post(client, alice, {"text": "mine", "visibility": "private"}, None)).get_json())["id"]
    public = (await (await post(client, alice, {"text": "all", "visibility": "public"}, None)).get_json())["id"]
    assert (await react(client, bob, private, "🔥", "k")).status_code == 404
    # The 404 stored nothing under the key: it is free for another request.
    assert (await react(client, bob, public, "🔥", "k")).status_code == 201
