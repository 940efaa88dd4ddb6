-- buildd schema, version 1: the domain of DESIGN.md with Launchpad's names.

CREATE TABLE processor (
    id          serial PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9.+_-]{0,63}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE distribution (
    id    serial PRIMARY KEY,
    name  text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9.+_-]{0,63}$')
);

CREATE TABLE distroseries (
    id               serial PRIMARY KEY,
    distribution_id  integer NOT NULL REFERENCES distribution (id),
    name             text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9.+_-]{0,63}$'),
    UNIQUE (distribution_id, name)
);

CREATE TABLE distroarchseries (
    id               serial PRIMARY KEY,
    distroseries_id  integer NOT NULL REFERENCES distroseries (id),
    architecturetag  text NOT NULL CHECK (architecturetag ~ '^[a-z0-9][a-z0-9.+_-]{0,63}$'),
    processor_id     integer NOT NULL REFERENCES processor (id),
    enabled          boolean NOT NULL DEFAULT true,
    UNIQUE (distroseries_id, architecturetag)
);

CREATE TABLE builder (
    id             serial PRIMARY KEY,
    name           text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9.+_-]{0,63}$'),
    kind           text NOT NULL DEFAULT 'agent' CHECK (kind IN ('agent', 'xmlrpc')),
    url            text CHECK (url IS NULL OR url ~ '^https?://'),
    builderok      boolean NOT NULL DEFAULT true,
    failnotes      text,
    manual         boolean NOT NULL DEFAULT false,
    active         boolean NOT NULL DEFAULT true,
    virtualized    boolean NOT NULL DEFAULT true,
    failure_count  integer NOT NULL DEFAULT 0 CHECK (failure_count >= 0),
    clean_status   text NOT NULL DEFAULT 'CLEAN' CHECK (clean_status IN ('CLEAN', 'DIRTY', 'CLEANING')),
    -- The broker user that may speak for this builder (AMQP user_id); NULL: not checked.
    broker_user    text,
    -- What the agent last said: its process session, the last sequence number applied, its state.
    agent_session  text,
    last_seq       bigint NOT NULL DEFAULT 0,
    agent_state    text CHECK (agent_state IS NULL OR agent_state IN ('IDLE', 'BUILDING', 'ABORTING')),
    last_seen      timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (kind = 'agent' OR url IS NOT NULL)
);

CREATE TABLE builder_processor (
    builder_id    integer NOT NULL REFERENCES builder (id) ON DELETE CASCADE,
    processor_id  integer NOT NULL REFERENCES processor (id),
    PRIMARY KEY (builder_id, processor_id)
);
CREATE INDEX builder_processor_by_processor ON builder_processor (processor_id);

CREATE TABLE build (
    id                   bigserial PRIMARY KEY,
    distroarchseries_id  integer NOT NULL REFERENCES distroarchseries (id),
    processor_id         integer NOT NULL REFERENCES processor (id),
    source_name          text NOT NULL CHECK (source_name ~ '^[a-z0-9][a-z0-9.+-]{0,127}$'),
    source_version       text NOT NULL CHECK (source_version ~ '^[A-Za-z0-9.+~:-]{1,128}$'),
    build_type           text NOT NULL DEFAULT 'binarypackage' CHECK (build_type ~ '^[a-z0-9][a-z0-9.+_-]{0,63}$'),
    urgency              text NOT NULL DEFAULT 'medium' CHECK (urgency IN ('low', 'medium', 'high', 'emergency')),
    pocket               text NOT NULL DEFAULT 'release'
                         CHECK (pocket IN ('release', 'security', 'updates', 'proposed', 'backports')),
    component            text NOT NULL DEFAULT 'main'
                         CHECK (component IN ('main', 'restricted', 'universe', 'multiverse', 'partner')),
    archive_purpose      text NOT NULL DEFAULT 'primary' CHECK (archive_purpose IN ('primary', 'private', 'copy')),
    status               text NOT NULL DEFAULT 'NEEDSBUILD' CHECK (status IN (
                             'NEEDSBUILD', 'FULLYBUILT', 'FAILEDTOBUILD', 'MANUALDEPWAIT', 'CHROOTWAIT',
                             'SUPERSEDED', 'BUILDING', 'FAILEDTOUPLOAD', 'UPLOADING', 'CANCELLING',
                             'CANCELLED', 'GATHERING')),
    -- The fencing token: bumped by every claim; events of older attempts are ignored.
    attempt              integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    builder_id           integer REFERENCES builder (id),
    failure_count        integer NOT NULL DEFAULT 0 CHECK (failure_count >= 0),
    result               text CHECK (result IS NULL OR result IN (
                             'OK', 'PACKAGEFAIL', 'DEPFAIL', 'CHROOTFAIL', 'BUILDERFAIL', 'GIVENBACK', 'ABORTED')),
    failnotes            text,
    log_name             text,
    log_sha256           text CHECK (log_sha256 IS NULL OR log_sha256 ~ '^[0-9a-f]{64}$'),
    date_created         timestamptz NOT NULL DEFAULT now(),
    date_started         timestamptz,
    date_finished        timestamptz
);
CREATE INDEX build_by_status ON build (status, id);

