"""Demo and benchmark data: a realistic Stories workload written in bulk.

(Over 450 lines on purpose: the plan, the generator and the bulk loader change together, column for column.)

What a seed holds (all from one seeded random generator, so the same plan gives the same rows):
- users, with a skewed follow graph: a few celebrities followed by most users, ~`follows_per_user` follows
  each, a couple of heavy followers, and every `lonely_every`-th user following nobody;
- stories spread over the last `hours` (48 by default, with a 24 h TTL about half are expired): expired ones
  are soft-deleted as the expiry worker would have done, except those that expired within `worker_lag`;
  authors are Zipf-skewed, so the celebrities are also the prolific authors;
- mixed visibility (public / friends / private), a share of friends stories with audience lists;
- views and reactions only by users allowed to see the story, with `view_count` / `reaction_count` equal to
  their rows, as the store keeps them.

Rows are generated in Python and written with COPY (asyncpg `copy_records_to_table`), one transaction per
batch (the people, then `batch_stories` stories with their rows): a seed never holds one transaction for long,
so on a live database it holds the realtime event horizon back for one batch at most, not for the whole seed
(stories/store/events.py). The bulk loader (`aio_copy_seed`, below) is for seeding only: it is not part of the
serving `Store`.
"""

from __future__ import annotations

import itertools
import random
import re
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

from stories.clock import to_millis
from stories.domain import REACTION_EMOJIS
from stories.errors import Conflict
from stories.settings import DEFAULT_STORY_TTL_SECONDS

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from datetime import datetime

    import asyncpg

    from stories.store import Database

__all__ = [
    "DEFAULT_SEED_PASSWORD",
    "People",
    "SeedBatch",
    "SeedDataset",
    "SeedPlan",
    "SeedProgress",
    "SeedSummary",
    "seed",
]

# The password of every seeded user (the caller hashes it once and passes the hash in the plan).
DEFAULT_SEED_PASSWORD = "seed-password"


class SeedProgress(Protocol):
    """Told what the seed is doing, for a progress display or log lines.

    Called from the database bridge's thread while the rows are copied: implementations must be thread-safe
    and quick (rich's Progress and structlog are both).
    """

    def phase(self, name: str, total: int | None = None) -> None:
        """A new phase begins (the previous one is done); `total`: how many `advance` units it has."""
        ...

    def advance(self, amount: int) -> None: ...


class _Silent:
    def phase(self, name: str, total: int | None = None) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass


_TAG = re.compile(r"[a-z0-9-]{1,32}")

# Column lists per table, in the order the generated tuples use.
_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("id", "email", "password_hash", "created_at"),
    "follows": ("follower_id", "followee_id", "created_at"),
    "stories": (
        "id",
        "author_id",
        "text",
        "media_key",
        "visibility",
        "has_audience",
        "created_at",
        "expires_at",
        "deleted_at",
        "view_count",
        "reaction_count",
    ),
    "story_audience": ("story_id", "user_id"),
    "story_views": ("story_id", "author_id", "viewer_id", "viewed_at"),
    "reactions": ("id", "story_id", "author_id", "user_id", "emoji", "created_at"),
}
# Foreign keys point left to right: each table is copied after the ones it references.
TABLE_ORDER = ("users", "follows", "stories", "story_audience", "story_views", "reactions")


# Stories per batch, each batch one transaction (with its audiences, views and reactions): about a second.
DEFAULT_BATCH_STORIES = 10_000


