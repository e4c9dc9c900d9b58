"""The feed, tray, story and profile reads against a small pure-Python model of API.md's visibility rules, with
follows, blocks, mutes, views, deletes and display names.

Hypothesis state machines are synchronous, while the app, its store and asyncpg live in the test's trio run.
The machine therefore runs in a worker thread (`trio.to_thread.run_sync`) and every HTTP step re-enters the
trio run with `trio.from_thread.run`. Each example starts from empty tables (TRUNCATE), not new fixtures.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import pytest
import trio
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from stories.clock import FixedClock
from stories.settings import Settings
from tests.helpers import Account, signup, walk_pages
from tests.sql import sql_connection

T = TypeVar("T")

TABLES = "users, follows, blocks, mutes, stories, story_audience, story_views, reactions, idempotency_keys"
VISIBILITIES = ("public", "friends", "private")
# Clock steps in milliseconds: small ones keep stories alive, the large ones around 24 h expire them (exactly
# at expires_at included).
ADVANCE_MS = (1, 1_000, 60_000, 3_600_000, 86_399_999, 86_400_000, 90_000_000)
# Tokens must outlive the days the clock is moved; rate limits and the feed cache are not what is tested here.
TEN_YEARS = 10 * 365 * 86_400
MAX_USERS = 5
# API.md: a tray group and an author's list hold the author's newest 100 stories.
MAX_GROUP = 100
# Display names drawn by the machine: none, plain, padded (stored trimmed), non-ASCII.
NAMES = (None, "Ada", "  Bob  ", "Zoë 🔥")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings, jwt_ttl_seconds=TEN_YEARS, feed_cache_seconds=0, rate_limit_stories_per_minute=1_000_000
    )


@asynccontextmanager
async def open_wiper(database_url: str) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """An async callable that empties every table of the test database, over a connection of its own."""
    async with sql_connection(database_url) as conn:

        async def wipe() -> None:
            await conn.execute(f"TRUNCATE {TABLES} CASCADE")

        yield wipe


def wire_time(instant: datetime) -> str:
    """API.md's time format, written here independently of the product's formatter."""
    return instant.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def millis(instant: datetime) -> datetime:
    return instant.replace(microsecond=instant.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class ModelStory:
    id: UUID
    author: str
    visibility: str
    audience: frozenset[str] | None
    created_at: datetime
    expires_at: datetime


@dataclass
class Model:
    """API.md "Visibility rules", blocks, mutes, deletes and the feed order, nothing else."""

    follows: dict[tuple[str, str], str] = field(default_factory=dict)  # (follower, followee) -> created_at
    stories: list[ModelStory] = field(default_factory=list)
    blocks: set[tuple[str, str]] = field(default_factory=set)  # (blocker, blocked)
    mutes: set[tuple[str, str]] = field(default_factory=set)  # (muter, muted)
    deleted: set[UUID] = field(default_factory=set)
    names: dict[str, str | None] = field(default_factory=dict)
    views: set[tuple[str, UUID]] = field(default_factory=set)  # (viewer, story): recorded views

    def blocked_between(self, a: str, b: str) -> bool:
        return (a, b) in self.blocks or (b, a) in self.blocks

    def can_see(self, viewer: str, story: ModelStory, now: datetime) -> bool:
        if not now < story.expires_at or story.id in self.deleted:
            return False
        if self.blocked_between(viewer, story.author):
            return False
        if story.author == viewer or story.visibility == "public":
            return True
        if story.visibility == "friends":
            follows = (viewer, story.author) in self.follows
            return follows and (story.audience is None or viewer in story.audience)
        return False

    def feed_stories(self, viewer: str, now: datetime) -> list[ModelStory]:
        return [s for s in self.stories if self.can_see(viewer, s, now) and (viewer, s.author) not in self.mutes]

    def feed(self, viewer: str, now: datetime) -> list[str]:
        visible = self.feed_stories(viewer, now)
        visible.sort(key=lambda s: (s.created_at, s.id), reverse=True)
        return [str(s.id) for s in visible]

    def group(self, viewer: str, stories: list[ModelStory]) -> list[tuple[str, bool]]:
        """The author's newest MAX_GROUP stories, oldest first, each with whether the viewer recorded a view."""
        newest = sorted(stories, key=lambda s: (s.created_at, s.id))[-MAX_GROUP:]
        return [(str(s.id), (viewer, s.id) in self.views) for s in newest]

    def tray(self, viewer: str, now: datetime) -> list[tuple[str, list[tuple[str, bool]]]]:
        """API.md "The tray": the feed by author; own group, then unseen, then seen, by latest_at, author id."""
        by_author: dict[str, list[ModelStory]] = {}
        for story in self.feed_stories(viewer, now):
            by_author.setdefault(story.author, []).append(story)

        def place(author: str) -> tuple[int, float, UUID]:
            group = self.group(viewer, by_author[author])
            part = 0 if author == viewer else 1 if not all(seen for _, seen in group) else 2
            return part, -max(s.created_at for s in by_author[author]).timestamp(), UUID(author)

        return [(author, self.group(viewer, by_author[author])) for author in sorted(by_author, key=place)]

    def author_stories(self, viewer: str, author: str, now: datetime) -> list[tuple[str, bool]] | None:
        """GET /users/{id}/stories: None (404) in a block either way; mutes do not hide an author here."""
        if self.blocked_between(viewer, author):
            return None
        return self.group(viewer, [s for s in self.stories if s.author == author and self.can_see(viewer, s, now)])


