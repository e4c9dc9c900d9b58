-- Sessions (API.md "Sessions" under Auth): every signup or login opens one; the JWT names it (`sid`). A session is
-- what a user signs out of: revoking it (logout, DELETE /me/sessions/{id}, a password change, a reused refresh
-- token) refuses every token it issued, on every process within 1 s (stories/actors/access.py).
CREATE TABLE sessions (
    id           uuid        PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL,
    -- The last login or refresh: tokens are checked without touching the database, so a request is no "use".
    last_used_at timestamptz NOT NULL,
    user_agent   text        CHECK (length(user_agent) <= 256),
    revoked_at   timestamptz
);
CREATE INDEX sessions_user_last_used_idx ON sessions (user_id, last_used_at DESC);
-- Sessions revoked lately: what a starting process loads (their JWTs may still be unexpired).
CREATE INDEX sessions_revoked_at_idx ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

-- Every refresh token a session was given, as a SHA-256 of the token (256 random bits: no salt or slow hash
-- needed; the token itself is never stored). A token works once (`used_at`); one presented again after its use
-- revokes its session (RFC 9700 reuse detection), which is why used ones are kept while their session lives.
CREATE TABLE session_tokens (
    token_hash bytea       PRIMARY KEY CHECK (length(token_hash) = 32),
    session_id uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    issued_at  timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX session_tokens_session_idx ON session_tokens (session_id);

-- What changed about who may call: a session revoked or deleted (a deleted user's sessions go with them), a user
-- suspended or unsuspended. Filled by the triggers below whatever code writes the change, so a writer that forgets
-- to announce it costs at most the poll period of every process's AccessWatcher (stories/actors/access.py), which reads
-- this table after its horizon as the event log is read (rows of transactions still running when it read are read
-- again next time). Rows live an hour. A deleted user leaves nothing here that names them: their sessions' rows
-- carry only the (random, now unlinkable) session id, and rows naming the user are removed with the user.
CREATE TABLE access_changes (
    xid        xid8        NOT NULL DEFAULT pg_current_xact_id(),
    changed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    session_id uuid,
    user_id    uuid,
    CHECK ((session_id IS NULL) <> (user_id IS NULL))
);
CREATE INDEX access_changes_xid_idx ON access_changes (xid);
CREATE INDEX access_changes_changed_at_idx ON access_changes (changed_at);

-- NOTIFY is delivered at commit: processes on the PostgreSQL transport hear of a change as soon as it is visible.
CREATE FUNCTION note_access_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'sessions' THEN
        INSERT INTO access_changes (session_id) VALUES (OLD.id);
    ELSIF TG_OP = 'DELETE' THEN
        DELETE FROM access_changes WHERE user_id = OLD.id;
        RETURN NULL;
    ELSE
        INSERT INTO access_changes (user_id) VALUES (NEW.id);
    END IF;
    PERFORM pg_notify('stories_access', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER sessions_revoked AFTER UPDATE OF revoked_at ON sessions
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION note_access_change();
CREATE TRIGGER sessions_deleted AFTER DELETE ON sessions
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL)
    EXECUTE FUNCTION note_access_change();
CREATE TRIGGER users_suspension_changed AFTER UPDATE OF suspended_at ON users
    FOR EACH ROW WHEN (OLD.suspended_at IS DISTINCT FROM NEW.suspended_at)
    EXECUTE FUNCTION note_access_change();
CREATE TRIGGER users_deleted AFTER DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION note_access_change();
