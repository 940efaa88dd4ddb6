-- buildd schema, version 4: tokens for the JSON API's changes (cancel, retry, rescore, builder state).
-- Only a token's SHA-256 is kept; the token is shown once, by `buildd-master token add`.
CREATE TABLE api_token (
    id            serial PRIMARY KEY,
    name          text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9.+_-]{0,63}$'),
    token_sha256  text NOT NULL UNIQUE CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used     timestamptz
);
