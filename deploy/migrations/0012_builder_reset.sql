-- buildd schema, version 12: builder reset (Launchpad's clean status and reset protocols 1.1 and 2.0).
--
-- A virtualized builder with a reset method is DIRTY after every build and gets no job until it is CLEAN
-- again: a master runs its reset (a command, a POST to a URL, or `clean` sent to its agent, which runs its own
-- reset_command), CLEANING until `reset_deadline`, past
-- which the reset counts as a builder failure. `reset_attempt` fences a reset's outcome against a later
-- one. The rules are BuilddCore's `BuilderReset`; the idle condition of the claims (`clean_status =
-- 'CLEAN'`) is `BuilderAvailability.sqlCondition`, which a test checks against the core.
ALTER TABLE builder
    ADD COLUMN reset_method    text NOT NULL DEFAULT 'none' CHECK (reset_method IN ('none', 'command', 'url', 'agent')),
    ADD COLUMN reset_target    text CHECK (octet_length(reset_target) <= 2048),
    ADD COLUMN reset_protocol  text NOT NULL DEFAULT '1.1' CHECK (reset_protocol IN ('1.1', '2.0')),
    ADD COLUMN reset_timeout   integer NOT NULL DEFAULT 300 CHECK (reset_timeout BETWEEN 1 AND 86400),
    ADD COLUMN reset_deadline  timestamptz,
    ADD COLUMN reset_attempt   integer NOT NULL DEFAULT 0;

-- The reset pass reads the builders that are not CLEAN and have a reset.
CREATE INDEX builder_awaiting_reset ON builder (id) WHERE clean_status <> 'CLEAN' AND reset_method <> 'none';

-- A builder's history records its resets (started, CLEAN) and changes of its reset (`builder set`).
ALTER TABLE builder_event DROP CONSTRAINT builder_event_kind_check;
ALTER TABLE builder_event ADD CONSTRAINT builder_event_kind_check
    CHECK (kind IN ('added', 'enabled', 'disabled', 'manual', 'automatic', 'failure', 'failed', 'removed', 'placement',
                    'reset'));
