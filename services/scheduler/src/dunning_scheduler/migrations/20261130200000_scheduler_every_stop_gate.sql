-- migrate:up
-- Every stop under the firing gate (issue 9, decision 16): the gate reads the watermark statements
-- of every acknowledging service, not only reconciliation's. The statements keep one table:
-- `source` names the service that made it (reconciliation: PaymentsWatermark, with its
-- payments_offsets and invoice_positions; invoice-ingest: StopsWatermark, with `offsets`).
ALTER TABLE payment_watermarks RENAME TO watermark_statements;
ALTER TABLE watermark_statements RENAME CONSTRAINT payment_watermarks_pkey TO watermark_statements_pkey;
ALTER INDEX payment_watermarks_watermark RENAME TO watermark_statements_watermark;
ALTER TABLE watermark_statements
    ADD COLUMN source  text  NOT NULL DEFAULT 'reconciliation',
    -- {"<topic>": {"<partition>": end offset}}: every stop the statement covers is below these
    ADD COLUMN offsets jsonb NOT NULL DEFAULT '{}',
    ALTER COLUMN payments_offsets SET DEFAULT '{}',
    ALTER COLUMN invoice_positions SET DEFAULT '{}';
-- The gate reads each source's statements newest watermark first and stops at the first usable one.
CREATE INDEX watermark_statements_best ON watermark_statements (source, watermark DESC, received_at DESC);

-- migrate:down
DROP INDEX watermark_statements_best;
DELETE FROM watermark_statements WHERE source <> 'reconciliation';
ALTER TABLE watermark_statements
    DROP COLUMN source,
    DROP COLUMN offsets,
    ALTER COLUMN payments_offsets DROP DEFAULT,
    ALTER COLUMN invoice_positions DROP DEFAULT;
ALTER INDEX watermark_statements_watermark RENAME TO payment_watermarks_watermark;
ALTER TABLE watermark_statements RENAME CONSTRAINT watermark_statements_pkey TO payment_watermarks_pkey;
ALTER TABLE watermark_statements RENAME TO payment_watermarks;