@dataclass(frozen=True, slots=True)
class SeedPlan:
    """What to generate. Shares are fractions in 0..1; ages count back from `now`."""

    users: int
    stories: int
    follows_per_user: int
    now: datetime
    password_hash: str
    tag: str = "seed"  # email namespace (`<tag>-000001@example.com`) and part of the random seed
    random_seed: int = 1
    story_ttl: timedelta = timedelta(seconds=DEFAULT_STORY_TTL_SECONDS)
    newest_age: timedelta = timedelta(0)
    oldest_age: timedelta = timedelta(hours=48)
    # Expired stories whose expiry is older than this are soft-deleted, as the worker would have done.
    worker_lag: timedelta = timedelta(minutes=30)
    celebrity_share: float = 0.01  # the first users by index; each user follows each one with celebrity_follow
    celebrity_follow: float = 0.6
    heavy_followers: int = 2
    heavy_follows: int = 1000
    lonely_every: int = 50  # every n-th user (index % n == 1) follows nobody
    author_skew: float = 0.5  # Zipf exponent of the author distribution
    public_share: float = 0.50
    friends_share: float = 0.35  # the rest is private
    audience_share: float = 0.25  # of friends stories whose author has followers
    max_audience: int = 10
    media_share: float = 0.3
    viewed_share: float = 0.6  # of public and friends stories
    mean_views: float = 8.0
    stranger_view_share: float = 0.25  # of views on public stories, by non-followers
    reacted_share: float = 0.4  # of viewed stories
    batch_stories: int = DEFAULT_BATCH_STORIES

    def __post_init__(self) -> None:
        if self.users < 1 or self.stories < 0 or self.follows_per_user < 0 or self.batch_stories < 1:
            raise ValueError("users must be >= 1; stories, follows_per_user >= 0; batch_stories >= 1")
        if not self.newest_age <= self.oldest_age or self.public_share + self.friends_share > 1:
            raise ValueError("newest_age must be <= oldest_age and public_share + friends_share <= 1")
        if not _TAG.fullmatch(self.tag):
            # Emails are stored normalized (lower-cased): a tag outside this set could not log in.
            raise ValueError("tag must be 1..32 of a-z, 0-9, '-'")


@dataclass(frozen=True, slots=True)
class People:
    """The generated users and follow graph, by user index (0 .. users-1)."""

    user_ids: tuple[uuid.UUID, ...]
    emails: tuple[str, ...]
    following: tuple[tuple[int, ...], ...]
    followers: tuple[tuple[int, ...], ...]
    celebrities: tuple[int, ...]
    heavy_followers: tuple[int, ...]
    lonely: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SeedBatch:
    """Rows for COPY, as tuples in `_COLUMNS` order; tables absent from `rows` are not written."""

    rows: dict[str, list[tuple[object, ...]]]

    def tables(self) -> Iterator[tuple[str, tuple[str, ...], list[tuple[object, ...]]]]:
        for table in TABLE_ORDER:
            records = self.rows.get(table)
            if records:
                yield table, _COLUMNS[table], records


@dataclass(frozen=True, slots=True)
class SeedSummary:
    users: int
    follows: int
    stories: int
    live: int
    expired_deleted: int
    expired_pending: int  # expired, deleted_at still NULL (the worker's backlog)
    by_visibility: dict[str, int]
    with_audience: int
    audience_rows: int
    views: int
    reactions: int
    top_author_id: uuid.UUID | None
    top_author_stories: int


