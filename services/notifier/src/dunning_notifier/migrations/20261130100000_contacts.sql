-- migrate:up
-- The customers' current contact data, from CustomerUpdated (dunning.customers.v1). A row exists
-- only once a customer has been updated, so it is always newer than the customer snapshot a
-- StageEscalated carries: the dispatcher sends to it when there is one, else to the snapshot.
-- Version-guarded: an event whose version is not newer than the row's changes nothing.
CREATE TABLE contacts (
    tenant_id    text        NOT NULL,
    customer_id  text        NOT NULL,
    name         text        NOT NULL,
    email        text        NOT NULL,                 -- the primary accounts-payable address (To)
    cc           text[]      NOT NULL DEFAULT '{}',    -- copied on every e-mail reminder (Cc)
    locale       text        NOT NULL,
    timezone     text        NOT NULL,
    version      integer     NOT NULL,                 -- the customer's version this row holds
    updated_at   timestamptz NOT NULL,                 -- when invoice-ingest made the change
    PRIMARY KEY (tenant_id, customer_id)
);

-- Which customer a delivery is for (the dispatcher's join to contacts at claim time), and the
-- addresses its last attempt actually used: `recipient` (To) as before, `cc` beside it.
ALTER TABLE deliveries
    ADD COLUMN customer_id text,
    ADD COLUMN cc text[] NOT NULL DEFAULT '{}';
-- Deliveries still to be sent get their customer from the payload; sent and failed ones keep null.
UPDATE deliveries SET customer_id = payload -> 'customer' ->> 'customer_id'
 WHERE state IN ('pending', 'sending');

-- migrate:down
ALTER TABLE deliveries DROP COLUMN cc, DROP COLUMN customer_id;
DROP TABLE contacts;
