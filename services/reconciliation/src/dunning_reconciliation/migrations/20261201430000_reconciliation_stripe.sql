-- migrate:up
-- More of Stripe (issue 11): the other Stripe ids of a payment's money, by which a refund or a
-- dispute names it (an invoice's PaymentIntent and Charge, an intent's Charge), and the refunds
-- Stripe reported, so that one refund seen through several events is counted once.

CREATE TABLE stripe_links (
    tenant_id   text        NOT NULL,
    object_id   text        NOT NULL,  -- pi_..., ch_..., in_...
    payment_id  text        NOT NULL REFERENCES payments (payment_id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, object_id)
);

-- A refund (kind 'refund', key re_...) with its amount and last status, or a charge's cumulative
-- amount refunded (kind 'charge', key ch_...: the largest seen), which also counts refunds no event
-- listed. What Stripe refunded of a payment is the larger of the two sums (succeeded refunds).
CREATE TABLE stripe_refunds (
    tenant_id   text        NOT NULL,
    refund_key  text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('refund', 'charge')),
    payment_id  text        NOT NULL REFERENCES payments (payment_id),
    currency    text        NOT NULL,
    amount      numeric     NOT NULL CHECK (amount >= 0),
    status      text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, refund_key)
);
CREATE INDEX stripe_refunds_payment ON stripe_refunds (tenant_id, payment_id);

-- migrate:down
DROP TABLE stripe_refunds;
DROP TABLE stripe_links;
