-- buildd schema, version 8: every build state change published on the broker after it is committed.
--
-- The build's history is the outbox: each change writes its line of build_event in the transaction that makes
-- it. The line now carries the id of that transaction (xid8). A master publishes the lines whose transaction
-- is older than every transaction still running (so no line can later appear before them), in the order of
-- (xid, id), and moves the cursor below on past what the broker confirmed: a master killed between the commit
-- and the publish leaves the line unpublished, and whoever publishes next publishes it (at least once).
-- Lines written before this version have no xid and are not published.
ALTER TABLE build_event ADD COLUMN xid xid8;
ALTER TABLE build_event ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
CREATE INDEX build_event_by_xid ON build_event (xid, id) WHERE xid IS NOT NULL;

-- One master publishes at a time: the holder of this lease. The cursor is the last (xid, id) published.
CREATE TABLE event_publisher (
    id           integer PRIMARY KEY CHECK (id = 1),
    holder       text,
    lease_until  timestamptz NOT NULL DEFAULT now(),
    cursor_xid   xid8 NOT NULL DEFAULT '0',
    cursor_id    bigint NOT NULL DEFAULT 0
);
INSERT INTO event_publisher (id) VALUES (1);
