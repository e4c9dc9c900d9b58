-- Idempotency-Key on POST /stories, per user, honoured for 24 h. The row is claimed in the same transaction
-- that creates the story, so two concurrent requests with one key create exactly one story (the second waits
-- on the primary key, then reads the first one's response). Across processes, because it lives here.
CREATE TABLE idempotency_keys (
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key          text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash bytea       NOT NULL,
    response     bytea,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
