-- buildd schema, version 6: roles and lifetimes for API tokens, and who made each change.
--
-- A token's role is one of BuilddCore's `Role` cases (viewer < submitter < operator < admin); the tokens
-- made before roles existed could cancel, retry, rescore and change builders, so they become operators.
ALTER TABLE api_token ADD COLUMN role text NOT NULL DEFAULT 'operator'
    CHECK (role IN ('viewer', 'submitter', 'operator', 'admin'));
ALTER TABLE api_token ALTER COLUMN role DROP DEFAULT;
ALTER TABLE api_token ADD COLUMN expires_at timestamptz;
ALTER TABLE api_token ADD COLUMN created_by text;

-- The actor of a line of a build's history: a token's name, `cli:USER` for the CLI on a database host,
-- NULL for the farm's own steps (a builder's report, a lease that ran out).
ALTER TABLE build_event ADD COLUMN actor text;

-- A builder's own history: operators' changes (enabled, disabled, manual, automatic) with their actor,
-- and the failures the farm counted against it (failure, failed) with their reasons. Keyed by name so
-- that it outlives `builder remove`, as a build's history keeps its builder's name.
CREATE TABLE builder_event (
    builder  text NOT NULL,
    id       bigserial,
    at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind     text NOT NULL CHECK (kind IN ('added', 'enabled', 'disabled', 'manual', 'automatic', 'failure', 'failed',
                                           'removed')),
    actor    text,
    reason   text,
    PRIMARY KEY (builder, id)
);
