-- buildd schema, version 5: a schema made for the hot path.
--
-- A build's status changes at every step; with no index on it (or on anything else a step changes) the
-- update is a HOT update: no index is touched, and the free space fillfactor leaves on each page keeps
-- the new row version on the same page. The live builds are those in the queue, so counting them goes
-- through the queue, not through an index on the status of every build ever made.
DROP INDEX build_by_status;
ALTER TABLE build SET (fillfactor = 80);

-- A heartbeat renews a lease and a log tail, neither indexed: a HOT update. Leases that ran out are found
-- among the running builds through the one-build-per-builder index (as many entries as builders).
DROP INDEX buildqueue_leases;
ALTER TABLE buildqueue SET (fillfactor = 70);
-- Every event rewrites its builder's row (session, sequence, last seen): room for those versions on the page.
ALTER TABLE builder SET (fillfactor = 50);

-- One build's history is one range of its primary key; no second index to keep per line.
ALTER TABLE build_event DROP CONSTRAINT build_event_pkey;
ALTER TABLE build_event ADD PRIMARY KEY (build_id, id);
DROP INDEX build_event_by_build;

-- No foreign key on the columns a step writes: each one costs a lookup and a row lock per written row
-- (a builder per accept, a build per history line). What they guarded is held by the lifecycle core and
-- its locks: every change to a build and its history is made with its builder's row and the build's row
-- locked, and `builder remove` takes the builder's lock and refuses a builder that holds a build.
ALTER TABLE build DROP CONSTRAINT build_builder_id_fkey;
ALTER TABLE buildqueue DROP CONSTRAINT buildqueue_builder_id_fkey;
ALTER TABLE build_event DROP CONSTRAINT build_event_build_id_fkey;
