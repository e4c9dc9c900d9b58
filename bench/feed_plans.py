"""Query plans of the hot reads on a seeded database: `python -m bench.feed_plans [--database-url URL]`.

Seeds (stories.seed), VACUUM ANALYZEs, then runs EXPLAIN (ANALYZE, BUFFERS) on the exact statements of
stories/store/: the feed, follow-list and viewers constants are imported; the statements written inline in
`aio_*` functions are read out of their module's source (so the report always shows what the service runs).
Scenarios:

  base      the seed (default 100k stories over 48 h, about half expired and soft-deleted);
  +old      plus `--extra-stories` (default 2x) stories aged 24 h .. 7 d: all expired, nearly all soft-deleted;
  +blocks   plus `--blockers` (default 10%) of users blocking or muting someone (the subjects among them, and
            blocked by someone), the follows of each blocked pair removed as the API does;
  stalled   the same rows with every soft delete undone, as if the expiry worker had been down for a week;
  +1M       `--million` (default 1,000,000) new users following one new user: that user's followers list
            against one of a user followed by 10, and the profile of each.

Writes statements inside a transaction that is rolled back, so every run measures the same database.
Without --database-url it creates `stories_bench` next to the --admin-url database and drops it at the end.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import inspect
import json
import platform
import random
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.server import admin_failed
from stories.actors.expiry import DEFAULT_BATCH_SIZE
from stories.clock import to_millis
from stories.seed import TABLE_ORDER, SeedDataset, SeedPlan, SeedSummary, aio_copy_seed
from stories.store import engagement, housekeeping, social_graph, users
from stories.store import stories as story_sql
from stories.store import tray as store_tray
from stories.store.migrate import aio_migrate, load_migrations
from stories.tray_cache import PREFETCH_AUTHORS

# What pool.acquire() yields and what asyncpg.connect() returns: the bench takes either.
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

DEFAULT_ADMIN_URL = "postgres://root@127.0.0.1:5432/test"
# The session settings of the service's pool (stories/store/database.py), so the plans are the ones it runs.
SERVER_SETTINGS = {"jit": "off"}
BENCH_DATABASE = "stories_bench"
DROP_BENCH_DATABASE = f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)"
CREATE_BENCH_DATABASE = f"CREATE DATABASE {BENCH_DATABASE}"
PAGE = 20  # API.md's default page; the handler asks the store for limit + 1 rows to know if a next page exists
DEEP_OFFSET = 200  # the deep page starts after this many feed rows (page 11)
WATCHED_TABLES = ("stories", "story_views", "reactions", "follows")
LIST_PAGE = 50  # API.md's default page of the user lists and of "seen by"; the handler asks for limit + 1
SOCIAL_READS = (
    "GET /users/{id}",
    "followers page 1, celebrity",
    "followers after 1,000 entries, celebrity",
    "viewers page 1, most viewed",
)


def statements_of(function_name: str, module: Any) -> list[str]:
    """The SQL strings an `aio_*` function of `module` (a module of stories/store/) passes to fetch/fetchrow/
    fetchval/execute, in source order, f-strings evaluated in the module's namespace (so `{VISIBLE}` is the real
    text). A statement sent from two paths (aio_add_reaction's with and without an idempotency claim) is one plan,
    listed once."""
    tree = ast.parse(inspect.getsource(module))
    for node in ast.walk(tree):
        if isinstance(node, ast.AsyncFunctionDef) and node.name == function_name:
            calls = [
                call
                for call in ast.walk(node)
                if isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and call.func.attr in {"fetch", "fetchrow", "fetchval", "execute"}
                and call.args
            ]
            found = []
            for call in sorted(calls, key=lambda c: (c.lineno, c.col_offset)):
                value = eval(compile(ast.Expression(call.args[0]), module.__name__, "eval"), vars(module))
                if isinstance(value, str) and "advisory" not in value and value not in found:
                    found.append(value)
            return found
    raise LookupError(f"{module.__name__} has no async function {function_name}")


@dataclass
class Result:
    scenario: str
    name: str
    sql: str
    args: tuple[Any, ...]
    times_ms: list[float] = field(default_factory=list)
    planning_ms: float = 0.0
    rows: int = 0
    shared_hit: int = 0
    shared_read: int = 0
    stories_read: int = 0
    follows_read: int = 0
    sorted_rows: int = 0
    seq_scans: list[str] = field(default_factory=list)
    relations: list[str] = field(default_factory=list)
    text_plan: str = ""

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)


def _walk(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(_walk(child))
    return nodes


async def explain(conn: Connection, scenario: str, name: str, sql: str, args: tuple[Any, ...], runs: int) -> Result:
    """EXPLAIN ANALYZE `runs` times after a warm-up (rolled back each time) and once more as text."""
    result = Result(scenario, name, sql, args)
    for run in range(runs + 1):
        doc = await _rolled_back(conn, "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, args)
        top = json.loads(doc)[0]
        if run == 0:
            continue
        result.times_ms.append(top["Execution Time"])
        plan = top["Plan"]
        result.planning_ms = top["Planning Time"]
        result.rows = plan["Actual Rows"]
        result.shared_hit = plan.get("Shared Hit Blocks", 0)
        result.shared_read = plan.get("Shared Read Blocks", 0)
        nodes = _walk(plan)
        result.stories_read, result.follows_read = (
            round(
                sum(
                    (n["Actual Rows"] + n.get("Rows Removed by Filter", 0)) * n["Actual Loops"]
                    for n in nodes
                    if n.get("Relation Name") == relation
                )
            )
            for relation in ("stories", "follows")
        )
        result.sorted_rows = sum(
            c["Actual Rows"] * c["Actual Loops"] for n in nodes if n["Node Type"] == "Sort" for c in n["Plans"]
        )
        result.relations = sorted({n["Relation Name"] for n in nodes if "Relation Name" in n})
        result.seq_scans = sorted(
            {n["Relation Name"] for n in nodes if n["Node Type"] == "Seq Scan" and n["Relation Name"] in WATCHED_TABLES}
        )
    lines = await _rolled_back(conn, "EXPLAIN (ANALYZE, BUFFERS) " + sql, args, text=True)
    result.text_plan = "\n".join(lines)
    return result


async def explain_generic(
    conn: Connection, scenario: str, name: str, sql: str, args: tuple[Any, ...], runs: int
) -> Result:
    """The same, with the generic plan PostgreSQL switches to for a statement prepared and run 5+ times."""
    await conn.execute(f"PREPARE bench_generic AS {sql}")
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    try:
        # EXECUTE takes no bind parameters: the arguments go in as literals (uuids, instants, ints only).
        literals = ", ".join(_literal(arg) for arg in args)
        result = await explain(conn, scenario, name, f"EXECUTE bench_generic({literals})", (), runs)
    finally:
        await conn.execute("RESET plan_cache_mode")
        await conn.execute("DEALLOCATE bench_generic")
    result.sql = f"-- generic plan of\n{sql.strip()}"
    return result


def _literal(value: object) -> str:
    if isinstance(value, uuid.UUID):
        return f"'{value}'::uuid"
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'::timestamptz"
    if isinstance(value, int):
        return str(value)
    raise TypeError(f"no SQL literal for {value!r}")


async def _rolled_back(conn: Connection, sql: str, args: tuple[Any, ...], *, text: bool = False) -> Any:
    transaction = conn.transaction()
    await transaction.start()
    try:
        if text:
            return [row[0] for row in await conn.fetch(sql, *args)]
        return await conn.fetchval(sql, *args)
    finally:
        await transaction.rollback()


async def plan_cache_choice(conn: Connection, sql: str, args: tuple[Any, ...]) -> tuple[int, int]:
    """Run the statement 10 times as the service does (asyncpg prepares and caches it per connection) and
    report how many generic and custom plans PostgreSQL used (plan_cache_mode = auto)."""
    statement = await conn.prepare(sql)
    for _ in range(10):
        await statement.fetch(*args)
    # By name: the connection may hold other prepared statements with the same text (asyncpg's cache).
    row = await conn.fetchrow(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name = $1", statement.get_name()
    )
    return (row["generic_plans"], row["custom_plans"]) if row else (0, 0)


async def live_estimate(conn: Connection, now: datetime) -> tuple[int, int]:
    """The planner's estimate and the true count of live stories (`deleted_at IS NULL AND expires_at > now`)."""
    where = f"FROM stories WHERE deleted_at IS NULL AND expires_at > {_literal(now)}"
    doc = await conn.fetchval(f"EXPLAIN (FORMAT JSON) SELECT 1 {where}")
    return json.loads(doc)[0]["Plan"]["Plan Rows"], await conn.fetchval(f"SELECT count(*) {where}")


def tray_page_args(viewer: uuid.UUID, now: datetime) -> tuple[Any, ...]:
    """TRAY_SQL's arguments for the first page of a walk starting now, as `aio_tray` passes them for a miss of
    the cache (which reads PREFETCH_AUTHORS authors and one more)."""
    return (viewer, now, now, store_tray.MAX_GROUP, -1, 0, uuid.UUID(int=0), PREFETCH_AUTHORS + 1, now)


@dataclass(frozen=True)
class Subjects:
    typical: uuid.UUID
    typical_follows: int
    heavy: uuid.UUID
    heavy_follows: int
    lonely: uuid.UUID
    author: uuid.UUID
    author_stories: int
    celebrity: uuid.UUID


def pick_subjects(dataset: SeedDataset, summary: SeedSummary) -> Subjects:
    people = dataset.people
    special = set(people.celebrities) | set(people.heavy_followers) | set(people.lonely)
    ordinary = sorted((len(f), i) for i, f in enumerate(people.following) if i not in special)
    follows, typical = ordinary[len(ordinary) // 2]
    heavy = people.heavy_followers[0]
    assert summary.top_author_id is not None
    return Subjects(
        typical=people.user_ids[typical],
        typical_follows=follows,
        heavy=people.user_ids[heavy],
        heavy_follows=len(people.following[heavy]),
        lonely=people.user_ids[people.lonely[0]],
        author=summary.top_author_id,
        author_stories=summary.top_author_stories,
        celebrity=people.user_ids[max(people.celebrities, key=lambda i: len(people.followers[i]))],
    )


@dataclass(frozen=True)
class Blocking:
    blockers: int
    blocks: int
    mutes: int
    follows_removed: int


async def add_blocks_and_mutes(pool: asyncpg.Pool, dataset: SeedDataset, share: float, now: datetime) -> Blocking:
    """`share` of the users each block a random user or mute one of their followees (half and half), as people
    do: strangers get blocked, the over-sharers one follows get muted. The subjects are among them, with the
    costliest choices: the typical user blocks a followee and mutes the most prolific celebrity, the heavy
    follower mutes two celebrities, and each subject is blocked by someone. A block removes the pair's follows
    both ways, as POST /blocks does."""
    people = dataset.people
    ids = people.user_ids
    rng = random.Random(20261124)
    n = len(ids)
    blocks: set[tuple[int, int]] = set()
    mutes: set[tuple[int, int]] = set()
    for user in rng.sample(range(n), round(n * share)):
        followees = people.following[user]
        if followees and rng.random() < 0.5:
            mutes.add((user, rng.choice(followees)))
        else:
            blocks.add((user, rng.choice([u for u in rng.sample(range(n), 2) if u != user])))
    index = {user_id: i for i, user_id in enumerate(ids)}
    special = set(people.celebrities) | set(people.heavy_followers) | set(people.lonely)
    typical = index[pick_subjects(dataset, dataset.summary()).typical]
    heavy = people.heavy_followers[0]
    celebrities = sorted(people.celebrities)
    blocks.add((typical, next(f for f in people.following[typical] if f not in special)))
    mutes.add((typical, celebrities[0]))
    mutes.update((heavy, c) for c in celebrities[:2])
    ordinary = [i for i in range(n) if i not in special and i != typical]
    for subject in (typical, heavy, people.lonely[0]):
        blocks.add((rng.choice(ordinary), subject))
    async with pool.acquire() as conn, conn.transaction():
        await conn.executemany(
            "INSERT INTO blocks (blocker_id, blocked_id, created_at) VALUES ($1, $2, $3)",
            [(ids[a], ids[b], now) for a, b in blocks],
        )
        await conn.executemany(
            "INSERT INTO mutes (muter_id, muted_id, created_at) VALUES ($1, $2, $3)",
            [(ids[a], ids[b], now) for a, b in mutes],
        )
        removed = await conn.fetchval(
            """WITH gone AS (DELETE FROM follows f USING blocks b
                             WHERE (f.follower_id = b.blocker_id AND f.followee_id = b.blocked_id)
                                OR (f.follower_id = b.blocked_id AND f.followee_id = b.blocker_id)
                             RETURNING 1)
               SELECT count(*) FROM gone"""
        )
    blockers = len({a for a, _ in blocks} | {a for a, _ in mutes})
    return Blocking(blockers=blockers, blocks=len(blocks), mutes=len(mutes), follows_removed=removed)


@dataclass(frozen=True)
class Million:
    star: uuid.UUID
    ten: uuid.UUID
    followers: int
    seconds: float


async def add_million_followers(pool: asyncpg.Pool, count: int, now: datetime) -> Million:
    """`count` new users following one new user, one follow a second back from now, and a user followed by 10
    of them: SQL-side generate_series (the counters' trigger runs once for the whole INSERT)."""
    started = time.perf_counter()
    star, ten = uuid.uuid4(), uuid.uuid4()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO users (id, email, password_hash, created_at)
               SELECT u.id, u.email, 'x', $1 FROM unnest($2::uuid[], $3::text[]) AS u(id, email)""",
            now,
            [star, ten],
            [f"star-{star}@bench.example", f"ten-{ten}@bench.example"],
        )
        await conn.execute(
            """INSERT INTO users (id, email, password_hash, created_at)
               SELECT gen_random_uuid(), 'fan-' || i || '@bench.example', 'x', $1 FROM generate_series(1, $2) i""",
            now,
            count,
        )
        await conn.execute(
            """INSERT INTO follows (follower_id, followee_id, created_at)
               SELECT id, $1, $2::timestamptz - make_interval(secs => row_number() OVER (ORDER BY id))
               FROM users WHERE email LIKE 'fan-%@bench.example'""",
            star,
            now,
        )
        await conn.execute(
            """INSERT INTO follows (follower_id, followee_id, created_at)
               SELECT id, $1, $2 FROM users WHERE email LIKE 'fan-%@bench.example' LIMIT 10""",
            ten,
            now,
        )
    return Million(star=star, ten=ten, followers=count, seconds=time.perf_counter() - started)


async def measure_lists(
    conn: Connection, scenario: str, subjects: Subjects, million: Million, runs: int
) -> list[Result]:
    """Followers lists and profiles: a user followed by 1,000,000 against one followed by 10, page 1 and the page
    half way down (keyset), read by the typical user (whose blocks the list leaves out)."""
    results = []
    reader = subjects.typical
    for label, user in (("10 followers", million.ten), ("1M followers", million.star)):
        page = (user, reader, LIST_PAGE + 1)
        results.append(
            await explain(conn, scenario, f"followers page 1, {label}", social_graph.FOLLOWERS_SQL, page, runs)
        )
        # The ten are the first 10 of the fans: fewer when --million asks for fewer.
        followers = million.followers if user == million.star else min(10, million.followers)
        depth = followers // 2
        position = await conn.fetchrow(
            """SELECT created_at, follower_id FROM follows WHERE followee_id = $1
               ORDER BY created_at DESC, follower_id DESC OFFSET $2 LIMIT 1""",
            user,
            depth,
        )
        if position is None:
            raise LookupError(f"{label}: no follower at offset {depth} of the {followers} the bench added")
        results.append(
            await explain(
                conn,
                scenario,
                f"followers half way down, {label}",
                social_graph.FOLLOWERS_AFTER_SQL,
                (*page, position["created_at"], position["follower_id"]),
                runs,
            )
        )
        (profile_sql,) = statements_of("aio_profile", users)
        results.append(await explain(conn, scenario, f"profile, {label}", profile_sql, (reader, user), runs))
    return results


async def measure(conn: Connection, scenario: str, subjects: Subjects, now: datetime, runs: int) -> list[Result]:
    results = []
    viewers = (("typical", subjects.typical), ("heavy", subjects.heavy), ("lonely", subjects.lonely))
    friends_story: uuid.UUID | None = None
    for label, viewer in viewers:
        walked = await conn.fetch(story_sql.FEED_SQL, viewer, now, DEEP_OFFSET)
        last = walked[-1]
        deep = (viewer, now, PAGE + 1, last["created_at"], last["id"])
        for plan, run in (("", explain), (" (generic)", explain_generic)):
            results.append(await run(conn, scenario, f"feed page 1, {label}{plan}", story_sql.FEED_SQL, deep[:3], runs))
            results.append(
                await run(
                    conn,
                    scenario,
                    f"feed page {DEEP_OFFSET // PAGE + 1}, {label}{plan}",
                    story_sql.FEED_AFTER_SQL,
                    deep,
                    runs,
                )
            )
        # A tray page miss (hits never reach PostgreSQL): the first page of a walk, with the cache's prefetch.
        tray = tray_page_args(viewer, now)
        results.append(await explain(conn, scenario, f"tray miss, {label}", store_tray.TRAY_SQL, tray, runs))
        if label == "typical":
            friends_story = next(
                (r["id"] for r in walked if r["visibility"] == "friends" and r["author_id"] != viewer), walked[0]["id"]
            )
    assert friends_story is not None
    (visible_sql,) = statements_of("aio_visible_story", story_sql)
    results.append(
        await explain(
            conn, scenario, "GET /stories/{id} (visible)", visible_sql, (subjects.typical, now, friends_story), runs
        )
    )
    hidden = await conn.fetchval(
        "SELECT id FROM stories WHERE visibility = 'private' AND author_id <> $1 AND expires_at > $2 LIMIT 1",
        subjects.typical,
        now,
    )
    results.append(
        await explain(
            conn, scenario, "GET /stories/{id} (hidden: 404)", visible_sql, (subjects.typical, now, hidden), runs
        )
    )
    view_sqls = statements_of("aio_record_view", engagement)
    view_args: list[tuple[Any, ...]] = [(subjects.typical, now, friends_story), (friends_story, subjects.typical)]
    for number, (sql, args) in enumerate(zip(view_sqls, view_args, strict=True), 1):
        results.append(await explain(conn, scenario, f"record_view {number}/{len(view_sqls)}", sql, args, runs))
    reaction_sqls = statements_of("aio_add_reaction", engagement)
    reaction_args: list[tuple[Any, ...]] = [(subjects.typical, now, friends_story, uuid.uuid4(), "🔥")]
    for number, (sql, args) in enumerate(zip(reaction_sqls, reaction_args, strict=True), 1):
        results.append(await explain(conn, scenario, f"add_reaction {number}/{len(reaction_sqls)}", sql, args, runs))
    for number, sql in enumerate(stats_sqls := statements_of("aio_stats", engagement), 1):
        results.append(
            await explain(
                conn,
                scenario,
                f"/me/stats {number}/{len(stats_sqls)}",
                sql,
                (subjects.author, now - timedelta(days=7)),
                runs,
            )
        )
    (expire_sql,) = statements_of("aio_expire_batch", housekeeping)
    results.append(await explain(conn, scenario, "expiry batch", expire_sql, (now, DEFAULT_BATCH_SIZE), runs))
    results += await measure_social(conn, scenario, subjects, now, runs)
    return results


async def measure_social(conn: Connection, scenario: str, subjects: Subjects, now: datetime, runs: int) -> list[Result]:
    """The social reads: a profile, the most followed celebrity's followers (page 1 and 1,000 deep) as the
    typical user reads them, and "seen by" of the prolific author's most viewed story."""
    results = []
    (profile_sql,) = statements_of("aio_profile", users)
    results.append(
        await explain(conn, scenario, "GET /users/{id}", profile_sql, (subjects.typical, subjects.celebrity), runs)
    )
    page = (subjects.celebrity, subjects.typical, LIST_PAGE + 1)
    results.append(await explain(conn, scenario, "followers page 1, celebrity", social_graph.FOLLOWERS_SQL, page, runs))
    deep = await conn.fetchrow(
        """SELECT created_at, follower_id FROM follows WHERE followee_id = $1
           ORDER BY created_at DESC, follower_id DESC OFFSET 1000 LIMIT 1""",
        subjects.celebrity,
    )
    if deep is not None:
        results.append(
            await explain(
                conn,
                scenario,
                "followers after 1,000 entries, celebrity",
                social_graph.FOLLOWERS_AFTER_SQL,
                (*page, deep["created_at"], deep["follower_id"]),
                runs,
            )
        )
    story = await conn.fetchval(
        "SELECT id FROM stories WHERE author_id = $1 AND created_at > $2 ORDER BY view_count DESC LIMIT 1",
        subjects.author,
        now - timedelta(days=7),
    )
    viewers = (story, subjects.author, now - timedelta(days=7), LIST_PAGE + 1)
    results.append(await explain(conn, scenario, "viewers page 1, most viewed", engagement.VIEWERS_SQL, viewers, runs))
    return results


async def seed_into(pool: asyncpg.Pool, plan: SeedPlan, *, include_people: bool) -> tuple[SeedDataset, float]:
    dataset = SeedDataset(plan)
    started = time.perf_counter()
    await aio_copy_seed(pool, dataset.batches(include_people=include_people), None, TABLE_ORDER)
    return dataset, time.perf_counter() - started


async def vacuum_analyze(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "VACUUM ANALYZE users, follows, blocks, mutes, stories, story_audience, story_views, reactions"
        )


def _with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


async def run(args: argparse.Namespace) -> int:
    own_database = args.database_url is None
    url = args.database_url or _with_database(args.admin_url, BENCH_DATABASE)
    if own_database:
        try:
            await _admin_execute(args.admin_url, DROP_BENCH_DATABASE, CREATE_BENCH_DATABASE)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            raise admin_failed(args.admin_url, error) from None
    try:
        return await bench(url, args)
    finally:
        if own_database and not args.keep:
            await _admin_execute(args.admin_url, DROP_BENCH_DATABASE)


async def _admin_execute(admin_url: str, *statements: str) -> None:
    """Run `statements` in order on one connection to the admin database."""
    admin = await asyncpg.connect(admin_url)
    try:
        for statement in statements:
            await admin.execute(statement)
    finally:
        await admin.close()


async def bench(url: str, args: argparse.Namespace) -> int:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2, server_settings=SERVER_SETTINGS)
    try:
        await aio_migrate(pool, load_migrations())
        async with pool.acquire() as conn:
            if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM stories)"):
                print("feed_plans: the database already holds stories; give it an empty one", file=sys.stderr)
                return 2
            server = await conn.fetchval("SHOW server_version")
        now = to_millis(datetime.now(UTC))
        plan = SeedPlan(
            users=args.users, stories=args.stories, follows_per_user=args.follows, now=now, password_hash="x"
        )
        dataset, seed_seconds = await seed_into(pool, plan, include_people=True)
        summary = dataset.summary()
        print(f"seeded {summary.stories} stories, {summary.views} views in {seed_seconds:.1f} s", flush=True)
        await vacuum_analyze(pool)
        subjects = pick_subjects(dataset, summary)
        results: list[Result] = []
        cache: dict[str, tuple[int, int]] = {}
        live: dict[str, tuple[int, int]] = {}
        async with pool.acquire() as conn:
            results += await measure(conn, "base", subjects, now, args.runs)
            live["base"] = await live_estimate(conn, now)
            cache["FEED_SQL"] = await plan_cache_choice(conn, story_sql.FEED_SQL, (subjects.typical, now, PAGE + 1))
        extra: SeedSummary | None = None
        extra_seconds = 0.0
        if args.extra_stories:
            old = replace(
                plan,
                stories=args.extra_stories,
                newest_age=plan.story_ttl,
                oldest_age=timedelta(days=7),
            )
            extra_dataset, extra_seconds = await seed_into(pool, old, include_people=False)
            extra = extra_dataset.summary()
            print(f"added {extra.stories} old stories in {extra_seconds:.1f} s", flush=True)
            await vacuum_analyze(pool)
            async with pool.acquire() as conn:
                results += await measure(conn, "+old", subjects, now, args.runs)
                live["+old"] = await live_estimate(conn, now)
        blocking: Blocking | None = None
        if args.blockers > 0:
            blocking = await add_blocks_and_mutes(pool, dataset, args.blockers, now)
            print(f"added {blocking.blocks} blocks and {blocking.mutes} mutes", flush=True)
            await vacuum_analyze(pool)
            async with pool.acquire() as conn:
                results += await measure(conn, "+blocks", subjects, now, args.runs)
                live["+blocks"] = await live_estimate(conn, now)
        if args.extra_stories:
            async with pool.acquire() as conn:
                await conn.execute("UPDATE stories SET deleted_at = NULL WHERE deleted_at IS NOT NULL")
            await vacuum_analyze(pool)
            async with pool.acquire() as conn:
                results += await measure(conn, "stalled", subjects, now, args.runs)
                live["stalled"] = await live_estimate(conn, now)
        million: Million | None = None
        if args.million:
            million = await add_million_followers(pool, args.million, now)
            print(f"added {million.followers} followers of one user in {million.seconds:.1f} s", flush=True)
            await vacuum_analyze(pool)
            async with pool.acquire() as conn:
                results += await measure_lists(conn, "+1M", subjects, million, args.runs)
        print_summary(results)
        if args.report:
            text = report(
                results,
                summary,
                extra,
                subjects,
                seed_seconds,
                extra_seconds,
                cache,
                live,
                server,
                args,
                blocking,
                million,
            )
            await asyncio.to_thread(Path(args.report).write_text, text, "utf-8")
            print(f"wrote {args.report}")
        return 0
    finally:
        await pool.close()


