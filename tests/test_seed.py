"""stories.seed against real PostgreSQL: the seeded rows are valid and the counters match their rows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from stories.errors import Conflict
from stories.seed import SeedDataset, SeedPlan, seed
from stories.store import Store
from tests.conftest import START
from tests.sql import SqlConnection, sql_connection

USERS = 50
STORIES = 500


class Db:
    """A plain asyncpg connection to the test's database, for checking what the seed wrote."""

    def __init__(self, conn: SqlConnection) -> None:
        self.conn = conn

    async def val(self, sql: str, *args: Any) -> Any:
        return await self.conn.fetchval(sql, *args)

    async def rows(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self.conn.fetch(sql, *args)


@pytest.fixture
async def db(store: Store, database_url: str) -> AsyncIterator[Db]:
    async with sql_connection(database_url) as conn:
        yield Db(conn)


async def _seed(store: Store, tag: str = "seed") -> Any:
    return await seed(
        store.database, users=USERS, stories=STORIES, follows_per_user=8, now=START, password_hash="x", tag=tag
    )


async def test_seed_counts_match_the_summary(store: Store, db: Db) -> None:
    foreign_keys = """SELECT array_agg(conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
                                ORDER BY conrelid::regclass::text, conname)
                      FROM pg_constraint WHERE contype = 'f'"""
    before = await db.val(foreign_keys)
    summary = await _seed(store)
    # The seed leaves the foreign keys as they were (it once dropped them for its COPY).
    assert await db.val(foreign_keys) == before
    assert len(before) >= 9  # follows 2, stories 1, story_audience 2, story_views 2, reactions 2
    assert await db.val("SELECT count(*) FROM users") == summary.users == USERS
    assert await db.val("SELECT count(*) FROM follows") == summary.follows
    assert await db.val("SELECT count(*) FROM stories") == summary.stories == STORIES
    assert await db.val("SELECT count(*) FROM story_views") == summary.views > 0
    assert await db.val("SELECT count(*) FROM reactions") == summary.reactions > 0
    assert await db.val("SELECT count(*) FROM story_audience") == summary.audience_rows > 0
    assert summary.live + summary.expired_deleted + summary.expired_pending == STORIES
    assert summary.live > 0
    assert summary.expired_deleted > 0
    assert await db.val("SELECT count(*) FROM stories WHERE expires_at > $1", START) == summary.live
    assert await db.val("SELECT count(*) FROM stories WHERE deleted_at IS NOT NULL") == summary.expired_deleted
    for visibility, count in summary.by_visibility.items():
        assert await db.val("SELECT count(*) FROM stories WHERE visibility = $1", visibility) == count > 0


async def test_counters_equal_their_rows(store: Store, db: Db) -> None:
    await _seed(store)
    mismatched = await db.rows(
        """SELECT s.id FROM stories s
           WHERE s.view_count <> (SELECT count(*) FROM story_views v WHERE v.story_id = s.id)
              OR s.reaction_count <> (SELECT count(*) FROM reactions r WHERE r.story_id = s.id)"""
    )
    assert mismatched == []
    assert await db.val("SELECT count(*) FROM stories WHERE view_count > 0") > 0


async def test_views_and_reactions_only_by_users_who_may_see_the_story(store: Store, db: Db) -> None:
    await _seed(store)
    # API.md visibility: public -> anyone; friends -> followers (on the audience list if there is one);
    # private -> the author only, whose own views are never recorded.
    allowed = """(s.visibility = 'public'
                  OR (s.visibility = 'friends'
                      AND EXISTS (SELECT 1 FROM follows f WHERE f.follower_id = {who} AND f.followee_id = s.author_id)
                      AND (NOT s.has_audience
                           OR EXISTS (SELECT 1 FROM story_audience a WHERE a.story_id = s.id AND a.user_id = {who}))))
                 AND {who} <> s.author_id"""
    bad_views = await db.rows(
        f"""SELECT v.* FROM story_views v JOIN stories s ON s.id = v.story_id
            WHERE NOT ({allowed.format(who="v.viewer_id")})
               OR v.viewed_at < s.created_at OR v.viewed_at > least(s.expires_at, $1)""",
        START,
    )
    assert bad_views == []
    bad_reactions = await db.rows(
        f"""SELECT r.* FROM reactions r JOIN stories s ON s.id = r.story_id
            WHERE NOT ({allowed.format(who="r.user_id")})
               OR NOT EXISTS (SELECT 1 FROM story_views v WHERE v.story_id = s.id AND v.viewer_id = r.user_id)"""
    )
    assert bad_reactions == []


async def test_story_rows_are_valid(store: Store, db: Db) -> None:
    await _seed(store)
    # Audience lists exactly on the friends stories that say so.
    assert (
        await db.val(
            """SELECT count(*) FROM stories s
               WHERE s.has_audience <> EXISTS (SELECT 1 FROM story_audience a WHERE a.story_id = s.id)"""
        )
        == 0
    )
    # Soft-deleted only after expiry; live stories never deleted; every story inside the 48 h window.
    assert await db.val("SELECT count(*) FROM stories WHERE deleted_at < expires_at OR deleted_at > $1", START) == 0
    assert await db.val("SELECT count(*) FROM stories WHERE expires_at > $1 AND deleted_at IS NOT NULL", START) == 0
    assert (
        await db.val(
            "SELECT count(*) FROM stories WHERE created_at > $1 OR created_at < $2 OR expires_at <> created_at + $3",
            START,
            START - timedelta(hours=48),
            timedelta(hours=24),
        )
        == 0
    )
    # Media keys lie in their author's upload namespace (API.md).
    assert (
        await db.val(
            """SELECT count(*) FROM stories
               WHERE media_key IS NOT NULL AND media_key NOT LIKE 'uploads/' || author_id || '/%'"""
        )
        == 0
    )


async def test_follow_graph_has_celebrities_heavy_and_lonely_users(store: Store, db: Db) -> None:
    await _seed(store)
    dataset = SeedDataset(_plan())
    people = dataset.people
    lonely_id = people.user_ids[people.lonely[0]]
    heavy_id = people.user_ids[people.heavy_followers[0]]
    celebrity_id = people.user_ids[people.celebrities[0]]
    assert await db.val("SELECT count(*) FROM follows WHERE follower_id = $1", lonely_id) == 0
    assert await db.val("SELECT count(*) FROM follows WHERE follower_id = $1", heavy_id) == USERS - 1
    followers = await db.rows("SELECT followee_id, count(*) AS n FROM follows GROUP BY followee_id ORDER BY n DESC")
    assert followers[0]["followee_id"] == celebrity_id


async def test_the_feed_reads_the_seeded_data(store: Store) -> None:
    await _seed(store)
    people = SeedDataset(_plan()).people
    page = await store.feed(people.user_ids[people.heavy_followers[0]], START, 100, None)
    assert len(page) == 100
    assert all(story.expires_at > START for story in page)


async def test_seeding_a_tag_twice_is_refused_and_writes_nothing(store: Store, db: Db) -> None:
    await _seed(store)
    with pytest.raises(Conflict):
        await _seed(store)
    assert await db.val("SELECT count(*) FROM stories") == STORIES
    await _seed(store, tag="second")
    assert await db.val("SELECT count(*) FROM stories") == 2 * STORIES


def _plan() -> SeedPlan:
    return SeedPlan(users=USERS, stories=STORIES, follows_per_user=8, now=START, password_hash="x")


def test_same_plan_same_rows() -> None:
    first = [batch.rows for batch in SeedDataset(_plan()).batches()]
    second = [batch.rows for batch in SeedDataset(_plan()).batches()]
    assert first == second
    other = [batch.rows for batch in SeedDataset(SeedPlan(**{**_fields(_plan()), "tag": "other"})).batches()]
    assert other[1]["stories"][0][0] != first[1]["stories"][0][0]


def _fields(plan: SeedPlan) -> dict[str, Any]:
    return {name: getattr(plan, name) for name in plan.__dataclass_fields__}


def test_bad_plans_are_refused() -> None:
    with pytest.raises(ValueError, match="tag"):
        SeedPlan(users=1, stories=1, follows_per_user=1, now=START, password_hash="x", tag="Upper")
    with pytest.raises(ValueError, match="users"):
        SeedPlan(users=0, stories=1, follows_per_user=1, now=START, password_hash="x")


async def test_a_seed_is_many_short_transactions_not_one_long_one(store: Store, db: Db) -> None:
    # One transaction for the whole seed held the event horizon (and every realtime event) back until it ended.
    await seed(
        store.database,
        users=USERS,
        stories=STORIES,
        follows_per_user=8,
        now=START,
        password_hash="x",
        batch_stories=STORIES // 5,
    )
    transactions = await db.val("SELECT count(DISTINCT event_xid) FROM story_views")
    assert transactions == 5
