-- buildd schema, version 16: what rolling upgrades need.
--
-- Each schema version records the oldest schema whose masters can still serve it (its migration's
-- `-- servable-from:` line, default its own version) and the release that applied it, so a master of the
-- previous release starts on a schema an expand-only migration moved past its own, and one that cannot
-- serve a schema says which release can. Masters of schema 15 and older never read these.
--
-- Builders record the release and capabilities their agent announced in its last `hello`, for operators
-- following an upgrade machine by machine (`builder list`, the API's builder).
ALTER TABLE schema_version ADD COLUMN servable_from integer;
ALTER TABLE schema_version ADD COLUMN release text;
ALTER TABLE builder ADD COLUMN agent_release text;
ALTER TABLE builder ADD COLUMN agent_capabilities text[];