def _row(r: Result) -> str:
    seq = ", ".join(r.seq_scans) or "-"
    return (
        f"| {r.scenario} | {r.name} | {r.median_ms:.3f} | {r.planning_ms:.3f} | {r.rows} | {r.stories_read} "
        f"| {r.sorted_rows} | {r.shared_hit} | {r.shared_read} | {seq} |"
    )


_HEADER = (
    "| scenario | query | median ms | planning ms | rows | stories rows read | rows sorted | shared hit | shared read "
    "| seq scan on stories/views/reactions |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
)


def print_summary(results: list[Result]) -> None:
    print(_HEADER)
    for r in results:
        print(_row(r))


def report(
    results: list[Result],
    summary: SeedSummary,
    extra: SeedSummary | None,
    subjects: Subjects,
    seed_seconds: float,
    extra_seconds: float,
    cache: dict[str, tuple[int, int]],
    live: dict[str, tuple[int, int]],
    server: str,
    args: argparse.Namespace,
    blocking: Blocking | None,
    million: Million | None,
) -> str:
    out = [
        "# Feed and hot-read query plans",
        "",
        f"Generated by `python -m bench.feed_plans --stories {args.stories} --extra-stories {args.extra_stories} "
        f"--blockers {args.blockers} --million {args.million}` "
        f"on {datetime.now(UTC):%Y-%m-%d}, PostgreSQL {server}, Python {platform.python_version()}, "
        f"{platform.machine()}. Medians of {args.runs} `EXPLAIN (ANALYZE, BUFFERS)` runs after a warm-up "
        "(warm cache). Statements are the exact text of `stories/store/`.",
        "",
        "## Data",
        "",
        f"- base: {summary.users} users, {summary.follows} follows, {summary.stories} stories over 48 h "
        f"(seeded in {seed_seconds:.1f} s): {summary.live} live, {summary.expired_deleted} expired and soft-deleted, "
        f"{summary.expired_pending} expired not yet deleted; {summary.by_visibility}; {summary.with_audience} with "
        f"audience lists ({summary.audience_rows} rows); {summary.views} views, {summary.reactions} reactions.",
    ]
    if extra is not None:
        out.append(
            f"- +old: {extra.stories} more stories aged 24 h .. 7 d (seeded in {extra_seconds:.1f} s): "
            f"{extra.expired_deleted} soft-deleted, {extra.expired_pending} expired not yet deleted, "
            f"{extra.views} views, {extra.reactions} reactions. Live stories unchanged."
        )
    if blocking is not None:
        out.append(
            f"- +blocks: {blocking.blockers} users ({args.blockers:.0%}) block or mute someone: {blocking.blocks} "
            f"blocks, {blocking.mutes} mutes; {blocking.follows_removed} follows of blocked pairs removed. The "
            "typical user blocks a followee and mutes the most prolific celebrity, the heavy follower mutes two "
            "celebrities, and each subject is blocked by someone."
        )
    if extra is not None:
        out.append("- stalled: the same rows with `deleted_at` reset to NULL everywhere (worker down for a week).")
    if million is not None:
        out.append(
            f"- +1M: {million.followers:,} new users following one new user (added in {million.seconds:.1f} s), and "
            "a user followed by 10 of them."
        )
    out += [
        f"- subjects: typical user follows {subjects.typical_follows}; heavy follower follows "
        f"{subjects.heavy_follows}; lonely user follows nobody; prolific author posted {subjects.author_stories} "
        "stories in the base window. Feed pages ask for "
        f"{PAGE + 1} rows (the handler's limit + 1); the deep page starts after {DEEP_OFFSET} rows.",
        f"- social reads: followers lists and `seen by` pages ask for {LIST_PAGE + 1} rows; the celebrity is the "
        "most followed user, the viewers page is of the prolific author's most viewed story.",
        f"- plan cache: the feed statement prepared and run 10 times on one connection used "
        f"{cache['FEED_SQL'][0]} generic and {cache['FEED_SQL'][1]} custom plans.",
        "",
        "## Summary",
        "",
        "`stories rows read` = rows the plan fetched from `stories` (returned + removed by filter, times loops); "
        "`rows sorted` = rows fed into Sort nodes.",
        "",
        _HEADER,
        *(_row(r) for r in results),
        "",
        *findings(results, cache, live),
        "",
        "## Plans",
        "",
    ]
    for r in results:
        out += [f"### {r.scenario}: {r.name}", "", "```sql", r.sql.strip(), "```", "", "```", r.text_plan, "```", ""]
    return "\n".join(out)


