-- Housekeeping by the expiry worker (leader-only, bounded batches):
-- the counters' recount finds the stories that got views or reactions since its last run;
CREATE INDEX story_views_viewed_at_idx ON story_views (viewed_at);
CREATE INDEX reactions_created_at_idx ON reactions (created_at);
-- retention deletes stories soft-deleted (expired or deleted) more than RETENTION_DAYS ago, oldest first.
CREATE INDEX stories_deleted_at_idx ON stories (deleted_at) WHERE deleted_at IS NOT NULL;