async def post_story(
    client: Any, clock: FixedClock, ttl: timedelta, author: Account, visibility: str, audience: list[Account] | None
) -> ModelStory:
    """Create a story through the API, check what it answers, and return the model's record of it."""
    body: dict[str, Any] = {"text": "a story", "visibility": visibility}
    if audience is not None:
        body["audience_user_ids"] = [a.user_id for a in audience]
    response = await client.post("/stories", json=body, headers=author.auth)
    story = await response.get_json()
    assert response.status_code == 201, story
    created_at = millis(clock.now())
    expires_at = created_at + ttl
    assert (story["author_id"], story["visibility"]) == (author.user_id, visibility)
    assert (story["created_at"], story["expires_at"]) == (wire_time(created_at), wire_time(expires_at))
    return ModelStory(
        id=UUID(story["id"]),
        author=author.user_id,
        visibility=visibility,
        audience=None if audience is None else frozenset(a.user_id for a in audience),
        created_at=created_at,
        expires_at=expires_at,
    )


@dataclass
class Env:
    """What the machine (in its worker thread) needs from the trio side."""

    client: Any
    clock: FixedClock
    ttl: timedelta
    wipe: Callable[[], Awaitable[None]]

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return trio.from_thread.run(fn, *args)

    def call(self, method: str, path: str, account: Account, body: Any = None) -> tuple[int, Any]:
        """One request from the machine's thread: (status, JSON body or None)."""

        async def request() -> tuple[int, Any]:
            response = await self.client.open(path, method=method, json=body, headers=account.auth)
            return response.status_code, await response.get_json()

        return self.run(request)