def findings(results: list[Result], cache: dict[str, tuple[int, int]], live: dict[str, tuple[int, int]]) -> list[str]:
    """The comparison tables and the answers to issue 3 item 4, from this run's numbers."""
    by_key = {(r.scenario, r.name): r for r in results}
    scenarios = [s for s in ("base", "+old", "+blocks", "stalled") if (s, "expiry batch") in by_key]
    feed_names = [r.name for r in results if r.scenario == "base" and r.name.startswith(("feed", "tray"))]
    out = [
        "## Cost by scenario",
        "",
        "Feed cells: median ms / stories rows read / shared buffers. Expiry batch: one batch of "
        f"{DEFAULT_BATCH_SIZE} (the worker's size), rolled back.",
        "",
        "| query | " + " | ".join(scenarios) + " |",
        "|---|" + "---:|" * len(scenarios),
    ]
    for name in feed_names:
        cells = [_cell(by_key[(s, name)]) for s in scenarios]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    batches = [by_key[(s, "expiry batch")] for s in scenarios]
    cells = [
        f"{b.median_ms:.1f} ms / {b.stories_read} rows / {', '.join(b.seq_scans) or 'no'} seq scan" for b in batches
    ]
    out.append("| expiry batch | " + " | ".join(cells) + " |")
    for name in (n for n in SOCIAL_READS if ("base", n) in by_key):
        cells = [_cell(by_key[(s, name)]) for s in scenarios]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    lists = [r for r in results if r.scenario == "+1M"]
    if lists:
        out += [
            "",
            "Follow lists and profiles by list length (scenario +1M): median ms / follows rows read / buffers.",
            "",
        ]
        out += ["| query | median ms | follows rows read | shared buffers |", "|---|---:|---:|---:|"]
        out += [f"| {r.name} | {r.median_ms:.3f} | {r.follows_read} | {r.shared_hit + r.shared_read} |" for r in lists]
    if len(scenarios) < 4:
        return [*out, "", "Findings need every scenario (--extra-stories > 0, --blockers > 0).", "", HISTORY]
    feed_relations = sorted({rel for r in results if r.name.startswith("feed") for rel in r.relations})
    generic, custom = cache["FEED_SQL"]
    # FINDINGS quotes figures as {rows[scenario: query]}, {buffers[...]}, {ms[...]}: always this run's.
    text = FINDINGS.format(
        feed_relations=", ".join(feed_relations),
        generic=generic,
        custom=custom,
        live={s: f"{estimate} estimated / {actual} actual" for s, (estimate, actual) in live.items()},
        bitmap_and=", ".join(
            f"{r.scenario}: {r.name}" for r in results if r.name.startswith("feed") and "BitmapAnd" in r.text_plan
        )
        or "none",
        rows={f"{r.scenario}: {r.name}": r.stories_read for r in results},
        buffers={f"{r.scenario}: {r.name}": r.shared_hit + r.shared_read for r in results},
        ms={f"{r.scenario}: {r.name}": f"{r.median_ms:.0f} ms" for r in results},
    )
    social_text = SOCIAL_FINDINGS.format(
        rows={f"{r.scenario}: {r.name}": r.stories_read for r in results},
        buffers={f"{r.scenario}: {r.name}": r.shared_hit + r.shared_read for r in results},
        ms={f"{r.scenario}: {r.name}": f"{r.median_ms:.1f} ms" for r in results},
        cell={f"{r.scenario}: {r.name}": _cell(r) for r in results},
        lists={r.name: f"{r.median_ms:.2f} ms, {r.shared_hit + r.shared_read} buffers" for r in lists},
        table="\n".join(
            [
                "| query | before (ded9de7, +old) | after, +old | after, +blocks |",
                "|---|---:|---:|---:|",
                *(
                    f"| {name} | {before} | {_cell(by_key[('+old', name)])} | {_cell(by_key[('+blocks', name)])} |"
                    for name, before in BEFORE_SOCIAL.items()
                ),
            ]
        ),
    )
    tray_text = TRAY_FINDINGS.format(
        rows={f"{r.scenario}: {r.name}": r.stories_read for r in results},
        ms={f"{r.scenario}: {r.name}": f"{r.median_ms:.0f} ms" for r in results},
    )
    return [*out, "", text, social_text, tray_text, HISTORY]


