-- Views and reactions are the realtime event log (API.md "Realtime", DESIGN.md "Events and catch-up").
--
-- An event's id is (event_xid, event_seq): the transaction that wrote the row, then a number within it.
-- Readers (stories/store/events.py) serve only rows whose transaction is older than the oldest one still
-- running, pg_snapshot_xmin(pg_current_snapshot()). A row that commits late belongs to a transaction that was
-- running when earlier rows were served, so its id is above all of them: a cursor never skips it. Ordering by
-- time or by a sequence alone would (a sequence value is taken at insert, not at commit).
--
-- author_id is the story's author, copied in so an author's events are one index range.
CREATE SEQUENCE story_events_seq;

ALTER TABLE story_views
    ADD COLUMN author_id uuid,
    ADD COLUMN event_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    ADD COLUMN event_seq bigint NOT NULL DEFAULT nextval('story_events_seq');
UPDATE story_views v SET author_id = s.author_id FROM stories s WHERE s.id = v.story_id;
ALTER TABLE story_views ALTER COLUMN author_id SET NOT NULL;

ALTER TABLE reactions
    ADD COLUMN author_id uuid,
    ADD COLUMN event_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    ADD COLUMN event_seq bigint NOT NULL DEFAULT nextval('story_events_seq');
UPDATE reactions r SET author_id = s.author_id FROM stories s WHERE s.id = r.story_id;
ALTER TABLE reactions ALTER COLUMN author_id SET NOT NULL;

-- Catch-up: one author's events after a cursor (GET /ws?after=, GET /me/events).
CREATE INDEX story_views_author_event_idx ON story_views (author_id, event_xid, event_seq);
CREATE INDEX reactions_author_event_idx ON reactions (author_id, event_xid, event_seq);
-- The relay's tail: every author's events after the process's cursor, in id order.
CREATE INDEX story_views_event_idx ON story_views (event_xid, event_seq);
CREATE INDEX reactions_event_idx ON reactions (event_xid, event_seq);
