-- migrate:up
-- The payments gate (see repository._FIRE_DUE): a stage fires only when reconciliation's
-- watermark covers its time and the scheduler has applied the payments topic up to the offsets the
-- watermark names.

-- Watermark statements as received (dunning.watermarks.v1). Each is true forever once made; the
-- firing query uses the best ones the scheduler has caught up with, and older ones are pruned.
CREATE TABLE payment_watermarks (
    statement_id      uuid PRIMARY KEY,
    watermark         timestamptz NOT NULL,
    payments_offsets  jsonb       NOT NULL,   -- {"<partition>": end offset} of dunning.payments.v1
    invoice_positions jsonb       NOT NULL,   -- {"<partition>": offset} reconciliation has applied
    computed_at       timestamptz NOT NULL,
    received_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_watermarks_watermark ON payment_watermarks (watermark DESC);

-- Where the timer's InvoiceIssued was read: the stage also waits until reconciliation has applied
-- that invoice (a payment that arrived before its invoice is matched then). Null: planned without
-- a position (not from the topic); such a timer waits for the watermark only.
ALTER TABLE timers ADD COLUMN gate_partition integer, ADD COLUMN gate_offset bigint;

-- migrate:down
ALTER TABLE timers DROP COLUMN gate_partition, DROP COLUMN gate_offset;
DROP TABLE payment_watermarks;
