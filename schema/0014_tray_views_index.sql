-- The tray (GET /tray) reads the caller's views of every story of their feed at once: with this index that is
-- one range read of the caller's own views, hashed against the feed, instead of a primary-key probe of
-- story_views per story (25,000 probes for a typical tray at 50,000 active stories: bench/feed_plans.md).
CREATE INDEX story_views_viewer_idx ON story_views (viewer_id, story_id) INCLUDE (viewed_at);
