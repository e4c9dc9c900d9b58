-- Feed, friends branch: per followee, their live friends stories newest first, and nothing else.
-- Measured on 300k stories (bench/feed_plans.md): with only stories_author_feed_idx the planner combined two
-- wider indexes per followee and read every live story's entry; this index took the first page of a typical
-- user from 12,276 to 2,236 shared buffers (294 -> 6 ms) and of a user following 1,000 from 191,903 to 19,171.
CREATE INDEX stories_friends_feed_idx ON stories (author_id, created_at DESC, id DESC)
    INCLUDE (expires_at, has_audience) WHERE visibility = 'friends' AND deleted_at IS NULL;
