"""Who may read what: the SQL fragments every read of stories and users is built from (API.md "Visibility
rules", "Blocks and mutes", "Reports and moderation").

The one home of these rules: a statement that reads stories embeds READABLE or VISIBLE; a statement that reads
users or lists embeds the block fragments below. No statement spells out `blocks` or `mutes` itself.
"""

from __future__ import annotations

__all__ = [
    "HIDDEN_FROM_FEED",
    "READABLE",
    "VISIBLE",
    "VISIBLE_AUTHOR_SQL",
    "blocked_by",
    "not_blocked_between",
    "users_blocked_by",
    "users_hidden_from",
]


def blocked_by(blocker: str, blocked: str) -> str:
    """True when `blocker` blocked `blocked` (SQL expressions): one primary-key probe of `blocks`."""
    return f"EXISTS (SELECT 1 FROM blocks b WHERE b.blocker_id = {blocker} AND b.blocked_id = {blocked})"


def not_blocked_between(a: str, b: str) -> str:
    """True when no block stands between `a` and `b`, either way: two primary-key probes."""
    return f"NOT {blocked_by(a, b)}\n    AND NOT {blocked_by(b, a)}"


def users_blocked_by(user: str) -> str:
    """The ids `user` blocked, as a subquery for `NOT IN`."""
    return f"(SELECT b.blocked_id FROM blocks b WHERE b.blocker_id = {user})"


def users_hidden_from(reader: str, *, muted: bool = False) -> str:
    """The users hidden from `reader`, as a subquery for `NOT IN`: in a block with them either way, and with
    `muted` the users they muted. Uncorrelated, so PostgreSQL runs it once per query and probes a hash of it
    (`NOT IN (hashed SubPlan)`): a few index lookups per statement, whatever the number of candidate rows.
    Ids are never NULL, so NOT IN is safe."""
    mutes = f"\n    UNION ALL SELECT m.muted_id FROM mutes m WHERE m.muter_id = {reader}" if muted else ""
    return f"""(
    SELECT b.blocked_id FROM blocks b WHERE b.blocker_id = {reader}
    UNION ALL SELECT b.blocker_id FROM blocks b WHERE b.blocked_id = {reader}{mutes})"""


# What every read of stories asks of a story besides who may see it, for reader $1 at instant $2: the ONE place
# that says it (point reads through VISIBLE; the feed's and the tray's three branches through feed_stories).
# Live (not deleted, not expired), and what moderation hides (API.md "Reports and moderation"):
# a story the reader reported, a story held for review (REPORT_HIDE_THRESHOLD reporters) from all but its author,
# and every story of a suspended author. The two lists are uncorrelated, so PostgreSQL reads each once per query
# and probes a hash of it (`NOT IN (hashed SubPlan)`): the reader's reports by reports_story_once_idx, the
# suspended users by users_suspended_idx (only they are in it). Neither holds NULLs, so NOT IN is safe.
READABLE = """
    s.deleted_at IS NULL AND s.expires_at > $2
    AND s.id NOT IN (SELECT r.story_id FROM reports r WHERE r.reporter_id = $1 AND r.target_type = 'story')
    AND (s.held_at IS NULL OR s.author_id = $1)
    AND s.author_id NOT IN (SELECT u.id FROM users u WHERE u.suspended_at IS NOT NULL)
"""

# Who may see an active story (API.md "Visibility rules"), for viewer $1 at instant $2: the point reads' rule.
# A block either way hides every story of the pair (two primary-key probes of `blocks`).
VISIBLE = f"""
    {READABLE} AND (
        s.author_id = $1
        OR s.visibility = 'public'
        OR (s.visibility = 'friends'
            AND EXISTS (SELECT 1 FROM follows f WHERE f.follower_id = $1 AND f.followee_id = s.author_id)
            AND (NOT s.has_audience
                 OR EXISTS (SELECT 1 FROM story_audience a WHERE a.story_id = s.id AND a.user_id = $1))))
    AND {not_blocked_between("s.author_id", "$1")}
"""

# The author of story $3 when reader $1 may see it at $2 (a report's target check).
VISIBLE_AUTHOR_SQL = f"SELECT s.author_id FROM stories s WHERE s.id = $3 AND {VISIBLE}"

# The users whose stories the feed of viewer $1 leaves out: blocked by them, blocking them, muted by them.
HIDDEN_FROM_FEED = users_hidden_from("$1", muted=True)
