-- Schema 14: rules the core states, kept whole in the database.
--
-- A legacy builder's faults counted while it held no build are stored with it (they were a master's memory,
-- lost on restart or takeover): BuilderStanding.idleFaults, forgiven together when it answers well again.
ALTER TABLE builder ADD COLUMN idle_faults integer NOT NULL DEFAULT 0 CHECK (idle_faults >= 0);

-- The database refuses a change of a build's status that the transition graph does not allow.
-- The rows of build_transition are BuildStatus.writableRows (BuilddCore): each step of the transition graph,
-- and NEEDSBUILD to where BUILDING may go (a batch of reports that accepts a build and sees it end writes its
-- row once). CoreRulesInSQLTests compares them with the Swift, both ways, and tries a forbidden update. Every
-- writer of build.status goes through the core, which checks each step of its batch first
-- (LifecycleCore.forbiddenTransitions); this trigger is the second check, for any path that does not.
CREATE TABLE build_transition (
    from_status text NOT NULL,
    to_status   text NOT NULL,
    PRIMARY KEY (from_status, to_status)
);

INSERT INTO build_transition (from_status, to_status) VALUES
    ('NEEDSBUILD', 'FULLYBUILT'),
    ('NEEDSBUILD', 'FAILEDTOBUILD'),
    ('NEEDSBUILD', 'MANUALDEPWAIT'),
    ('NEEDSBUILD', 'CHROOTWAIT'),
    ('NEEDSBUILD', 'SUPERSEDED'),
    ('NEEDSBUILD', 'BUILDING'),
    ('NEEDSBUILD', 'CANCELLING'),
    ('NEEDSBUILD', 'CANCELLED'),
    ('NEEDSBUILD', 'GATHERING'),
    ('FAILEDTOBUILD', 'NEEDSBUILD'),
    ('MANUALDEPWAIT', 'NEEDSBUILD'),
    ('CHROOTWAIT', 'NEEDSBUILD'),
    ('BUILDING', 'NEEDSBUILD'),
    ('BUILDING', 'FULLYBUILT'),
    ('BUILDING', 'FAILEDTOBUILD'),
    ('BUILDING', 'MANUALDEPWAIT'),
    ('BUILDING', 'CHROOTWAIT'),
    ('BUILDING', 'CANCELLING'),
    ('BUILDING', 'CANCELLED'),
    ('BUILDING', 'GATHERING'),
    ('FAILEDTOUPLOAD', 'NEEDSBUILD'),
    ('UPLOADING', 'NEEDSBUILD'),
    ('UPLOADING', 'FULLYBUILT'),
    ('UPLOADING', 'FAILEDTOUPLOAD'),
    ('CANCELLING', 'NEEDSBUILD'),
    ('CANCELLING', 'FULLYBUILT'),
    ('CANCELLING', 'FAILEDTOBUILD'),
    ('CANCELLING', 'MANUALDEPWAIT'),
    ('CANCELLING', 'CHROOTWAIT'),
    ('CANCELLING', 'CANCELLED'),
    ('CANCELLING', 'GATHERING'),
    ('CANCELLED', 'NEEDSBUILD'),
    ('GATHERING', 'NEEDSBUILD'),
    ('GATHERING', 'FULLYBUILT'),
    ('GATHERING', 'FAILEDTOBUILD'),
    ('GATHERING', 'MANUALDEPWAIT'),
    ('GATHERING', 'FAILEDTOUPLOAD'),
    ('GATHERING', 'UPLOADING');

CREATE FUNCTION build_status_guard() RETURNS trigger LANGUAGE plpgsql AS $guard$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM build_transition WHERE from_status = OLD.status AND to_status = NEW.status) THEN
        RAISE EXCEPTION 'build % may not go from % to %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$guard$;

CREATE TRIGGER build_status_guard BEFORE UPDATE OF status ON build
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION build_status_guard();