def _cell(r: Result) -> str:
    return f"{r.median_ms:.1f} / {r.stories_read} / {r.shared_hit + r.shared_read}"


TRAY_FINDINGS = """**The tray: a miss reads a page, not the feed.** `GET /tray` on a miss runs one statement
(`stories/store/tray.py` `TRAY_SQL`): the viewer, their followees and (when the page reaches the seen part) the
authors they viewed are placed by a few index probes each: a walk down the author's live stories that stops at the
first one `feed_stories` (narrowed to it by primary key) holds, and one probe of their views; every other
author has only public stories in the feed, and the unseen ones come in order from a walk down
`stories_public_feed_idx` that stops after the page; then the stories of the page's authors (the cache's 20 and
one more). Hits never reach PostgreSQL. Its cost follows the viewer's follows, not the number of active stories:
typical user {rows[base: tray miss, typical]} stories rows read, {ms[base: tray miss, typical]}; heavy follower
(1,000 follows) {rows[base: tray miss, heavy]} rows, {ms[base: tray miss, heavy]}; lonely user (no follows)
{rows[base: tray miss, lonely]} rows, {ms[base: tray miss, lonely]}. At 5k, 50k and 500k active stories: "Tray at
scale" below (`--tray-scale`).
"""


# The interpretation of the tables above. Figures in {...} come from the run; the few written out (audience
# probes, rows removed per followee, buffer bounds) are read off the plans of the run recorded in
# bench/feed_plans.md, and the small data set's from a separate run with the options quoted (the seed is
# deterministic, so rows read and buffers repeat exactly as long as the planner keeps its plans; times vary).
FINDINGS = """## Findings

**One query per page.** `aio_feed` runs exactly one statement (`FEED_SQL`, or `FEED_AFTER_SQL` with a cursor)
and the `/feed` handler calls `Store.feed` once per request (asking for limit + 1 rows to know whether a next
page exists). The plans touch only {feed_relations}: never `story_views` or `reactions`; `view_count` and
`reaction_count` are read from the story row.

**Expired stories (worker running): no growth once they are soft-deleted.** Going from 100k to 300k stories
(`base` -> `+old`, the extra 200k all expired and soft-deleted) leaves the rows each feed plan reads unchanged:
page 1, typical user {rows[base: feed page 1, typical]} -> {rows[+old: feed page 1, typical]} rows
({buffers[base: feed page 1, typical]} -> {buffers[+old: feed page 1, typical]} buffers); heavy follower
{rows[base: feed page 1, heavy]} -> {rows[+old: feed page 1, heavy]} ({buffers[base: feed page 1, heavy]} ->
{buffers[+old: feed page 1, heavy]} buffers); lonely user {rows[base: feed page 1, lonely]} ->
{rows[+old: feed page 1, lonely]}. The partial indexes (`WHERE deleted_at IS NULL`) never contain them.
Expired-but-not-yet-deleted stories (the worker's backlog, about 30 minutes of expiries here) are filtered by
`expires_at` inside the walks. At this size the custom plan no longer flips on `+old` (see History): the
friends branch uses `stories_friends_feed_idx` in every scenario, custom and generic (plans with a BitmapAnd:
{bitmap_and}). But see "Remaining risk" below.

**Stories the caller cannot see.** Other users' public stories are read through the public index, which stops
after the page. The friends branch reads only followees' live friends stories (index 0006): their public and
private stories are no longer fetched. What it still fetches and drops are friends stories with an audience list
that leaves the caller out (one `story_audience` probe per audience-listed story: 285 probes, 856 buffers for
the typical user; 2230 probes, 6691 buffers for the heavy follower; about 40% of the page's buffers) and the
backlog of expired-not-yet-deleted ones: about 6 of 24 rows per followee (`Rows Removed by Filter`). The custom
plan fetches all of a followee's live friends stories (bitmap scan, then a sort), the generic plan walks the
index newest first and stops after the page (typical, page 1: {rows[base: feed page 1, typical]} vs
{rows[base: feed page 1, typical (generic)]} rows). Each followee contributes up to a page of candidates that
are then sorted (`rows sorted`): the cost is O(followees x page size), inherent to fan-out on read and bounded
by the LIMIT per followee. It is what remains expensive for users following hundreds (heavy follower, page 1:
{ms[base: feed page 1, heavy]}, {buffers[base: feed page 1, heavy]} buffers).

**Worker stalled.** With every expired story left in the partial indexes (`stalled`), the friends branch reads
the followees' expired friends stories too (page 1, typical: {rows[base: feed page 1, typical]} ->
{rows[stalled: feed page 1, typical]} rows read, {buffers[base: feed page 1, typical]} ->
{buffers[stalled: feed page 1, typical]} buffers; heavy: {rows[base: feed page 1, heavy]} ->
{rows[stalled: feed page 1, heavy]} rows, {buffers[base: feed page 1, heavy]} ->
{buffers[stalled: feed page 1, heavy]} buffers): the walk per followee filters `expires_at > $2` but cannot
stop at it, because it is ordered by `created_at`. So the feed's independence from expired stories rests on the
expiry worker keeping up (it does: a 500-row batch reads {rows[base: expiry batch]} story rows and takes
{ms[base: expiry batch]} here). Worth a gauge/alert on the backlog
(`count(*) WHERE deleted_at IS NULL AND expires_at <= now()`, which `stories_expiry_idx` answers cheaply).

**Expiry batch.** A primary-key lookup in every scenario: the subquery locks up to 500 due ids through
`stories_expiry_idx`, the UPDATE probes `stories_pkey` with them ({rows[base: expiry batch]} /
{rows[+old: expiry batch]} / {rows[stalled: expiry batch]} story rows read on base / +old / stalled, no
sequential scan). Its buffers (~9-10k for 500 rows) are the index maintenance of 500 non-HOT updates.

**Plan cache: production mostly runs the generic plan.** asyncpg prepares and caches statements per
connection; run 10 times on one connection, the feed statement used {generic} generic and {custom} custom plans:
PostgreSQL (plan_cache_mode = auto) plans the first 5 executions with the actual values, then settles on the
generic plan when it is not costlier. So a pooled connection serves its first 5 feeds with a custom plan and
the rest with the generic one. The `(generic)` rows measure it (PREPARE + `plan_cache_mode =
force_generic_plan`): page 1, typical: {buffers[base: feed page 1, typical (generic)]} buffers on base,
{buffers[+old: feed page 1, typical (generic)]} on `+old`, {buffers[stalled: feed page 1, typical (generic)]}
when stalled; it moves with the scenarios the same way as the custom plan.

**Other hot reads.** `GET /stories/{{id}}`, `record_view` and `add_reaction` are primary-key lookups (1 story
row, <= 27 buffers each) whatever the table size. `/me/stats` reads the author's stories of 7 days through
`stories_author_created_idx` (cost proportional to what the author posted: {rows[base: /me/stats 1/2]} stories
on base, {rows[+old: /me/stats 1/2]} with `+old`'s week, an extreme author); its per-emoji query hash-joins a
sequential scan of `reactions`, which the planner prefers while the table is small
({buffers[base: /me/stats 2/2]} buffers at 46k reactions, {buffers[+old: /me/stats 2/2]} at 138k) over one
index probe per story; it should switch to `reactions_story_emoji_idx` probes as the table grows (not
measured here).

**Remaining risk: the custom plan still rests on a wrong estimate.** The flip recorded in History came from the
planner's estimate of live stories: it multiplies the selectivities of `deleted_at IS NULL` and
`expires_at > $2` as if they were independent, while nearly every story not deleted is live. Live stories,
planner vs truth: base {live[base]}; +old {live[+old]}; stalled {live[stalled]}. Index 0006 makes the friends
walk cheap enough that the planner keeps it at this size, but the choice is still a cost comparison: on a
smaller, more prolific data set (`--users 300 --stories 10000 --extra-stories 20000`, measured separately on
the same schema) the custom plans of `+old` and `stalled` combine `stories_author_created_idx` and
`stories_expiry_idx` again. Page 1, `base` -> `+old`: typical user 656 -> 2181 buffers, heavy follower
(299 follows) 3216 -> 12172 buffers (7 -> 176 ms), for the same page. The generic plans, which a connection
runs after its first 5 feeds, did not flip (628 -> 630 and 3184 -> 3199 buffers), in any run.

**Not done, for the record:** bounding the per-followee walk by `created_at > $2 - <max TTL>` would make
the stalled case independent of the backlog, but the TTL is configurable (stories keep the TTL they were
created with), so the bound needs a store-wide maximum; the worker plus an alert is simpler. Reducing the
O(followees x page) candidate set (e.g. an index-only first pass that returns only `(created_at, id)` and a
join for the 21 winners) would mostly help users following hundreds; not measured.
"""

