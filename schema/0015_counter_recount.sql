-- How far the expiry worker's recount of view and reaction counters has got (issue 16, defect 9). The recount
-- is the net under the counter flusher (a process that crashed never flushed its touched stories): the first
-- recount after any start, however long the outage, reaches back to here, not a fixed ten minutes.
CREATE TABLE counter_recount (
    singleton       boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    recounted_until timestamptz NOT NULL
);
