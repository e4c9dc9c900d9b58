-- A story's readers get its own copy of the upload (stories/<story id>/<name>, a key no upload URL is ever issued
-- for), so an upload URL used again after the story was created cannot change what they get (API.md "Media
-- uploads"). The copy is made at the story's creation; when the store did not answer then, copy_pending is set
-- and the expiry worker makes it once the upload URLs have expired (the bytes are final by then).
ALTER TABLE media_uploads ADD COLUMN copy_pending boolean NOT NULL DEFAULT false;
-- Stories created before this migration have no copy yet: the expiry worker makes theirs.
UPDATE media_uploads SET copy_pending = true WHERE story_id IS NOT NULL AND delete_after IS NULL;
CREATE INDEX media_uploads_copy_pending_idx ON media_uploads (issued_at) WHERE copy_pending;
