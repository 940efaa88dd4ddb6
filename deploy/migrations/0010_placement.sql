-- buildd schema, version 10: placement (Launchpad's candidate rules by virtualization and resources).
--
-- A builder is virtualized or not and offers open resources (any build may ask for them) and restricted
-- ones (kept for the builds that ask for all of them). A build requires virtualization or not (a private
-- archive's always does) and may ask for resources (constraints). The rule is BuilddCore's
-- `Placement.refusal`; the claims select candidates with `Placement.sqlCondition`, which a test checks
-- against it. The queue entry carries the build's requirements so the claims read the queue alone.
ALTER TABLE builder
    ADD COLUMN open_resources       text[] NOT NULL DEFAULT '{}',
    ADD COLUMN restricted_resources text[] NOT NULL DEFAULT '{}';

ALTER TABLE build
    ADD COLUMN require_virtualized  boolean NOT NULL DEFAULT true,
    ADD COLUMN constraints          text[] NOT NULL DEFAULT '{}';

ALTER TABLE buildqueue
    ADD COLUMN virtualized          boolean NOT NULL DEFAULT true,
    ADD COLUMN constraints          text[] NOT NULL DEFAULT '{}';

-- The shared job queues carry plain builds only (virtualized, no constraints): their claim walks this.
CREATE INDEX buildqueue_plain_waiting_by_score ON buildqueue (processor_id, lastscore DESC, id)
    WHERE state = 'WAITING' AND virtualized AND constraints = '{}';

-- A builder's history records its placement's changes (`builder set`).
ALTER TABLE builder_event DROP CONSTRAINT builder_event_kind_check;
ALTER TABLE builder_event ADD CONSTRAINT builder_event_kind_check
    CHECK (kind IN ('added', 'enabled', 'disabled', 'manual', 'automatic', 'failure', 'failed', 'removed', 'placement'));