class FeedMachine(RuleBasedStateMachine):
    users = Bundle("users")

    def __init__(self, env: Env) -> None:
        super().__init__()
        self.env = env
        self.model = Model()
        self.accounts: list[Account] = []
        self.rng = random.Random(0)
        env.run(env.wipe)

    # --- steps ----------------------------------------------------------------------------------------

    def _signup(self) -> Account:
        account = self.env.run(signup, self.env.client)
        self.accounts.append(account)
        self.model.names[account.user_id] = None
        return account

    @initialize(target=users, seed=st.integers(0, 2**32))
    def two_users(self, seed: int) -> Any:
        # Page sizes for the feed walks are drawn from this seeded Random: invariants cannot draw data.
        self.rng = random.Random(seed)
        return multiple(self._signup(), self._signup())

    @precondition(lambda self: len(self.accounts) < MAX_USERS)
    @rule(target=users)
    def another_user(self) -> Account:
        return self._signup()

    @rule(follower=users, followee=users)
    def follow(self, follower: Account, followee: Account) -> None:
        status, body = self.env.call("POST", f"/follow/{followee.user_id}", follower)
        if follower == followee:
            assert (status, body["error"]) == (400, "invalid_request"), body
            return
        if self.model.blocked_between(follower.user_id, followee.user_id):
            assert (status, body["error"]) == (404, "not_found"), body
            return
        assert status == 200, body
        pair = (follower.user_id, followee.user_id)
        # A refollow is idempotent: it answers the original follow.
        expected_at = self.model.follows.setdefault(pair, wire_time(millis(self.env.clock.now())))
        assert body == {"follower_id": pair[0], "followee_id": pair[1], "created_at": expected_at}

    @rule(follower=users, followee=users)
    def unfollow(self, follower: Account, followee: Account) -> None:
        status, _ = self.env.call("DELETE", f"/follow/{followee.user_id}", follower)
        assert status == 204
        self.model.follows.pop((follower.user_id, followee.user_id), None)

    @rule(blocker=users, blocked=users)
    def block(self, blocker: Account, blocked: Account) -> None:
        body = self._add_edge("blocks", self.model.blocks, blocker, blocked)
        if body is None:
            return
        assert (body["blocker_id"], body["blocked_id"]) == (blocker.user_id, blocked.user_id)
        # The follows between the two go, both ways, in the block's transaction.
        self.model.follows.pop((blocker.user_id, blocked.user_id), None)
        self.model.follows.pop((blocked.user_id, blocker.user_id), None)

    @rule(blocker=users, blocked=users)
    def unblock(self, blocker: Account, blocked: Account) -> None:
        self._remove_edge("blocks", self.model.blocks, blocker, blocked)

    @rule(muter=users, muted=users)
    def mute(self, muter: Account, muted: Account) -> None:
        self._add_edge("mutes", self.model.mutes, muter, muted)

    @rule(muter=users, muted=users)
    def unmute(self, muter: Account, muted: Account) -> None:
        self._remove_edge("mutes", self.model.mutes, muter, muted)

    def _add_edge(
        self, path: str, edges: set[tuple[str, str]], source: Account, target: Account
    ) -> dict[str, Any] | None:
        """POST /{path}/{target} as `source` (a block or a mute): 400 for oneself, else 200 and the model's `edges`
        get the pair. The answer's body, or None for oneself."""
        status, body = self.env.call("POST", f"/{path}/{target.user_id}", source)
        if source == target:
            assert (status, body["error"]) == (400, "invalid_request"), body
            return None
        assert status == 200, body
        edges.add((source.user_id, target.user_id))
        return body

    def _remove_edge(self, path: str, edges: set[tuple[str, str]], source: Account, target: Account) -> None:
        """DELETE /{path}/{target} as `source`: 204 whether or not the pair was in the model's `edges`."""
        status, _ = self.env.call("DELETE", f"/{path}/{target.user_id}", source)
        assert status == 204
        edges.discard((source.user_id, target.user_id))

    @precondition(lambda self: self.model.stories)
    @rule(caller=users, index=st.integers(0, 1_000))
    def delete_story(self, caller: Account, index: int) -> None:
        story = self.model.stories[index % len(self.model.stories)]
        status, body = self.env.call("DELETE", f"/stories/{story.id}", caller)
        if caller.user_id != story.author:
            assert (status, body["error"]) == (404, "not_found"), body
            return
        # Idempotent, and 204 for the author's expired stories too.
        assert status == 204, body
        self.model.deleted.add(story.id)

    @precondition(lambda self: self.model.stories)
    @rule(viewer=users, index=st.integers(0, 1_000))
    def view_story(self, viewer: Account, index: int) -> None:
        self._view(viewer, self.model.stories[index % len(self.model.stories)])

    @rule(viewer=users, author=users)
    def view_all_of(self, viewer: Account, author: Account) -> None:
        """Tap through an author's whole group, as a client does: makes all-seen groups common."""
        for story in self.model.stories:
            if story.author == author.user_id:
                self._view(viewer, story)

    @rule(viewer=users)
    def tap_through_every_other_author(self, viewer: Account) -> None:
        """View the whole group of every second author of the viewer's tray: seen and unseen parts interleave."""
        stories = {str(s.id): s for s in self.model.stories}
        for _, group in self.model.tray(viewer.user_id, self.env.clock.now())[1::2]:
            for story_id, _ in group:
                self._view(viewer, stories[story_id])

    def _view(self, viewer: Account, story: ModelStory) -> None:
        status, body = self.env.call("POST", f"/stories/{story.id}/view", viewer)
        if not self.model.can_see(viewer.user_id, story, self.env.clock.now()):
            assert (status, body["error"]) == (404, "not_found"), body
            return
        assert status == 200, body
        if viewer.user_id != story.author:  # the author's own views are not recorded
            self.model.views.add((viewer.user_id, story.id))

    @rule(account=users, name=st.sampled_from(NAMES))
    def set_display_name(self, account: Account, name: str | None) -> None:
        status, body = self.env.call("PATCH", "/me", account, {"display_name": name})
        assert status == 200, body
        expected = None if name is None else name.strip()
        assert (body["user_id"], body["email"], body["display_name"]) == (account.user_id, account.email, expected)
        self.model.names[account.user_id] = expected

    @rule(author=users, visibility=st.sampled_from(VISIBILITIES))
    def create_story(self, author: Account, visibility: str) -> None:
        self._create(author, visibility, None)

    @rule(author=users, audience=st.lists(users, min_size=1, max_size=3))
    def create_friends_story_for(self, author: Account, audience: list[Account]) -> None:
        self._create(author, "friends", audience)

    @rule(visibility=st.sampled_from(VISIBILITIES))
    def everyone_posts(self, visibility: str) -> None:
        """Each user posts, 1 ms apart: trays with several authors (and ties on latest_at) become common."""
        for author in self.accounts:
            self.env.clock.advance(0.001)
            self._create(author, visibility, None)

    def _create(self, author: Account, visibility: str, audience: list[Account] | None) -> None:
        story = self.env.run(post_story, self.env.client, self.env.clock, self.env.ttl, author, visibility, audience)
        self.model.stories.append(story)

    @rule(ms=st.sampled_from(ADVANCE_MS))
    def advance_clock(self, ms: int) -> None:
        self.env.clock.advance(ms / 1000)

    # --- the comparison -------------------------------------------------------------------------------

    @invariant()
    def reads_match_model(self) -> None:
        self.env.run(self._check_reads)

    async def _check_reads(self) -> None:
        # One task per user: the reads of different users overlap their database round trips.
        now = self.env.clock.now()
        async with trio.open_nursery() as nursery:
            for account in self.accounts:
                nursery.start_soon(self._check_reads_of, account, now, self.rng.randint(1, 5))

    async def _check_reads_of(self, account: Account, now: datetime, limit: int) -> None:
        client, model = self.env.client, self.model
        expected = model.feed(account.user_id, now)
        got = await walk_pages(client, account, "/feed", "stories", limit, max_pages=len(expected) // limit + 2)
        assert [story["id"] for story in got] == expected, f"feed of {account.user_id} (limit {limit})"
        for story in got:
            author = story["author_id"]
            assert story["author"] == {"user_id": author, "display_name": model.names[author]}
        for story in model.stories:
            response = await client.get(f"/stories/{story.id}", headers=account.auth)
            visible = model.can_see(account.user_id, story, now)
            assert response.status_code == (200 if visible else 404), (account.user_id, story)
            body = await response.get_json()
            if visible:
                assert (body["id"], body["author_id"]) == (str(story.id), story.author)
                assert body["author"]["display_name"] == model.names[story.author]
            else:
                assert body["error"] == "not_found"
        for other in self.accounts:
            await self._check_profile(account, other)
            await self._check_author_stories(account, other, now)
        await self._check_tray(account, now, self.rng.randint(1, 4))

    async def _check_tray(self, account: Account, now: datetime, limit: int) -> None:
        """A whole walk of GET /tray: the model's groups, order, `seen`, `has_unseen` and `latest_at`."""
        model = self.model
        expected = model.tray(account.user_id, now)
        got = await walk_pages(
            self.env.client, account, "/tray", "authors", limit, max_pages=len(expected) // limit + 2
        )
        shape = [
            (group["author"]["user_id"], [(story["id"], story["seen"]) for story in group["stories"]]) for group in got
        ]
        assert shape == expected, f"tray of {account.user_id} (limit {limit})"
        stories = {str(s.id): s for s in model.stories}
        for group in got:
            author = group["author"]["user_id"]
            assert group["author"]["display_name"] == model.names[author]
            assert group["has_unseen"] == (not all(story["seen"] for story in group["stories"]))
            assert group["latest_at"] == wire_time(max(stories[s["id"]].created_at for s in group["stories"]))

    async def _check_author_stories(self, reader: Account, author: Account, now: datetime) -> None:
        response = await self.env.client.get(f"/users/{author.user_id}/stories", headers=reader.auth)
        expected = self.model.author_stories(reader.user_id, author.user_id, now)
        if expected is None:
            assert response.status_code == 404
            return
        assert response.status_code == 200
        got = (await response.get_json())["stories"]
        assert [(story["id"], story["seen"]) for story in got] == expected, (reader.user_id, author.user_id)

    async def _check_profile(self, reader: Account, user: Account) -> None:
        """GET /users/{id}: 404 when the user blocked the reader, else names, counts and relations."""
        model = self.model
        response = await self.env.client.get(f"/users/{user.user_id}", headers=reader.auth)
        if (user.user_id, reader.user_id) in model.blocks:
            assert response.status_code == 404
            return
        assert response.status_code == 200
        assert await response.get_json() == {
            "user_id": user.user_id,
            "display_name": model.names[user.user_id],
            "created_at": (await response.get_json())["created_at"],
            "followers": sum(1 for _, followee in model.follows if followee == user.user_id),
            "following": sum(1 for follower, _ in model.follows if follower == user.user_id),
            "followed_by_me": (reader.user_id, user.user_id) in model.follows,
            "follows_me": (user.user_id, reader.user_id) in model.follows,
        }


async def test_feed_and_reads_match_model(client, clock, settings, database_url):
    env_settings = hypothesis_settings(max_examples=25, stateful_step_count=30, deadline=None)
    async with open_wiper(database_url) as wipe:
        env = Env(client=client, clock=clock, ttl=timedelta(seconds=settings.story_ttl_seconds), wipe=wipe)
        await trio.to_thread.run_sync(
            lambda: run_state_machine_as_test(lambda: FeedMachine(env), settings=env_settings)
        )


Draft = tuple[int, str]  # (author: 0 viewer, 1 followed, 2 stranger; visibility)
drafts = st.tuples(st.integers(0, 2), st.sampled_from(VISIBILITIES))


async def walk_while_posting(
    env: Env, initial: list[tuple[Draft, bool]], limit: int, between: list[list[Draft]]
) -> None:
    """One example: post `initial` (advancing the clock 1 ms where flagged), then walk the viewer's feed
    `limit` at a time, posting the next batch of `between` (1 ms apart) after each page."""
    await env.wipe()
    client, clock = env.client, env.clock
    accounts = [await signup(client) for _ in range(3)]
    viewer, followed = accounts[0], accounts[1]
    response = await client.post(f"/follow/{followed.user_id}", headers=viewer.auth)
    assert response.status_code == 200
    model = Model(follows={(viewer.user_id, followed.user_id): ""})
    for (author, visibility), advance in initial:
        clock.advance(0.001 if advance else 0)
        model.stories.append(await post_story(client, clock, env.ttl, accounts[author], visibility, None))
    expected = model.feed(viewer.user_id, clock.now())

    seen: list[str] = []
    cursor: str | None = None
    batches = iter(between)
    for _ in range(len(expected) // limit + 2):
        query = f"/feed?limit={limit}" + ("" if cursor is None else f"&cursor={cursor}")
        response = await client.get(query, headers=viewer.auth)
        assert response.status_code == 200
        page = await response.get_json()
        seen.extend(story["id"] for story in page["stories"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        for author, visibility in next(batches, []):
            clock.advance(0.001)
            await post_story(client, clock, env.ttl, accounts[author], visibility, None)
    assert cursor is None, "the walk did not end"
    assert len(seen) == len(set(seen)), "a story came twice"
    assert seen == expected


async def test_feed_walk_while_stories_are_created(client, clock, settings, database_url):
    """Each story that existed when the walk began comes exactly once, in order, whatever is posted meanwhile.

    Same-millisecond runs in `initial` (no clock advance) make the id the tie-breaker across page boundaries.
    """

    @hypothesis_settings(max_examples=40, deadline=None)
    @given(
        initial=st.lists(st.tuples(drafts, st.booleans()), max_size=30),
        limit=st.integers(1, 5),
        between=st.lists(st.lists(drafts, max_size=3), max_size=30),
    )
    def walks(initial: list[tuple[Draft, bool]], limit: int, between: list[list[Draft]]) -> None:
        env.run(walk_while_posting, env, initial, limit, between)

    async with open_wiper(database_url) as wipe:
        env = Env(client=client, clock=clock, ttl=timedelta(seconds=settings.story_ttl_seconds), wipe=wipe)
        await trio.to_thread.run_sync(walks)
