-- migrate:up
-- Letters (letters.py): the PDF of each letter delivery exactly as it went to the print-and-mail
-- provider, written before the request (a retry renders the same bytes: the letter's date is the
-- stage's), with the provider's letter id once it accepted it. `delivery_id` is a delivery's or a
-- consolidated notice's (both dlv_...). GET /v1/deliveries/{id}/letter.pdf serves `pdf`.
CREATE TABLE letters (
    delivery_id             text PRIMARY KEY,
    tenant_id               text        NOT NULL,
    paper                   text        NOT NULL CHECK (paper IN ('A4', 'LETTER')),
    pdf                     bytea       NOT NULL,
    pdf_sha256              text        NOT NULL,
    provider_letter_id      text UNIQUE,           -- ltr_...: set once the provider accepted it
    expected_delivery_date  date,
    rendered_at             timestamptz NOT NULL DEFAULT now(),
    accepted_at             timestamptz
);
CREATE INDEX letters_tenant ON letters (tenant_id, delivery_id);

-- The provider's tracking events of a letter (letter.mailed, letter.in_transit, letter.delivered,
-- letter.returned_to_sender, ...), each once: the provider's event id is the key (its retries dedupe).
CREATE TABLE letter_events (
    event_id      text PRIMARY KEY,               -- evt_...
    delivery_id   text        NOT NULL REFERENCES letters ON DELETE CASCADE,
    event_type    text        NOT NULL,
    occurred_at   timestamptz NOT NULL,           -- the event's date_created
    received_at   timestamptz NOT NULL DEFAULT now(),
    body          jsonb       NOT NULL
);
CREATE INDEX letter_events_delivery ON letter_events (delivery_id, occurred_at);

-- migrate:down
DROP TABLE letter_events;
DROP TABLE letters;
