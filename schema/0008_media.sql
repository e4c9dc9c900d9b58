-- Upload keys issued by POST /upload/presigned: the record of every object that may exist in the bucket, kept
-- until the lifecycle has deleted that object. So no foreign keys: a row outlives its user and its story on
-- purpose (a cascade would forget an object that is still stored).
--   story_id      the story that took the key (single use); NULL while unused.
--   delete_after  when the object is due for deletion: issued_at + 24 h for an unused key, NULL while a live
--                 story uses it, the story's deletion (or expiry) once it is gone.
--   delete_reason unused | story_deleted | story_expired, for media_objects_deleted_total{reason}.
--   deleting      the lifecycle has begun deleting the object: no story may take the key any more.
--   deleted_at    when the store confirmed the deletion. The row stays until the upload URL has expired (a
--                 client could still PUT with it), and the object is deleted once more then.
CREATE TABLE media_uploads (
    key           text        PRIMARY KEY CHECK (length(key) <= 512),
    user_id       uuid        NOT NULL,
    content_type  text        NOT NULL,
    size          bigint      NOT NULL CHECK (size > 0),
    issued_at     timestamptz NOT NULL,
    story_id      uuid,
    delete_after  timestamptz,
    delete_reason text        CHECK (delete_reason IN ('unused', 'story_deleted', 'story_expired')),
    deleting      boolean     NOT NULL DEFAULT false,
    deleted_at    timestamptz,
    CHECK ((delete_after IS NULL) = (delete_reason IS NULL))
);

-- The lifecycle's batches: due objects, oldest first.
CREATE INDEX media_uploads_due_idx ON media_uploads (delete_after) WHERE delete_after IS NOT NULL;

-- A story that leaves (soft-deleted by its author or by the expiry worker, or deleted for good) makes its object
-- due at that instant. A trigger, so that every path that deletes a story does it, in the same transaction.
CREATE FUNCTION media_uploads_release() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    gone stories%ROWTYPE;
BEGIN
    IF TG_OP = 'DELETE' THEN
        gone := OLD;
    ELSE
        gone := NEW;
    END IF;
    UPDATE media_uploads
       SET delete_after = COALESCE(delete_after, gone.deleted_at, gone.created_at),
           delete_reason = COALESCE(delete_reason,
               CASE WHEN gone.deleted_at >= gone.expires_at THEN 'story_expired' ELSE 'story_deleted' END)
     WHERE key = gone.media_key AND story_id = gone.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER stories_media_released AFTER UPDATE OF deleted_at ON stories
    FOR EACH ROW WHEN (OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL AND NEW.media_key IS NOT NULL)
    EXECUTE FUNCTION media_uploads_release();

CREATE TRIGGER stories_media_purged AFTER DELETE ON stories
    FOR EACH ROW WHEN (OLD.media_key IS NOT NULL)
    EXECUTE FUNCTION media_uploads_release();