def _uuid4(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


class SeedDataset:
    """Generates the rows of a plan: `people` at once, stories lazily in `batches()`.

    `batches(include_people=False)` adds stories to a database already seeded with the same plan's people
    (same `tag` and `random_seed`); give it another age window so the story ids differ.
    """

    def __init__(self, plan: SeedPlan) -> None:
        self.plan = plan
        self.people = _people(plan, random.Random(f"{plan.tag}:{plan.random_seed}:people"))
        # What `batches()` generated so far: SeedSummary's counts by field name, the stories by visibility and
        # by author (the person's index).
        self._counts: Counter[str] = Counter()
        self._by_visibility: Counter[str] = Counter(public=0, friends=0, private=0)
        self._per_author: Counter[int] = Counter()

    def summary(self) -> SeedSummary:
        """Counts of what `batches()` generated so far."""
        counts = self._counts
        # The author with the most stories (the first counted, among equals).
        top = self._per_author.most_common(1)
        return SeedSummary(
            users=len(self.people.user_ids),
            follows=counts["follows"],
            stories=counts["stories"],
            live=counts["live"],
            expired_deleted=counts["expired_deleted"],
            expired_pending=counts["expired_pending"],
            by_visibility=dict(self._by_visibility),
            with_audience=counts["with_audience"],
            audience_rows=counts["audience_rows"],
            views=counts["views"],
            reactions=counts["reactions"],
            top_author_id=self.people.user_ids[top[0][0]] if top else None,
            top_author_stories=top[0][1] if top else 0,
        )

    def batches(self, *, include_people: bool = True) -> Iterator[SeedBatch]:
        plan = self.plan
        if include_people:
            yield self._people_batch()
        rng = random.Random(f"{plan.tag}:{plan.random_seed}:stories:{plan.newest_age}:{plan.oldest_age}")
        cum_weights = list(itertools.accumulate(1.0 / (i + 1) ** plan.author_skew for i in range(plan.users)))
        follower_sets = [frozenset(f) for f in self.people.followers]
        for start in range(0, plan.stories, plan.batch_stories):
            count = min(plan.batch_stories, plan.stories - start)
            authors = rng.choices(range(plan.users), cum_weights=cum_weights, k=count)
            batch: dict[str, list[tuple[object, ...]]] = {t: [] for t in TABLE_ORDER[2:]}
            for number, author in enumerate(authors, start):
                self._story(rng, number, author, follower_sets, batch)
            yield SeedBatch(batch)

    def _people_batch(self) -> SeedBatch:
        plan, people = self.plan, self.people
        rng = random.Random(f"{plan.tag}:{plan.random_seed}:people-rows")
        joined = plan.now - timedelta(days=30)
        users: list[tuple[object, ...]] = [
            (user_id, email, plan.password_hash, joined + timedelta(seconds=i))
            for i, (user_id, email) in enumerate(zip(people.user_ids, people.emails, strict=True))
        ]
        follows: list[tuple[object, ...]] = []
        for follower, followees in enumerate(people.following):
            for followee in followees:
                since = plan.now - timedelta(seconds=rng.uniform(2 * 86_400, 29 * 86_400))
                follows.append((people.user_ids[follower], people.user_ids[followee], to_millis(since)))
        self._counts["follows"] += len(follows)
        return SeedBatch({"users": users, "follows": follows})

    def _story(
        self,
        rng: random.Random,
        number: int,
        author: int,
        follower_sets: list[frozenset[int]],
        out: dict[str, list[tuple[object, ...]]],
    ) -> None:
        plan, people, counts = self.plan, self.people, self._counts
        story_id = _uuid4(rng)
        author_id = people.user_ids[author]
        age = rng.uniform(plan.newest_age.total_seconds(), plan.oldest_age.total_seconds())
        created_at = to_millis(plan.now - timedelta(seconds=age))
        expires_at = created_at + plan.story_ttl
        deleted_at = None
        if expires_at > plan.now:
            counts["live"] += 1
        elif expires_at <= plan.now - plan.worker_lag:
            # The worker runs every minute or so and its batch lands a little after the expiry instant.
            deleted_at = min(expires_at + timedelta(seconds=rng.uniform(0, 60)), plan.now)
            counts["expired_deleted"] += 1
        else:
            counts["expired_pending"] += 1

        draw = rng.random()
        visibility = "private"
        if draw < plan.public_share:
            visibility = "public"
        elif draw < plan.public_share + plan.friends_share:
            visibility = "friends"
        followers = people.followers[author]
        audience: list[int] = []
        if visibility == "friends" and followers and rng.random() < plan.audience_share:
            audience = rng.sample(followers, min(len(followers), rng.randint(1, plan.max_audience)))
            if rng.random() < 0.2:
                # API.md allows any existing user on the list; a non-follower on it still sees nothing.
                outsider = rng.randrange(plan.users)
                if outsider != author and outsider not in audience:
                    audience.append(outsider)

        text: str | None = f"seed story {number}"
        media_key = None
        if rng.random() < plan.media_share:
            media_key = f"uploads/{author_id}/seed-{number}.jpg"
            if rng.random() < 0.3:
                text = None

        viewers = self._viewers(rng, visibility, author, audience, follower_sets[author])
        seen_until = min(expires_at, plan.now)
        window = max((seen_until - created_at).total_seconds(), 0.0)
        view_rows = [
            (story_id, author_id, people.user_ids[v], to_millis(created_at + timedelta(seconds=rng.uniform(0, window))))
            for v in viewers
        ]
        reaction_rows: list[tuple[object, ...]] = []
        if view_rows and rng.random() < plan.reacted_share:
            for _, _, viewer_id, viewed_at in rng.sample(view_rows, rng.randint(1, min(len(view_rows), 3))):
                for _ in range(rng.choice((1, 1, 1, 2))):
                    reaction_rows.append(
                        (_uuid4(rng), story_id, author_id, viewer_id, rng.choice(REACTION_EMOJIS), viewed_at)
                    )

        out["stories"].append(
            (
                story_id,
                author_id,
                text,
                media_key,
                visibility,
                bool(audience),
                created_at,
                expires_at,
                deleted_at,
                len(view_rows),
                len(reaction_rows),
            )
        )
        out["story_audience"].extend((story_id, people.user_ids[a]) for a in audience)
        out["story_views"].extend(view_rows)
        out["reactions"].extend(reaction_rows)
        counts["stories"] += 1
        counts["with_audience"] += bool(audience)
        counts["audience_rows"] += len(audience)
        counts["views"] += len(view_rows)
        counts["reactions"] += len(reaction_rows)
        self._by_visibility[visibility] += 1
        self._per_author[author] += 1

    def _viewers(
        self, rng: random.Random, visibility: str, author: int, audience: list[int], follower_set: frozenset[int]
    ) -> list[int]:
        """Users allowed to see the story (API.md visibility rules) who viewed it; never the author."""
        plan = self.plan
        if visibility == "private" or rng.random() >= plan.viewed_share:
            return []
        # With an audience list only its followers may see the story; otherwise every follower may.
        eligible = [a for a in audience if a in follower_set] if audience else list(self.people.followers[author])
        wanted = 1 + int(rng.expovariate(1 / max(plan.mean_views - 1, 0.01)))
        chosen = set(rng.sample(eligible, min(len(eligible), wanted)))
        if visibility == "public":
            # Public stories are also seen by strangers (every authenticated user may see them).
            for _ in range(round(wanted * plan.stranger_view_share)):
                stranger = rng.randrange(plan.users)
                if stranger != author:
                    chosen.add(stranger)
        return sorted(chosen)


def _people(plan: SeedPlan, rng: random.Random) -> People:
    n = plan.users
    user_ids = tuple(_uuid4(rng) for _ in range(n))
    emails = tuple(f"{plan.tag}-{i:06d}@example.com" for i in range(n))
    celebrities = tuple(range(min(n, max(1, round(n * plan.celebrity_share)))))
    lonely = tuple(i for i in range(n) if plan.lonely_every > 0 and i % plan.lonely_every == 1)
    lonely_set = set(lonely)
    heavy = tuple(itertools.islice((i for i in reversed(range(n)) if i not in lonely_set), plan.heavy_followers))
    following: list[tuple[int, ...]] = []
    for user in range(n):
        if user in lonely_set or n == 1:
            following.append(())
            continue
        if user in heavy:
            target = plan.heavy_follows
        else:
            target = max(1, round(rng.gauss(plan.follows_per_user, plan.follows_per_user / 4)))
        target = min(target, n - 1)
        chosen = {c for c in celebrities if c != user and rng.random() < plan.celebrity_follow}
        while len(chosen) < target:
            other = rng.randrange(n)
            if other != user:
                chosen.add(other)
        following.append(tuple(sorted(chosen)))
    followers: list[list[int]] = [[] for _ in range(n)]
    for user, followees in enumerate(following):
        for followee in followees:
            followers[followee].append(user)
    return People(
        user_ids=user_ids,
        emails=emails,
        following=tuple(following),
        followers=tuple(tuple(f) for f in followers),
        celebrities=celebrities,
        heavy_followers=heavy,
        lonely=lonely,
    )


async def seed(
    database: Database,
    *,
    users: int,
    stories: int,
    follows_per_user: int,
    now: datetime,
    password_hash: str,
    story_ttl_seconds: int = DEFAULT_STORY_TTL_SECONDS,
    tag: str = "seed",
    random_seed: int = 1,
    progress: SeedProgress | None = None,
    batch_stories: int = DEFAULT_BATCH_STORIES,
) -> SeedSummary:
    """Seed users, follows and stories (with audiences, views, reactions) over the 48 h before `now`.

    Every user's password is the one `password_hash` hashes (`DEFAULT_SEED_PASSWORD` by convention); emails
    are `<tag>-000000@example.com` upwards. Blocks the event loop while generating (seconds for 100k
    stories): meant for the CLI and benches, not a serving process. Raises Conflict when `tag` was seeded
    already; writes nothing then.
    """
    plan = SeedPlan(
        users=users,
        stories=stories,
        follows_per_user=follows_per_user,
        now=now,
        password_hash=password_hash,
        story_ttl=timedelta(seconds=story_ttl_seconds),
        tag=tag,
        random_seed=random_seed,
        batch_stories=batch_stories,
    )
    dataset = SeedDataset(plan)
    progress = progress or _Silent()
    # One crossing for the whole seed; Database.call also maps connection failures to StoreUnavailable.
    await database.call(aio_copy_seed, _reported(dataset, progress), dataset.people.emails[0], TABLE_ORDER, progress)
    return dataset.summary()


def _reported(dataset: SeedDataset, progress: SeedProgress) -> Iterator[SeedBatch]:
    """`dataset.batches()`, telling `progress` as they are generated and copied (the people come first)."""
    batches = dataset.batches()
    progress.phase("users and follows")
    yield next(batches)
    progress.phase("stories, audiences, views and reactions", total=dataset.plan.stories)
    for batch in batches:
        yield batch
        progress.advance(len(batch.rows.get("stories", ())))


async def aio_copy_seed(
    pool: asyncpg.Pool,
    batches: Iterable[SeedBatch],
    first_email: str | None,
    tables: Sequence[str],
    progress: SeedProgress | None = None,
) -> None:
    """COPY each batch in a transaction of its own, then ANALYZE so the planner sees the new rows.

    A batch is all or nothing, and a seed is a sequence of short transactions, safe on a live database: no
    table lock beyond COPY's, the foreign keys checked as the rows go in, and the event horizon held back for
    one batch at most. (It used to drop the foreign keys and copy everything in one transaction, about three
    times faster, locking the tables and stalling every realtime event for the whole seed.) A seed that fails
    half-way leaves the batches it committed. With `first_email` (the first seeded user's), refuse with
    Conflict when that user exists: the tag was seeded before, and COPY would otherwise fail on the unique email.
    """
    progress = progress or _Silent()
    async with pool.acquire() as conn:
        if first_email is not None and await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM users WHERE email = $1)", first_email
        ):
            raise Conflict(f"users with email {first_email} already exist: seed with another tag", code="seeded")
        for batch in batches:
            async with conn.transaction():
                for table, columns, records in batch.tables():
                    await conn.copy_records_to_table(table, columns=list(columns), records=records)
        progress.phase("analyzing")
        await conn.execute(f"ANALYZE {', '.join(tables)}")
