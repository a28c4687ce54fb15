-- migrate:up
-- Policies a finance team runs its collections on (issue 10, decision 17): named, versioned policies,
-- the segment rules that choose them, the tenant's settings (calendar, send window, caps,
-- consolidation) and per-customer send windows, each change recorded with who made it.

-- A tenant's policies: policy_key '' is the tenant's default (PUT /v1/policy), any other key a named
-- policy (PUT /v1/policies/{policy_id}, the key is the id). Versions count per key. A deleted named
-- policy keeps its versions (invoices planned with one are re-planned with it), all marked deleted_at.
ALTER TABLE policies
    ADD COLUMN policy_key text NOT NULL DEFAULT '',
    ADD COLUMN changed_by text NOT NULL DEFAULT 'api',
    ADD COLUMN deleted_at timestamptz;
ALTER TABLE policies DROP CONSTRAINT policies_pkey;
ALTER TABLE policies ADD PRIMARY KEY (tenant_id, policy_key, version);

-- Segment rules, versioned: the latest version is in force.
CREATE TABLE segment_rules (
    tenant_id  text        NOT NULL,
    version    integer     NOT NULL CHECK (version >= 1),
    document   jsonb       NOT NULL,
    changed_by text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, version)
);

-- Tenant settings, versioned: the latest version is in force; none: every setting off (today's behaviour).
CREATE TABLE tenant_settings (
    tenant_id  text        NOT NULL,
    version    integer     NOT NULL CHECK (version >= 1),
    document   jsonb       NOT NULL,
    changed_by text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, version)
);

-- A customer's own send window (overrides the tenant's).
CREATE TABLE customer_settings (
    tenant_id   text        NOT NULL,
    customer_id text        NOT NULL,
    send_window jsonb       NOT NULL,
    changed_by  text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, customer_id)
);

-- What planning remembers: the policy's key (re-planning uses the same policy) and the segment rule
-- that chose it, with the reason in words.
ALTER TABLE invoices
    ADD COLUMN policy_key     text NOT NULL DEFAULT '',
    ADD COLUMN segment_rule   text,
    ADD COLUMN segment_reason text;
-- The payment-history condition of segment rules: a customer's last N settled invoices.
CREATE INDEX invoices_settled_by_customer ON invoices (tenant_id, customer_id, settled_at DESC) WHERE settled;

-- A replan job applies one policy (its key) to the open invoices planned with that policy.
ALTER TABLE replans ADD COLUMN policy_key text NOT NULL DEFAULT '';

-- migrate:down
ALTER TABLE replans DROP COLUMN policy_key;
DROP INDEX invoices_settled_by_customer;
ALTER TABLE invoices
    DROP COLUMN segment_reason,
    DROP COLUMN segment_rule,
    DROP COLUMN policy_key;
DROP TABLE customer_settings;
DROP TABLE tenant_settings;
DROP TABLE segment_rules;
DELETE FROM policies WHERE policy_key <> '';
ALTER TABLE policies DROP CONSTRAINT policies_pkey;
ALTER TABLE policies ADD PRIMARY KEY (tenant_id, version);
ALTER TABLE policies
    DROP COLUMN deleted_at,
    DROP COLUMN changed_by,
    DROP COLUMN policy_key;
