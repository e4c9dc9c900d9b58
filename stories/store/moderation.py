"""Reports and moderation's SQL (API.md "Reports and moderation"), as asyncio coroutines like the rest of the
store.

What a reader may see of reported, held and suspended stories is not here: it is `visibility.READABLE`, the one
fragment every read of stories uses. Here: filing a report (which may hold a story for review), the moderator
role, the cases moderators list and resolve, unsuspension, the audit log and the open-reports gauge's reading.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from stories.errors import Conflict, InvalidRequest, NotFound
from stories.store.foreign_keys import caller_exists
from stories.store.idempotency import aio_claim_idempotency_key
from stories.store.models import AuditEntry, Backlog, Report, ReportCase, Resolution
from stories.store.stories import story_from_row
from stories.store.users import profile_from_row
from stories.store.visibility import VISIBLE_AUTHOR_SQL, blocked_by

if TYPE_CHECKING:
    from datetime import datetime
    from uuid import UUID

    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    from stories.store.models import IdempotencyClaim, Position, Replay

    Connection = PoolConnectionProxy[asyncpg.Record]

__all__ = [
    "aio_audit",
    "aio_file_report",
    "aio_is_moderator",
    "aio_report_backlog",
    "aio_report_cases",
    "aio_resolve",
    "aio_set_moderator",
    "aio_unsuspend",
]


def _not_visible(target_type: str) -> NotFound:
    if target_type == "story":
        return NotFound("no such story (it may have expired, or is not visible to you)")
    return NotFound("no such user")


def _open_case_sql(target_type: str) -> str:
    """The target's open case ($1 its id if new), opened if none: DO UPDATE (a no-op) takes the row lock of an
    existing one, which serializes the reports of one target until this transaction ends."""
    column = "story_id" if target_type == "story" else "user_id"
    return f"""INSERT INTO report_cases (id, target_type, story_id, user_id, opened_at)
               VALUES ($1, '{target_type}', $2, $3, $4)
               ON CONFLICT ({column}) WHERE resolved_at IS NULL AND target_type = '{target_type}'
                   DO UPDATE SET opened_at = report_cases.opened_at
               RETURNING id"""


_OPEN_CASE_SQL = {target_type: _open_case_sql(target_type) for target_type in ("story", "user")}


async def aio_file_report(
    pool: asyncpg.Pool,
    reporter_id: UUID,
    target_type: str,
    target_id: UUID,
    reason: str,
    note: str | None,
    now: datetime,
    hide_threshold: int,
    claim: IdempotencyClaim[Report] | None,
) -> Report | Replay:
    """File the reporter's report of a story or a user, in one transaction:

    - with a claim, the Idempotency-Key is claimed first (a Replay, or IdempotencyKeyReused, as for a story);
    - a target the reporter already reported: their existing report (created False), and the key stays free,
      since nothing was created;
    - a target the reporter may not see: NotFound; their own story, or themself: InvalidRequest;
    - else the report joins the target's open case (opened if none), whose row lock serializes the reports of
      one target, so that the count reaching `hide_threshold` holds the story exactly once (hid_story True).
    """
    report_id = uuid.uuid4()
    async with pool.acquire() as conn, caller_exists(), conn.transaction():
        if claim is not None:
            replay = await aio_claim_idempotency_key(
                conn, reporter_id, claim, now, claim.render(Report(report_id, "open", True))
            )
            if replay is not None:
                return replay
        existing = await _existing_report(conn, reporter_id, target_type, target_id)
        if existing is not None:
            await _release_key(conn, reporter_id, claim)
            return existing
        user_id = await _visible_target(conn, reporter_id, target_type, target_id, now)
        if user_id is None:
            raise _not_visible(target_type)
        if user_id == reporter_id:
            what = "your own story" if target_type == "story" else "yourself"
            raise InvalidRequest(f"you cannot report {what}")
        story_id = target_id if target_type == "story" else None
        case_id = await conn.fetchval(
            _OPEN_CASE_SQL[target_type],
            report_id,  # a new case is named by its first report: the entry's `report_id` is a report's id
            story_id,
            user_id,
            now,
        )
        inserted = await conn.fetchval(
            """INSERT INTO reports (id, case_id, reporter_id, target_type, story_id, user_id, reason, note, created_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
               ON CONFLICT DO NOTHING
               RETURNING true""",
            report_id,
            case_id,
            reporter_id,
            target_type,
            story_id,
            user_id,
            reason,
            note,
            now,
        )
        if not inserted:
            # The same reporter's concurrent report of this target committed first: it is the existing one.
            raced = await _existing_report(conn, reporter_id, target_type, target_id)
            assert raced is not None  # the unique index that refused this insert holds it
            await _release_key(conn, reporter_id, claim)
            return raced
        held = False
        if story_id is not None:
            held = bool(
                await conn.fetchval(
                    """UPDATE stories SET held_at = $2
                       WHERE id = $1 AND held_at IS NULL
                         AND (SELECT count(*) FROM reports WHERE case_id = $3) >= $4
                       RETURNING true""",
                    story_id,
                    now,
                    case_id,
                    hide_threshold,
                )
            )
    return Report(report_id, "open", created=True, hid_story=held)


async def _release_key(conn: Connection, user_id: UUID, claim: IdempotencyClaim[Report] | None) -> None:
    """Nothing was created: the key claimed for this request is free again (its replay would name no report)."""
    if claim is not None:
        await conn.execute("DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2", user_id, claim.key)


async def _existing_report(conn: Connection, reporter_id: UUID, target_type: str, target_id: UUID) -> Report | None:
    column = "story_id" if target_type == "story" else "user_id"
    row = await conn.fetchrow(
        f"""SELECT r.id, c.resolved_at FROM reports r JOIN report_cases c ON c.id = r.case_id
            WHERE r.reporter_id = $1 AND r.target_type = $2 AND r.{column} = $3""",
        reporter_id,
        target_type,
        target_id,
    )
    if row is None:
        return None
    return Report(row["id"], "open" if row["resolved_at"] is None else "resolved", created=False)


async def _visible_target(
    conn: Connection, reader_id: UUID, target_type: str, target_id: UUID, now: datetime
) -> UUID | None:
    """The user behind a target the reader may see (a story's author, or the user), else None. A user is visible
    as GET /users/{id} shows them: unless they have blocked the reader."""
    if target_type == "story":
        author_id: UUID | None = await conn.fetchval(VISIBLE_AUTHOR_SQL, reader_id, now, target_id)
        return author_id
    user_id: UUID | None = await conn.fetchval(
        f"""SELECT u.id FROM users u WHERE u.id = $2
           AND NOT {blocked_by("u.id", "$1")}""",
        reader_id,
        target_id,
    )
    return user_id


# --- the moderator role --------------------------------------------------------------------------------


async def aio_is_moderator(pool: asyncpg.Pool, user_id: UUID) -> bool:
    async with pool.acquire() as conn:
        return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM moderators WHERE user_id = $1)", user_id))


async def aio_set_moderator(pool: asyncpg.Pool, email: str, grant: bool, now: datetime) -> bool | None:
    """Grant or revoke the role of the user with this email; None when no user has it, else whether anything
    changed. A change is an audit entry with no actor (an operator, on the command line)."""
    async with pool.acquire() as conn, conn.transaction():
        user_id = await conn.fetchval("SELECT id FROM users WHERE email = $1", email)
        if user_id is None:
            return None
        if grant:
            changed = await conn.fetchval(
                """INSERT INTO moderators (user_id, granted_at) VALUES ($1, $2)
                   ON CONFLICT (user_id) DO NOTHING RETURNING true""",
                user_id,
                now,
            )
        else:
            changed = await conn.fetchval("DELETE FROM moderators WHERE user_id = $1 RETURNING true", user_id)
        if changed:
            action = "grant_moderator" if grant else "revoke_moderator"
            await _audit(conn, None, action, "user", user_id, None, now)
    return bool(changed)


async def _audit(
    conn: Connection,
    actor_id: UUID | None,
    action: str,
    target_type: str,
    target_id: UUID,
    note: str | None,
    now: datetime,
) -> None:
    await conn.execute(
        """INSERT INTO moderation_audit (id, actor_id, action, target_type, target_id, note, at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        uuid.uuid4(),
        actor_id,
        action,
        target_type,
        target_id,
        note,
        now,
    )


# --- cases ---------------------------------------------------------------------------------------------

# A case with its reasons and reporters counted from its reports, the reported story (any state: a moderator
# sees what was reported, as its author does) and the reported user.
_CASE_SELECT = """
    SELECT c.id, c.target_type, c.story_id, c.user_id, c.opened_at, c.resolved_at, c.resolved_by, c.action, c.note,
           g.reasons, g.counts,
           s.id AS s_id, c.user_id AS s_author_id, s.text AS s_text, s.media_key AS s_media_key,
           s.visibility AS s_visibility, s.created_at AS s_created_at, s.expires_at AS s_expires_at,
           s.view_count AS s_view_count, s.reaction_count AS s_reaction_count, u.display_name AS s_author_name,
           u.id AS u_id, u.display_name AS u_display_name, u.created_at AS u_created_at,
           u.followers_count AS u_followers_count, u.following_count AS u_following_count, u.suspended_at
    FROM report_cases c
    JOIN users u ON u.id = c.user_id
    LEFT JOIN stories s ON s.id = c.story_id
    CROSS JOIN LATERAL (
        SELECT array_agg(x.reason ORDER BY x.reason) AS reasons, array_agg(x.n ORDER BY x.reason) AS counts
        FROM (SELECT r.reason, count(*) AS n FROM reports r WHERE r.case_id = c.id GROUP BY r.reason) x) g"""


def _case(row: asyncpg.Record) -> ReportCase:
    reasons = dict(zip(row["reasons"] or [], row["counts"] or [], strict=True))
    # The story's columns are read with the case's author and display name (s_author_id, s_author_name).
    story = None if row["s_id"] is None else story_from_row(row, "s_")
    profile = profile_from_row(row, "u_")
    return ReportCase(
        id=row["id"],
        target_type=row["target_type"],
        target_id=row["story_id"] if row["target_type"] == "story" else row["user_id"],
        user_id=row["user_id"],
        reasons=reasons,
        reporters=sum(reasons.values()),
        opened_at=row["opened_at"],
        resolved_at=row["resolved_at"],
        resolved_by=row["resolved_by"],
        action=row["action"],
        note=row["note"],
        story=story,
        profile=profile,
        suspended=row["suspended_at"] is not None,
    )


def _cases_sql(status: str, *, with_cursor: bool) -> str:
    """Open cases oldest first (the queue), resolved ones latest decision first; $1 rows at most, after ($2, $3)."""
    if status == "open":
        after = "AND (c.opened_at, c.id) > ($2, $3)" if with_cursor else ""
        return f"{_CASE_SELECT} WHERE c.resolved_at IS NULL {after} ORDER BY c.opened_at, c.id LIMIT $1"
    after = "AND (c.resolved_at, c.id) < ($2, $3)" if with_cursor else ""
    return f"{_CASE_SELECT} WHERE c.resolved_at IS NOT NULL {after} ORDER BY c.resolved_at DESC, c.id DESC LIMIT $1"


_CASES_SQL = {
    (status, with_cursor): _cases_sql(status, with_cursor=with_cursor)
    for status in ("open", "resolved")
    for with_cursor in (False, True)
}


async def aio_report_cases(pool: asyncpg.Pool, status: str, limit: int, cursor: Position | None) -> list[ReportCase]:
    async with pool.acquire() as conn:
        if cursor is None:
            rows = await conn.fetch(_CASES_SQL[status, False], limit)
        else:
            rows = await conn.fetch(_CASES_SQL[status, True], limit, cursor.at, cursor.id)
    return [_case(row) for row in rows]


async def aio_resolve(
    pool: asyncpg.Pool, moderator_id: UUID, entry_id: UUID, action: str, note: str | None, now: datetime
) -> Resolution:
    """Decide a case (named by its id, or by the id of any report in it) in one transaction with its audit entry.

    dismiss: the story held for review (if any) is visible again; remove_story: the story is soft-deleted as its
    author's DELETE does (the media sweeper removes its object); suspend_user: the target user, or the story's
    author, is suspended (users.suspended_at). NotFound for an unknown id; Conflict `own_case` when the case is
    about the moderator or their story; Conflict `already_resolved` when it was decided otherwise before (the same
    decision again answers the case unchanged); InvalidRequest for remove_story on a user.
    """
    async with pool.acquire() as conn, caller_exists(), conn.transaction():
        case = await conn.fetchrow(
            """SELECT id, target_type, story_id, user_id, action FROM report_cases
               WHERE id = $1 OR id = (SELECT case_id FROM reports WHERE id = $1)
               FOR UPDATE""",
            entry_id,
        )
        if case is None:
            raise NotFound("no such report")
        case_id, story_id, user_id = case["id"], case["story_id"], case["user_id"]
        if user_id == moderator_id:
            raise Conflict("this report is about you or your story: another moderator must decide it", code="own_case")
        if case["action"] is not None:
            if case["action"] != action:
                raise Conflict(f"this report was already resolved with {case['action']}", code="already_resolved")
            # The same decision again (a retry): nothing changes, but the caller tells the caches again, since the
            # first attempt may have committed and been cut off before it did.
            hidden = await _hidden_by(conn, action, story_id, user_id, now)
            return Resolution(await _read_case(conn, case_id), False, hidden)
        if action == "dismiss":
            if story_id is not None:
                await conn.execute("UPDATE stories SET held_at = NULL WHERE id = $1", story_id)
            target_type, target_id = case["target_type"], story_id or user_id
        elif action == "remove_story":
            if story_id is None:
                raise InvalidRequest(
                    "action: remove_story needs a reported story; this report is about a user",
                    fields={"action": "remove_story is for story reports"},
                )
            await conn.execute("UPDATE stories SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL", story_id, now)
            target_type, target_id = "story", story_id
        else:
            await conn.execute(
                "UPDATE users SET suspended_at = $2 WHERE id = $1 AND suspended_at IS NULL", user_id, now
            )
            target_type, target_id = "user", user_id
        await conn.execute(
            """UPDATE report_cases SET resolved_at = $2, resolved_by = $3, action = $4, note = $5 WHERE id = $1""",
            case_id,
            now,
            moderator_id,
            action,
            note,
        )
        await _audit(conn, moderator_id, action, target_type, target_id, note, now)
        hidden = await _hidden_by(conn, action, story_id, user_id, now)
        return Resolution(await _read_case(conn, case_id), True, hidden)


async def _hidden_by(
    conn: Connection, action: str, story_id: UUID | None, user_id: UUID, now: datetime
) -> tuple[UUID, ...]:
    """The stories a decision took out of other users' reads: the removed one, or the suspended author's live
    ones (a dismissal hides nothing)."""
    if action == "remove_story" and story_id is not None:
        return (story_id,)
    if action == "suspend_user":
        rows = await conn.fetch(
            "SELECT id FROM stories WHERE author_id = $1 AND deleted_at IS NULL AND expires_at > $2", user_id, now
        )
        return tuple(row["id"] for row in rows)
    return ()


async def _read_case(conn: Connection, case_id: UUID) -> ReportCase:
    row = await conn.fetchrow(f"{_CASE_SELECT} WHERE c.id = $1", case_id)
    assert row is not None  # read in the transaction that holds the case's row lock
    return _case(row)


async def aio_unsuspend(
    pool: asyncpg.Pool, moderator_id: UUID, user_id: UUID, note: str | None, now: datetime
) -> bool | None:
    """Lift the user's suspension; None for an unknown user, else whether it changed (an audit entry only then:
    idempotent). Conflict `own_case` for the moderator themself."""
    if user_id == moderator_id:
        raise Conflict("another moderator must decide about your own account", code="own_case")
    async with pool.acquire() as conn, caller_exists(), conn.transaction():
        suspended_at = await conn.fetchrow("SELECT suspended_at FROM users WHERE id = $1 FOR NO KEY UPDATE", user_id)
        if suspended_at is None:
            return None
        if suspended_at["suspended_at"] is None:
            return False
        await conn.execute("UPDATE users SET suspended_at = NULL WHERE id = $1", user_id)
        await _audit(conn, moderator_id, "unsuspend_user", "user", user_id, note, now)
    return True


# --- the audit log and the backlog ---------------------------------------------------------------------


async def aio_audit(pool: asyncpg.Pool, limit: int, cursor: Position | None) -> list[AuditEntry]:
    """Newest first, $1 at most, after position ($2, $3): a walk of moderation_audit_recent_idx."""
    select = "SELECT id, actor_id, action, target_type, target_id, note, at FROM moderation_audit"
    order = "ORDER BY at DESC, id DESC LIMIT $1"
    async with pool.acquire() as conn:
        if cursor is None:
            rows = await conn.fetch(f"{select} {order}", limit)
        else:
            rows = await conn.fetch(f"{select} WHERE (at, id) < ($2, $3) {order}", limit, cursor.at, cursor.id)
    return [
        AuditEntry(r["id"], r["actor_id"], r["action"], r["target_type"], r["target_id"], r["note"], r["at"])
        for r in rows
    ]


async def aio_report_backlog(pool: asyncpg.Pool) -> Backlog:
    """Both from report_cases_open_idx (the open cases only)."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, min(opened_at) AS oldest FROM report_cases WHERE resolved_at IS NULL"
        )
    assert row is not None  # an aggregate SELECT always returns one row
    return Backlog(row["n"], row["oldest"])
