-- buildd schema, version 11: legacy builders shared out over the live masters.
--
-- Each master says it is alive (renewed every tick of its legacy adapter, for the legacy ownership lease);
-- the legacy builders are shared out over the masters alive now by rendezvous hashing (BuilddCore's
-- `LegacyShare`), each builder still held under its own ownership lease (version 3), so two masters never
-- follow one builder at once while they disagree on who is alive.
CREATE TABLE master_presence (
    name         text PRIMARY KEY,
    alive_until  timestamptz NOT NULL
);
