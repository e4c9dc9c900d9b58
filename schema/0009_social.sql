-- Profiles, follow lists, blocks, mutes, "seen by" (API.md "Profiles", "Social graph", viewers).

-- A display name is the only public identity of a user (1..50 characters; the API trims and refuses control
-- characters). The follow counters are kept by the trigger below, so the profile of a user with a million
-- followers is a primary-key read, not a count over a million index entries.
ALTER TABLE users
    ADD COLUMN display_name    text    CHECK (display_name IS NULL OR char_length(display_name) BETWEEN 1 AND 50),
    ADD COLUMN followers_count integer NOT NULL DEFAULT 0 CHECK (followers_count >= 0),
    ADD COLUMN following_count integer NOT NULL DEFAULT 0 CHECK (following_count >= 0);

UPDATE users u
SET followers_count = (SELECT count(*) FROM follows f WHERE f.followee_id = u.id),
    following_count = (SELECT count(*) FROM follows f WHERE f.follower_id = u.id);

-- One UPDATE per statement, however many follows it adds or removes (a block removes two, the seed's COPY
-- thousands). The users rows are locked in id order first: two concurrent follows A->B and B->A would
-- otherwise lock A and B in opposite orders and deadlock.
CREATE FUNCTION follows_count_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sign integer := CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END;
BEGIN
    PERFORM 1 FROM users
    WHERE id IN (SELECT follower_id FROM changed_follows UNION SELECT followee_id FROM changed_follows)
    ORDER BY id
    FOR NO KEY UPDATE;
    UPDATE users u
    SET followers_count = u.followers_count + sign * d.followers,
        following_count = u.following_count + sign * d.following
    FROM (SELECT id, sum(followers)::integer AS followers, sum(following)::integer AS following
          FROM (SELECT followee_id AS id, 1 AS followers, 0 AS following FROM changed_follows
                UNION ALL
                SELECT follower_id, 0, 1 FROM changed_follows) c
          GROUP BY id) d
    WHERE u.id = d.id;
    RETURN NULL;
END $$;

CREATE TRIGGER follows_counted_on_insert AFTER INSERT ON follows
    REFERENCING NEW TABLE AS changed_follows FOR EACH STATEMENT EXECUTE FUNCTION follows_count_changed();
CREATE TRIGGER follows_counted_on_delete AFTER DELETE ON follows
    REFERENCING OLD TABLE AS changed_follows FOR EACH STATEMENT EXECUTE FUNCTION follows_count_changed();

-- Follow lists, newest follow first, keyset-paged: one index walk per page whatever the list's length.
-- The followers index also serves what follows_followee_idx served (who follows a user), so it replaces it.
DROP INDEX follows_followee_idx;
CREATE INDEX follows_followers_idx ON follows (followee_id, created_at DESC, follower_id DESC);
CREATE INDEX follows_following_idx ON follows (follower_id, created_at DESC, followee_id DESC);

-- Blocks, one way; reads hide the pair both ways. The primary key answers "whom has A blocked", the second
-- index "who has blocked B" (both asked on every feed and story read), the third pages GET /me/blocks.
CREATE TABLE blocks (
    blocker_id uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    blocked_id uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (blocker_id, blocked_id),
    CHECK (blocker_id <> blocked_id)
);
CREATE INDEX blocks_blocked_idx ON blocks (blocked_id, blocker_id);
CREATE INDEX blocks_list_idx ON blocks (blocker_id, created_at DESC, blocked_id DESC);

-- Mutes: only the muter's feed changes. The primary key answers "whom has A muted" (every feed read), the
-- second index serves the cascade when a muted user is deleted, the third pages GET /me/mutes.
CREATE TABLE mutes (
    muter_id   uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    muted_id   uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (muter_id, muted_id),
    CHECK (muter_id <> muted_id)
);
CREATE INDEX mutes_muted_idx ON mutes (muted_id);
CREATE INDEX mutes_list_idx ON mutes (muter_id, created_at DESC, muted_id DESC);

-- "Seen by": a story's views, most recent first, keyset-paged, and each viewer's reactions to it.
CREATE INDEX story_views_recent_idx ON story_views (story_id, viewed_at DESC, viewer_id DESC);
CREATE INDEX reactions_story_user_idx ON reactions (story_id, user_id, created_at);
