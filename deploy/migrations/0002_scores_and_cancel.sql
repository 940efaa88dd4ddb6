-- buildd schema, version 2: the score without its age bonus (so the bonus can be kept current), and
-- when an abort was last sent for a cancelling build.

ALTER TABLE buildqueue ADD COLUMN basescore integer;
UPDATE buildqueue SET basescore = lastscore;
ALTER TABLE buildqueue ALTER COLUMN basescore SET NOT NULL;
ALTER TABLE buildqueue ADD COLUMN abort_sent_at timestamptz;
CREATE INDEX buildqueue_waiting_by_age ON buildqueue (date_queued) WHERE state = 'WAITING' AND NOT manual;
CREATE INDEX buildqueue_cancelling ON buildqueue (abort_sent_at) WHERE state = 'CANCELLING';
