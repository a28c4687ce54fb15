-- migrate:up
-- Who must not be contacted where (optouts.py). One row per (customer, channel, address, kind):
-- `opted_out` (the customer asked: one-click unsubscribe, a mail to unsubscribe+token@, an SMS STOP)
-- or `invalid` (the address does not work: an SMTP 5xx to RCPT, a DSN `Action: failed`). A row is
-- active while `cleared_at` is null; a re-subscription by hand clears it (never deletes: audited
-- in contact_block_log with every other change).
CREATE TABLE contact_blocks (
    tenant_id    text        NOT NULL,
    customer_id  text        NOT NULL,
    channel      text        NOT NULL,
    address      text        NOT NULL,                -- e-mail lower-cased; a phone number as given
    kind         text        NOT NULL CHECK (kind IN ('opted_out', 'invalid')),
    reason       text        NOT NULL,                -- e.g. one_click, mailto, sms_stop, smtp_550, dsn_5.1.1
    source       text        NOT NULL,                -- what recorded it: http, inbound_smtp, dispatcher, sms
    delivery_id  text,                                -- the delivery that showed it, if any
    created_at   timestamptz NOT NULL DEFAULT now(),
    cleared_at   timestamptz,
    cleared_by   text,
    PRIMARY KEY (tenant_id, customer_id, channel, address, kind)
);
CREATE INDEX contact_blocks_active ON contact_blocks (tenant_id, customer_id, channel) WHERE cleared_at IS NULL;

CREATE TABLE contact_block_log (
    id           bigserial   PRIMARY KEY,
    tenant_id    text        NOT NULL,
    customer_id  text        NOT NULL,
    channel      text        NOT NULL,
    address      text        NOT NULL,
    kind         text        NOT NULL,
    action       text        NOT NULL CHECK (action IN ('blocked', 'cleared')),
    reason       text        NOT NULL,
    actor        text        NOT NULL,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX contact_block_log_customer ON contact_block_log (tenant_id, customer_id, id);

-- A tenant's channel preferences: the fallback order, and whether a reply pauses dunning.
CREATE TABLE channel_preferences (
    tenant_id       text        PRIMARY KEY,
    fallback        text[]      NOT NULL,
    pause_on_reply  boolean     NOT NULL DEFAULT false,
    pause_days      integer     NOT NULL DEFAULT 7 CHECK (pause_days BETWEEN 1 AND 90),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- A delivery made because another could not go (opted out, invalid, bounced): that other one.
ALTER TABLE deliveries ADD COLUMN fallback_of text;
-- What the provider reported after accepting it (a DSN's `bounced`; the SMS channel's statuses use it
-- too: IF NOT EXISTS, whichever migration comes first adds it).
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS provider_status text;

-- Replies to reminders and delivery status reports received on the inbound SMTP endpoint.
CREATE TABLE replies (
    reply_id      text        PRIMARY KEY,            -- rpl_<ulid>
    tenant_id     text        NOT NULL,
    delivery_id   text        NOT NULL,
    invoice_id    text        NOT NULL,
    customer_id   text,
    channel       text        NOT NULL,
    stage         text        NOT NULL,
    from_address  text        NOT NULL,
    subject       text        NOT NULL,
    text          text        NOT NULL,
    message_id    text,                               -- the reply's own Message-ID (dedupe)
    auto_reply    boolean     NOT NULL,               -- out-of-office and the like: recorded, not counted
    received_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX replies_once ON replies (tenant_id, message_id) WHERE message_id IS NOT NULL;
CREATE INDEX replies_invoice ON replies (tenant_id, invoice_id, received_at);
CREATE INDEX replies_tenant_recent ON replies (tenant_id, received_at);

CREATE TABLE delivery_reports (
    delivery_id   text        NOT NULL,
    recipient     text        NOT NULL,
    action        text        NOT NULL,               -- RFC 3464 Action: failed | delayed | delivered | ...
    status        text        NOT NULL,               -- RFC 3464 Status: 5.1.1, 4.4.7, ...
    diagnostic    text,
    received_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (delivery_id, recipient, action, status)
);

-- migrate:down
DROP TABLE delivery_reports;
DROP TABLE replies;
ALTER TABLE deliveries DROP COLUMN fallback_of;  -- provider_status stays: shared with the SMS channel
DROP TABLE channel_preferences;
DROP TABLE contact_block_log;
DROP TABLE contact_blocks;
