-- buildd schema, version 9: build events delivered to webhooks.
--
-- A webhook gets the events of buildd.events (or of the statuses it names) by HTTP POST, signed with
-- HMAC-SHA256 under its secret. Each webhook has its own cursor over the builds' history (the outbox of
-- version 8, read in commit order): it moves past an event only once the receiver took it (2xx), so a
-- receiver that is down gets every event, in order, when it is back. Failures back off; a webhook that has
-- failed for longer than the masters' give-up time is disabled, and enabled again by hand.
CREATE TABLE webhook (
    id               serial PRIMARY KEY,
    name             text NOT NULL UNIQUE,
    url              text NOT NULL,
    -- The build statuses it gets; empty: all of them.
    statuses         text[] NOT NULL DEFAULT '{}',
    secret           text NOT NULL,
    -- Whether it gets the events of private archives' builds.
    private          boolean NOT NULL DEFAULT false,
    enabled          boolean NOT NULL DEFAULT true,
    disabled_reason  text,
    cursor_xid       xid8 NOT NULL,
    cursor_id        bigint NOT NULL DEFAULT 0,
    failures         integer NOT NULL DEFAULT 0,
    failing_since    timestamptz,
    next_attempt     timestamptz NOT NULL DEFAULT now(),
    created          timestamptz NOT NULL DEFAULT now()
);

-- Every attempt to deliver, kept for `webhook deliveries` (the masters keep the last 1,000 per webhook).
CREATE TABLE webhook_delivery (
    id           bigserial PRIMARY KEY,
    webhook_id   integer NOT NULL REFERENCES webhook (id) ON DELETE CASCADE,
    event_id     bigint NOT NULL,
    build_id     bigint NOT NULL,
    status       text NOT NULL,
    http_status  integer,
    error        text,
    at           timestamptz NOT NULL DEFAULT now(),
    duration_ms  integer NOT NULL
);
CREATE INDEX webhook_delivery_by_webhook ON webhook_delivery (webhook_id, id DESC);

-- One master delivers at a time: the holder of this lease.
CREATE TABLE webhook_deliverer (
    id           integer PRIMARY KEY CHECK (id = 1),
    holder       text,
    lease_until  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO webhook_deliverer (id) VALUES (1);
