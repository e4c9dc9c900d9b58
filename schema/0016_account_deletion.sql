-- Account deletion and export (API.md "Your account and your data").
--
-- DELETE /me removes the user row and lets the foreign keys cascade. A user's reactions and audience entries
-- were found only through indexes that lead with the story (their views: story_views_viewer_idx, 0014), and the
-- reports they filed through partial indexes; without these, each deletion (and each export) would scan the table.
CREATE INDEX reactions_user_idx ON reactions (user_id, created_at, id);
CREATE INDEX story_audience_user_idx ON story_audience (user_id);
CREATE INDEX reports_reporter_idx ON reports (reporter_id, created_at, id);
-- Upload records have no foreign key on purpose (schema/0008_media.sql): they outlive their user until the
-- lifecycle has deleted each object. The deletion hands them to the sweeper in its own transaction: due at once,
-- reason account_deleted, user_id cleared (the key itself still names the user until the row goes).
CREATE INDEX media_uploads_user_idx ON media_uploads (user_id, key);
ALTER TABLE media_uploads ALTER COLUMN user_id DROP NOT NULL;
ALTER TABLE media_uploads DROP CONSTRAINT media_uploads_delete_reason_check;
ALTER TABLE media_uploads ADD CONSTRAINT media_uploads_delete_reason_check
    CHECK (delete_reason IN ('unused', 'story_deleted', 'story_expired', 'account_deleted'));
-- The audit log keeps its entries about a deleted user or their stories under new random ids (the deletion
-- finds them by target).
CREATE INDEX moderation_audit_target_idx ON moderation_audit (target_id);
