-- buildd schema, version 7: builds submitted over the HTTP API, and the build list paged with filters.
--
-- A submit's Idempotency-Key, scoped to the token that sent it: a retried submit (its first answer lost, or
-- the retry answered by another master) finds the build the first one made instead of making a second. The
-- digest of the request tells a reuse of a key for another request apart. Kept 24 hours; the submits
-- themselves delete older keys.
CREATE TABLE submit_key (
    caller          text NOT NULL,
    key             text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_sha256  text NOT NULL,
    build_id        bigint NOT NULL REFERENCES build (id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (caller, key)
);
CREATE INDEX submit_key_by_age ON submit_key (created_at);

-- The list's filters by source and by builder, newest first (status has build_by_status already).
CREATE INDEX build_by_source ON build (source_name, id);
CREATE INDEX build_by_builder ON build (builder_id, id);