# Blocks, mutes, names and the social reads (issue 9). BEFORE_SOCIAL: the same seed and sizes measured at commit
# ded9de7 (the statements without the anti-joins and the author's name), +old scenario, median ms / stories rows
# read / buffers, read off that run's report. The other figures come from this run.
BEFORE_SOCIAL = {
    "feed page 1, typical": "4.0 / 1245 / 2186",
    "feed page 11, typical": "2.9 / 1243 / 2159",
    "feed page 1, typical (generic)": "1.7 / 786 / 1384",
    "feed page 1, heavy": "24.3 / 9036 / 18106",
    "feed page 1, heavy (generic)": "24.1 / 9013 / 16634",
    "feed page 1, lonely": "0.1 / 25 / 33",
    "GET /stories/{id} (visible)": "0.1 / 1 / 8",
    "record_view 1/2": "0.2 / 1 / 22",
    "add_reaction 1/1": "0.1 / 1 / 17",
}
SOCIAL_FINDINGS = """**Blocks and mutes: the anti-joins cost a hash probe per candidate, not a walk.** The feed leaves
out authors in a block with the viewer (either way) and authors the viewer muted with `author_id NOT IN (hashed
SubPlan)`: the set is read once per query (three index lookups on `blocks` and `mutes`), then each candidate
story costs one hash probe. The friends branch applies it per followee (a blocked pair has no follow left; a
muted followee's stories are not walked at all). The author's display name is one `users` primary-key probe per
served story, after the LIMIT (21 per page, ~63 buffers), never per candidate. Same 300k stories, without and
with 10% of users blocking or muting (`+old` -> `+blocks`; cells: median ms / stories rows read / buffers):

{table}

Rows read stay flat: the blocks and mutes change which rows are walked, not how many are (the typical user's
muted celebrity leaves the friends branch and the public walk reads past that celebrity's stories to fill the
page). The direct reads (`GET /stories/{{id}}`, view, reaction) add two primary-key probes of `blocks`. Compare
rows and buffers, not times: on this shared 2-core box the times of one query vary up to 2x between runs (see
`base` against `+old`, or the before column, for the same rows), and in the text plans below the hidden set's three
lookups take hundredths of a millisecond while the heavy follower's page spends its time, as before, in the
per-followee walks. With the expiry worker stalled (and the blocks in place), page 1 of the typical user:
{cell[stalled: feed page 1, typical]}; before (ded9de7, no blocks): 15.5 / 7008 / 7916.

**Follow lists are as fast for 1,000,000 followers as for 10.** Each page is one walk of
`follows_followers_idx` from the cursor down, stopped by the LIMIT, plus a `users` probe per entry for the name
(scenario `+1M`): page 1, 10 followers {lists[followers page 1, 10 followers]}; page 1, 1M followers
{lists[followers page 1, 1M followers]}; half way down (after 500,000 entries)
{lists[followers half way down, 1M followers]}.
A profile reads the counters kept on `users` by the follows trigger: {lists[profile, 1M followers]} with
1M followers, {lists[profile, 10 followers]} with 10. `seen by` walks `story_views_recent_idx` the same way
(the most viewed story, page 1: {cell[+blocks: viewers page 1, most viewed]}), each viewer's reactions one probe of
`reactions_story_user_idx`.

"""

