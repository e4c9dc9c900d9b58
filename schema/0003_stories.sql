-- Stories and their optional audience lists.
-- view_count / reaction_count are maintained in the same transaction as the view or reaction row,
-- so a feed page or a story read never aggregates over story_views or reactions.
CREATE TABLE stories (
    id             uuid        PRIMARY KEY,
    author_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    text           text        CHECK (text IS NULL OR length(text) BETWEEN 1 AND 2200),
    media_key      text        CHECK (media_key IS NULL OR length(media_key) <= 512),
    visibility     text        NOT NULL CHECK (visibility IN ('public', 'friends', 'private')),
    has_audience   boolean     NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    deleted_at     timestamptz,
    view_count     integer     NOT NULL DEFAULT 0 CHECK (view_count >= 0),
    reaction_count integer     NOT NULL DEFAULT 0 CHECK (reaction_count >= 0),
    CHECK (text IS NOT NULL OR media_key IS NOT NULL),
    CHECK (expires_at > created_at),
    CHECK (NOT has_audience OR visibility = 'friends')
);

-- Feed, public branch: newest-first walk over live public stories. Soft-deleted (expired by the worker)
-- rows leave the partial index, so the walk never wades through old stories; the few that expired since
-- the worker's last run are skipped by the expires_at filter, read from the index itself (INCLUDE).
CREATE INDEX stories_public_feed_idx ON stories (created_at DESC, id DESC) INCLUDE (expires_at)
    WHERE visibility = 'public' AND deleted_at IS NULL;

-- Feed, own and followees' branches: newest-first per author over live stories.
CREATE INDEX stories_author_feed_idx ON stories (author_id, created_at DESC, id DESC)
    INCLUDE (expires_at, visibility) WHERE deleted_at IS NULL;

-- Expiry worker: live stories by expiry time.
CREATE INDEX stories_expiry_idx ON stories (expires_at) WHERE deleted_at IS NULL;

-- /me/stats: an author's stories of the last 7 days, expired and deleted ones included.
CREATE INDEX stories_author_created_idx ON stories (author_id, created_at);

-- Audience lists of friends stories (has_audience = true). Looked up by (story, viewer): the primary key.
CREATE TABLE story_audience (
    story_id uuid NOT NULL REFERENCES stories (id) ON DELETE CASCADE,
    user_id  uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (story_id, user_id)
);
