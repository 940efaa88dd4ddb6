-- buildd schema, version 17: join tokens, with which new build machines enrol themselves.
-- servable-from: 16
--
-- Expand-only: masters of schema 16 (buildd 1.0.0) never read this table and serve this schema as it is.
--
-- A join token (`buildd-master token add NAME --role enrol --expires 1h --processor amd64`) is good once,
-- until it expires, for the processors it names (JoinToken in BuilddCore). Only its SHA-256 is kept.
-- `used_by` names the builder it enrolled; the row stays, so `token list` shows who enrolled what.
CREATE TABLE join_token (
    id            serial PRIMARY KEY,
    name          text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9.+_-]{0,63}$'),
    token_sha256  text NOT NULL UNIQUE CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    processors    text[] NOT NULL CHECK (cardinality(processors) > 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text,
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz,
    used_by       text
);
