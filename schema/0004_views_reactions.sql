-- One view per (story, viewer): the primary key makes POST /stories/{id}/view idempotent.
CREATE TABLE story_views (
    story_id  uuid        NOT NULL REFERENCES stories (id) ON DELETE CASCADE,
    viewer_id uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    viewed_at timestamptz NOT NULL,
    PRIMARY KEY (story_id, viewer_id)
);

-- A user may react more than once; /me/stats counts per emoji, served by (story_id, emoji).
CREATE TABLE reactions (
    id         uuid        PRIMARY KEY,
    story_id   uuid        NOT NULL REFERENCES stories (id) ON DELETE CASCADE,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    emoji      text        NOT NULL CHECK (emoji IN ('👍', '❤️', '😂', '😮', '😢', '🔥')),
    created_at timestamptz NOT NULL
);
CREATE INDEX reactions_story_emoji_idx ON reactions (story_id, emoji);