# Why index 0006 and the expiry statement are what they are: figures of the run that proposed them
# (commit cbaf7be, bench/feed_plans.md of that commit), kept when the proposals were applied.
HISTORY = """## History

Changes this bench led to. Figures from the run that proposed them (2026-11-24, same seed and sizes; the
"after" column measured the index created on the fly and the statement as a bench constant). Each cell:
median ms / stories rows read / shared buffers; rows and buffers are exact, times from a loaded box.

**`schema/0006_friends_feed_index.sql` (`stories_friends_feed_idx`, proposal P1).** The friends branch used
to walk `stories_author_feed_idx`, which holds every live story of a followee, and drop the public and private
ones after fetching them. Worse, on the `+old` database the custom plan switched the branch, per followee, to a
BitmapAnd of `stories_author_created_idx` and `stories_expiry_idx` (the `expires_at > $2` range of the expiry
index covers every live story: ~50k entries read per followee) once the statistics for `expires_at > now`
drifted: same rows, 3x to 5x the buffers, 5 s for a user following 1,000. The friends-only partial index
matches the branch's predicate exactly and reads only friends stories; at this size the planner no longer
combines indexes (but see "Remaining risk" above).

| feed page 1 | before | after |
|---|---:|---:|
| typical, base | 5.0 / 3475 / 4331 | 3.2 / 1245 / 2215 |
| typical, +old | 294.5 / 3336 / 12276 | 6.4 / 1245 / 2236 |
| typical, stalled | 33.2 / 20221 / 19977 | 24.7 / 7008 / 7913 |
| typical (generic), base | 4.2 / 2112 / 2815 | 1.7 / 735 / 1426 |
| heavy, base | 106.7 / 26036 / 35917 | 26.0 / 9036 / 19061 |
| heavy, +old | 5045.8 / 26036 / 191903 | 68.4 / 9036 / 19171 |
| heavy, stalled | 520.0 / 155102 / 161268 | 154.4 / 54102 / 64066 |
| heavy (generic), base | 34.0 / 25013 / 33283 | 20.9 / 9013 / 17609 |

**`aio_expire_batch` as a primary-key lookup (proposal P2).** It was
`UPDATE stories s SET deleted_at = $1 FROM (SELECT id ... ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)
due WHERE s.id = due.id`; on `base` the planner made it a hash join with a sequential scan of all stories as the
update target. Now `WHERE id = ANY (ARRAY(SELECT id ... FOR UPDATE SKIP LOCKED))`: same semantics (the
subquery locks, then the rows are updated), always a primary-key probe. Where the planner had already chosen
a nested loop (`+old`, `stalled`) both forms read the same rows.

| expiry batch (500) | before | after |
|---|---:|---:|
| base | 75.0 ms / 100500 rows / seq scan | 25.6 ms / 1000 rows / no seq scan |
| +old | 44.2 ms / 1000 rows / no seq scan | 28.5 ms / 1000 rows / no seq scan |
| stalled | 10.1 ms / 1000 rows / no seq scan | 19.1 ms / 1000 rows / no seq scan |
"""


