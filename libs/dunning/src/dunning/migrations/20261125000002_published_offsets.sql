-- migrate:up
-- For relays that record what they published (reconciliation's, for the payments watermark): per
-- topic partition, one past the highest offset the broker acknowledged for a row of this outbox,
-- written in the transaction that deletes the rows. Read from the produce acknowledgements, not
-- from a ListOffsets request (Tansu 0.6 answers that with the last batch's first offset + 1).
CREATE TABLE published_offsets (
    topic        text    NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint  NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

-- migrate:down
DROP TABLE published_offsets;
