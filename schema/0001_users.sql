-- Accounts. Email is stored normalized (trimmed, lower-cased) so UNIQUE enforces API.md's duplicate rule.
CREATE TABLE users (
    id            uuid        PRIMARY KEY,
    email         text        NOT NULL UNIQUE CHECK (length(email) <= 254),
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL
);