TRAY_SCALE_START = "<!-- tray-scale: written by python -m bench.feed_plans --tray-scale; the rest by a full run -->"
TRAY_SCALE_END = "<!-- /tray-scale -->"
TRAY_SCALE_FOLLOWS = 500


async def follow_many(pool: asyncpg.Pool, user: uuid.UUID, count: int, now: datetime) -> int:
    """Make `user` follow `count` more users (a fixed pseudo-random choice), as issue 18's subject does."""
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO follows (follower_id, followee_id, created_at)
               SELECT $1, u.id, $2 FROM users u
               WHERE u.id <> $1
                 AND NOT EXISTS (SELECT 1 FROM follows f WHERE f.follower_id = $1 AND f.followee_id = u.id)
               ORDER BY md5(u.id::text) LIMIT $3""",
            user,
            now,
            count,
        )
        return int(await conn.fetchval("SELECT count(*) FROM follows WHERE follower_id = $1", user))


async def tray_scale_at(url: str, stories: int, args: argparse.Namespace) -> tuple[list[Result], str]:
    """Seed `stories` stories over 48 h into an empty database and EXPLAIN a tray page miss for three users."""
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2, server_settings=SERVER_SETTINGS)
    try:
        await aio_migrate(pool, load_migrations())
        now = to_millis(datetime.now(UTC))
        plan = SeedPlan(users=args.users, stories=stories, follows_per_user=args.follows, now=now, password_hash="x")
        dataset, seconds = await seed_into(pool, plan, include_people=True)
        subjects = pick_subjects(dataset, dataset.summary())
        # The lonely user (no follows) made to follow 500: the subject of issue 18's target.
        follows = await follow_many(pool, subjects.lonely, TRAY_SCALE_FOLLOWS, now)
        await vacuum_analyze(pool)
        results: list[Result] = []
        async with pool.acquire() as conn:
            _, live = await live_estimate(conn, now)
            scenario = f"{live:,} active"
            viewers = (
                (f"typical ({subjects.typical_follows} follows)", subjects.typical),
                (f"{follows} follows", subjects.lonely),
                (f"heavy ({subjects.heavy_follows} follows)", subjects.heavy),
            )
            for label, viewer in viewers:
                tray = tray_page_args(viewer, now)
                results.append(
                    await explain(conn, scenario, f"tray miss, {label}", store_tray.TRAY_SQL, tray, args.runs)
                )
                results.append(
                    await explain_generic(
                        conn, scenario, f"tray miss, {label} (generic)", store_tray.TRAY_SQL, tray, args.runs
                    )
                )
        note = f"{stories:,} stories seeded over 48 h in {seconds:.0f} s: {live:,} active"
        return results, note
    finally:
        await pool.close()


async def tray_scale(args: argparse.Namespace) -> int:
    """`--tray-scale`: the tray page miss at several sizes, written into the report's "Tray at scale" section."""
    url = _with_database(args.admin_url, BENCH_DATABASE)
    results: list[Result] = []
    notes = []
    for stories in args.tray_scale:
        await _admin_execute(args.admin_url, DROP_BENCH_DATABASE, CREATE_BENCH_DATABASE)
        try:
            found, note = await tray_scale_at(url, stories, args)
        finally:
            await _admin_execute(args.admin_url, DROP_BENCH_DATABASE)
        print(note, flush=True)
        for r in found:
            print(f"  {r.name}: {r.median_ms:.1f} ms, planning {r.planning_ms:.1f} ms, {r.stories_read} stories rows")
        results += found
        notes.append(note)
    if args.report:
        write_tray_scale(Path(args.report), results, notes, args)
    return 0


