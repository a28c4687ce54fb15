-- migrate:up
-- In-doubt accounting. An attempt is "in doubt" when its outcome is unknown: the lease of a
-- `sending` row ran out and the row was taken back (the worker died or stalled, maybe after the
-- SMTP server had accepted the message), or the connection timed out or dropped after the message
-- had been handed over (DATA). Either way the next attempt may deliver a second copy, with the same
-- Message-ID. Counting them here makes every duplicate explainable: a delivery whose customer got
-- two copies has in_doubt_attempts >= 1 (the converse need not hold: the process may have died
-- before it sent anything).
ALTER TABLE deliveries
    ADD COLUMN in_doubt_attempts integer NOT NULL DEFAULT 0,  -- attempts whose outcome is unknown
    ADD COLUMN last_in_doubt_at timestamptz;                  -- when the last one was taken back
-- The (few) in-doubt deliveries, for support and for the /metrics totals without a full scan.
CREATE INDEX deliveries_in_doubt ON deliveries (last_in_doubt_at) WHERE in_doubt_attempts > 0;

-- migrate:down
DROP INDEX deliveries_in_doubt;
ALTER TABLE deliveries DROP COLUMN last_in_doubt_at, DROP COLUMN in_doubt_attempts;
