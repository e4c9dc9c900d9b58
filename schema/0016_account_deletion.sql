-- Account deletion and export (API.md "Your account and your data").
--
-- DELETE /me removes the user row and lets the foreign keys cascade. A user's views, reactions and audience
-- entries were found only through indexes that lead with the story; without these, each deletion (and each
-- export) would scan the whole table.
CREATE INDEX story_views_viewer_idx ON story_views (viewer_id, story_id);
CREATE INDEX reactions_user_idx ON reactions (user_id, created_at, id);
CREATE INDEX story_audience_user_idx ON story_audience (user_id);
-- Upload records have no foreign key on purpose (schema/0008_media.sql): they outlive their user until the
-- lifecycle has deleted each object. The deletion hands them to the sweeper in its own transaction: due at once,
-- reason account_deleted, user_id cleared (the key itself still names the user until the row goes).
CREATE INDEX media_uploads_user_idx ON media_uploads (user_id, key);
ALTER TABLE media_uploads ALTER COLUMN user_id DROP NOT NULL;
ALTER TABLE media_uploads DROP CONSTRAINT media_uploads_delete_reason_check;
ALTER TABLE media_uploads ADD CONSTRAINT media_uploads_delete_reason_check
    CHECK (delete_reason IN ('unused', 'story_deleted', 'story_expired', 'account_deleted'));