CREATE TABLE source_file (
    build_id  bigint NOT NULL REFERENCES build (id) ON DELETE CASCADE,
    name      text NOT NULL CHECK (name ~ '^[A-Za-z0-9_+~:-][A-Za-z0-9._+~:-]{0,254}$'),
    sha256    text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size      bigint NOT NULL CHECK (size >= 0),
    PRIMARY KEY (build_id, name)
);

-- One row per build that still needs a builder or holds one.
CREATE TABLE buildqueue (
    id             bigserial PRIMARY KEY,
    build_id       bigint NOT NULL UNIQUE REFERENCES build (id) ON DELETE CASCADE,
    processor_id   integer NOT NULL REFERENCES processor (id),
    -- WAITING: needs a builder; DISPATCHED: claimed and published, not yet accepted;
    -- RUNNING: accepted by builder_id; CANCELLING: abort sent.
    state          text NOT NULL DEFAULT 'WAITING' CHECK (state IN ('WAITING', 'DISPATCHED', 'RUNNING', 'CANCELLING')),
    lastscore      integer NOT NULL,
    manual         boolean NOT NULL DEFAULT false,
    builder_id     integer REFERENCES builder (id),
    token_sha256   text CHECK (token_sha256 IS NULL OR token_sha256 ~ '^[0-9a-f]{64}$'),
    logtail        text,
    date_queued    timestamptz NOT NULL DEFAULT now(),
    dispatched_at  timestamptz,
    lease_expires  timestamptz,
    CHECK (state NOT IN ('RUNNING', 'CANCELLING') OR builder_id IS NOT NULL)
);
-- "The best waiting builds of processor P": an index-only walk, cheap at a million waiting rows.
CREATE INDEX buildqueue_waiting_by_score ON buildqueue (processor_id, lastscore DESC, id) WHERE state = 'WAITING';
CREATE INDEX buildqueue_dispatched ON buildqueue (dispatched_at) WHERE state = 'DISPATCHED';
CREATE INDEX buildqueue_leases ON buildqueue (lease_expires) WHERE state IN ('RUNNING', 'CANCELLING');
-- No builder runs two builds at once.
CREATE UNIQUE INDEX buildqueue_one_build_per_builder ON buildqueue (builder_id)
    WHERE state IN ('RUNNING', 'CANCELLING');

-- Result files and logs, content-addressed on disk by sha256.
CREATE TABLE build_file (
    id           bigserial PRIMARY KEY,
    build_id     bigint NOT NULL REFERENCES build (id) ON DELETE CASCADE,
    attempt      integer NOT NULL CHECK (attempt > 0),
    name         text NOT NULL CHECK (name ~ '^[A-Za-z0-9_+~:-][A-Za-z0-9._+~:-]{0,254}$'),
    kind         text NOT NULL CHECK (kind IN ('result', 'log')),
    sha256       text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size         bigint NOT NULL CHECK (size >= 0),
    uploaded_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (build_id, attempt, name)
);

-- Status history of each build.
CREATE TABLE build_event (
    id        bigserial PRIMARY KEY,
    build_id  bigint NOT NULL REFERENCES build (id) ON DELETE CASCADE,
    at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    status    text NOT NULL,
    attempt   integer NOT NULL,
    builder   text,
    message   text
);
CREATE INDEX build_event_by_build ON build_event (build_id, id);

-- Wake dispatchers when a build starts waiting.
CREATE FUNCTION buildqueue_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('buildd_queue', NEW.processor_id::text);
    RETURN NULL;
END;
$$;
CREATE TRIGGER buildqueue_waiting_notify
    AFTER INSERT OR UPDATE OF state ON buildqueue
    FOR EACH ROW WHEN (NEW.state = 'WAITING') EXECUTE FUNCTION buildqueue_notify();
