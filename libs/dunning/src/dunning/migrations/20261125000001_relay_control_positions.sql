-- migrate:up
-- Operator control of the outbox relay: while `paused`, every relay of this service (all replicas)
-- leaves the outbox alone and rows simply wait. `python -m dunning.admin relay pause|resume`.
CREATE TABLE relay_control (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    paused      boolean     NOT NULL DEFAULT false,
    changed_at  timestamptz NOT NULL DEFAULT now(),
    changed_by  text
);
INSERT INTO relay_control DEFAULT VALUES;

-- How far this service's consumers have applied each partition, written in the transaction that
-- applies the messages (so it never runs ahead of the state). Only for consumers that publish
-- their progress (reconciliation, in its payments watermark); see dunning.consumer.
CREATE TABLE consumer_positions (
    topic        text    NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint  NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

-- migrate:down
DROP TABLE consumer_positions;
DROP TABLE relay_control;
