-- migrate:up
-- The SMS channel (sms.py): what each delivery went as (its encoding and segments, shown by the
-- deliveries API) and what Twilio's status callbacks said of it since (provider_status, the latest of
-- queued < sending < sent < delivered | undelivered | failed, and when).
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS provider_status text;
ALTER TABLE deliveries
    ADD COLUMN provider_status_at timestamptz,
    ADD COLUMN sms_encoding       text CHECK (sms_encoding IN ('GSM-7', 'UCS-2')),
    ADD COLUMN sms_segments       integer CHECK (sms_segments > 0);

-- One row per message Twilio accepted (an attempt that went out in doubt and was sent again has two).
CREATE TABLE sms_messages (
    message_sid  text        COLLATE "C" PRIMARY KEY,       -- SM...
    delivery_id  text        NOT NULL,
    tenant_id    text        NOT NULL,
    to_number    text        NOT NULL,                      -- E.164
    encoding     text        NOT NULL,
    segments     integer     NOT NULL,
    truncated    boolean     NOT NULL DEFAULT false,
    status       text        NOT NULL,                      -- the latest status Twilio reported
    error_code   integer,                                   -- Twilio's ErrorCode of undelivered / failed
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sms_messages_delivery ON sms_messages (delivery_id);
CREATE INDEX sms_messages_to ON sms_messages (to_number);

-- Every status callback, once per (message, status): the history behind provider_status.
CREATE TABLE sms_status_events (
    message_sid  text        COLLATE "C" NOT NULL,
    status       text        NOT NULL,
    error_code   integer,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_sid, status)
);

-- migrate:down
DROP TABLE sms_status_events;
DROP TABLE sms_messages;
ALTER TABLE deliveries DROP COLUMN sms_segments, DROP COLUMN sms_encoding, DROP COLUMN provider_status_at;