def write_tray_scale(path: Path, results: list[Result], notes: list[str], args: argparse.Namespace) -> None:
    sizes = ",".join(str(n) for n in args.tray_scale)
    lines = [
        TRAY_SCALE_START,
        "## Tray at scale",
        "",
        f"Generated by `python -m bench.feed_plans --tray-scale {sizes}` on {datetime.now(UTC):%Y-%m-%d},"
        f" {args.users} users, {args.follows} follows per user (mean); medians of {args.runs} `EXPLAIN (ANALYZE,"
        " BUFFERS)` runs after a warm-up, `jit = off` as the service's pool sets it. The statement is"
        " `stories/store/tray.py` `TRAY_SQL` for the first page of a walk, as a miss of the cache reads it"
        f" ({PREFETCH_AUTHORS} authors and one more, with their stories). `(generic)`: the plan a connection"
        " switches to after 5 runs of the prepared statement. (The `tray miss` rows of the tables above are from the"
        " full run's date: they measure the statement of that day, until the next full run.)",
        "",
        *(f"- {note}" for note in notes),
        "",
        "| data | query | median ms | planning ms | rows | stories rows read | shared hit | shared read |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r.scenario} | {r.name} | {r.median_ms:.3f} | {r.planning_ms:.3f} | {r.rows} | {r.stories_read}"
            f" | {r.shared_hit} | {r.shared_read} |"
            for r in results
        ),
        "",
    ]
    for r in results:
        if f"{TRAY_SCALE_FOLLOWS} follows" in r.name and "generic" not in r.name:
            lines += [f"### {r.scenario}: {r.name}", "", "```", r.text_plan, "```", ""]
    lines.append(TRAY_SCALE_END)
    text = path.read_text() if path.exists() else ""
    if TRAY_SCALE_START in text and TRAY_SCALE_END in text:
        head, rest = text.split(TRAY_SCALE_START, 1)
        _, tail = rest.split(TRAY_SCALE_END, 1)
        text = head + "\n".join(lines) + tail
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.feed_plans", description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="an empty database to seed (default: create stories_bench)")
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help="where to create stories_bench")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--follows", type=int, default=50, help="follows per user (mean)")
    parser.add_argument("--stories", type=int, default=100_000)
    parser.add_argument("--extra-stories", type=int, default=200_000, help="old expired stories added (0: skip)")
    parser.add_argument("--blockers", type=float, default=0.1, help="share of users who block or mute (0: skip)")
    parser.add_argument("--million", type=int, default=1_000_000, help="followers of one user (0: skip)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--report", default="bench/feed_plans.md", help="markdown report path ('' to skip)")
    parser.add_argument("--keep", action="store_true", help="keep stories_bench after the run")
    parser.add_argument(
        "--tray-scale",
        type=lambda raw: [int(n) for n in raw.split(",")],
        help="only the tray page miss, seeding these numbers of stories in turn (e.g. 10000,100000,1000000)",
    )
    args = parser.parse_args()
    return asyncio.run(tray_scale(args) if args.tray_scale else run(args))


if __name__ == "__main__":
    sys.exit(main())
