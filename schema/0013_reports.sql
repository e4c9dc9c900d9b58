-- Reports and moderation (API.md "Reports and moderation").

-- The moderator role: one row per moderator, granted and revoked on the command line (`stories admin grant|revoke
-- <email>`). A table, not a flag on users: the role is rare, and every /admin request asks for it by primary key.
CREATE TABLE moderators (
    user_id    uuid        PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    granted_at timestamptz NOT NULL
);

-- A case: the reports of one target (a story, or a user) awaiting a moderator's decision, then that decision. It is
-- the entry GET /admin/reports lists (its id is the entry's `report_id`). At most one open case per target; reports
-- filed after a decision open a new case, counted afresh towards REPORT_HIDE_THRESHOLD. For a story, user_id is its
-- author (whom `suspend_user` suspends). A target deleted for good takes its cases and reports with it; what the
-- moderators did stays in moderation_audit.
CREATE TABLE report_cases (
    id          uuid        PRIMARY KEY,
    target_type text        NOT NULL CHECK (target_type IN ('story', 'user')),
    story_id    uuid        REFERENCES stories (id) ON DELETE CASCADE,
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    opened_at   timestamptz NOT NULL,
    resolved_at timestamptz,
    resolved_by uuid        REFERENCES users (id) ON DELETE SET NULL,
    action      text        CHECK (action IN ('dismiss', 'remove_story', 'suspend_user')),
    note        text,
    CHECK ((target_type = 'story') = (story_id IS NOT NULL)),
    CHECK ((resolved_at IS NULL) = (action IS NULL))
);
CREATE UNIQUE INDEX report_cases_open_story_idx ON report_cases (story_id)
    WHERE resolved_at IS NULL AND target_type = 'story';
CREATE UNIQUE INDEX report_cases_open_user_idx ON report_cases (user_id)
    WHERE resolved_at IS NULL AND target_type = 'user';
-- The two listings (open: oldest first; resolved: latest decision first), and the cascades.
CREATE INDEX report_cases_open_idx ON report_cases (opened_at, id) WHERE resolved_at IS NULL;
CREATE INDEX report_cases_resolved_idx ON report_cases (resolved_at DESC, id DESC) WHERE resolved_at IS NOT NULL;
CREATE INDEX report_cases_story_idx ON report_cases (story_id);
CREATE INDEX report_cases_user_idx ON report_cases (user_id);
CREATE INDEX report_cases_resolved_by_idx ON report_cases (resolved_by);

-- One report per (reporter, target). A reporter who deletes their account leaves their reports behind,
-- anonymous (reporter_id NULL): the case they support keeps its count.
CREATE TABLE reports (
    id          uuid        PRIMARY KEY,
    case_id     uuid        NOT NULL REFERENCES report_cases (id) ON DELETE CASCADE,
    reporter_id uuid        REFERENCES users (id) ON DELETE SET NULL,
    target_type text        NOT NULL CHECK (target_type IN ('story', 'user')),
    story_id    uuid        REFERENCES stories (id) ON DELETE CASCADE,
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    reason      text        NOT NULL
        CHECK (reason IN ('spam', 'harassment', 'nudity', 'violence', 'hate', 'self_harm', 'other')),
    note        text        CHECK (note IS NULL OR char_length(note) <= 500),
    created_at  timestamptz NOT NULL,
    CHECK ((target_type = 'story') = (story_id IS NOT NULL))
);
-- The first also answers every read's "stories this reader reported" (reporter_id = $1).
CREATE UNIQUE INDEX reports_story_once_idx ON reports (reporter_id, story_id) WHERE target_type = 'story';
CREATE UNIQUE INDEX reports_user_once_idx ON reports (reporter_id, user_id) WHERE target_type = 'user';
CREATE INDEX reports_case_idx ON reports (case_id);
CREATE INDEX reports_story_idx ON reports (story_id);
CREATE INDEX reports_user_idx ON reports (user_id);

-- Held for review: set when REPORT_HIDE_THRESHOLD distinct users have reported the story since the last decision;
-- every read but its author's leaves it out until a moderator decides (dismiss clears it).
ALTER TABLE stories ADD COLUMN held_at timestamptz;

-- Every read leaves out suspended authors' stories with `author_id NOT IN (suspended users)`: this partial index
-- holds only them, so that list costs one tiny index scan per query.
CREATE INDEX users_suspended_idx ON users (id) WHERE suspended_at IS NOT NULL;
-- suspended_at (0011) has had no statistics since it was added: without them the planner guesses that most users
-- are suspended and scans the whole table for that list, on every read. With them it walks the index above.
ANALYZE users (suspended_at);

-- What moderators (and the operators who grant the role) did, newest first. Never deleted: retention purges
-- stories, not this, and target_id has no foreign key so that the entry outlives its target. A moderator who
-- deletes their account leaves their entries behind with actor_id NULL; an operator's grant or revoke has none.
CREATE TABLE moderation_audit (
    id          uuid        PRIMARY KEY,
    actor_id    uuid        REFERENCES users (id) ON DELETE SET NULL,
    action      text        NOT NULL,
    target_type text        NOT NULL CHECK (target_type IN ('story', 'user')),
    target_id   uuid        NOT NULL,
    note        text,
    at          timestamptz NOT NULL
);
CREATE INDEX moderation_audit_recent_idx ON moderation_audit (at DESC, id DESC);
CREATE INDEX moderation_audit_actor_idx ON moderation_audit (actor_id);
