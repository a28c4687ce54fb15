-- migrate:up
-- Firing rules and charges (issue 10, decision 17): reference rates for late-payment interest, the
-- contacts a customer received (contact caps, quiet period), the charges assessed per (invoice, stage),
-- waivers, and the consolidated notice a fired timer went in.

-- Reference rates, percent per year, each in force from valid_from until the next period's.
-- tenant_id '' holds the rates every tenant shares (seeded below); a tenant's own periods
-- (PUT /v1/reference-rates/{name}) add to them and win on the same valid_from.
CREATE TABLE reference_rates (
    tenant_id  text          NOT NULL DEFAULT '',
    name       text          NOT NULL,
    valid_from date          NOT NULL,
    rate       numeric(9, 4) NOT NULL,
    changed_by text          NOT NULL DEFAULT 'migration',
    created_at timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name, valid_from)
);

-- The ECB's main refinancing operations rate (fixed rate tenders; the minimum bid rate of variable
-- rate tenders from 2000-06-28 to 2008-10-14), each from the day the decision took effect. Source:
-- ECB, "Key ECB interest rates",
-- https://www.ecb.europa.eu/stats/policy_and_exchange_rates/key_ecb_interest_rates/html/index.en.html
-- (the rate in force on 1 January / 1 July is also published in the Official Journal, C series, as the
-- "interest rate applied by the ECB to its main refinancing operations"). Decisions after 2025-06-11
-- (the rate was held at 2.15 since) are added through the API: PUT /v1/reference-rates/ecb_main_refinancing.
INSERT INTO reference_rates (name, valid_from, rate) VALUES
    ('ecb_main_refinancing', '1999-01-01', 3.00),
    ('ecb_main_refinancing', '1999-04-09', 2.50),
    ('ecb_main_refinancing', '1999-11-05', 3.00),
    ('ecb_main_refinancing', '2000-02-04', 3.25),
    ('ecb_main_refinancing', '2000-03-17', 3.50),
    ('ecb_main_refinancing', '2000-04-28', 3.75),
    ('ecb_main_refinancing', '2000-06-09', 4.25),
    ('ecb_main_refinancing', '2000-09-06', 4.50),
    ('ecb_main_refinancing', '2000-10-11', 4.75),
    ('ecb_main_refinancing', '2001-05-11', 4.50),
    ('ecb_main_refinancing', '2001-08-31', 4.25),
    ('ecb_main_refinancing', '2001-09-18', 3.75),
    ('ecb_main_refinancing', '2001-11-09', 3.25),
    ('ecb_main_refinancing', '2002-12-06', 2.75),
    ('ecb_main_refinancing', '2003-03-07', 2.50),
    ('ecb_main_refinancing', '2003-06-06', 2.00),
    ('ecb_main_refinancing', '2005-12-06', 2.25),
    ('ecb_main_refinancing', '2006-03-08', 2.50),
    ('ecb_main_refinancing', '2006-06-15', 2.75),
    ('ecb_main_refinancing', '2006-08-09', 3.00),
    ('ecb_main_refinancing', '2006-10-11', 3.25),
    ('ecb_main_refinancing', '2006-12-13', 3.50),
    ('ecb_main_refinancing', '2007-03-14', 3.75),
    ('ecb_main_refinancing', '2007-06-13', 4.00),
    ('ecb_main_refinancing', '2008-07-09', 4.25),
    ('ecb_main_refinancing', '2008-10-15', 3.75),
    ('ecb_main_refinancing', '2008-11-12', 3.25),
    ('ecb_main_refinancing', '2008-12-10', 2.50),
    ('ecb_main_refinancing', '2009-01-21', 2.00),
    ('ecb_main_refinancing', '2009-03-11', 1.50),
    ('ecb_main_refinancing', '2009-04-08', 1.25),
    ('ecb_main_refinancing', '2009-05-13', 1.00),
    ('ecb_main_refinancing', '2011-04-13', 1.25),
    ('ecb_main_refinancing', '2011-07-13', 1.50),
    ('ecb_main_refinancing', '2011-11-09', 1.25),
    ('ecb_main_refinancing', '2011-12-14', 1.00),
    ('ecb_main_refinancing', '2012-07-11', 0.75),
    ('ecb_main_refinancing', '2013-05-08', 0.50),
    ('ecb_main_refinancing', '2013-11-13', 0.25),
    ('ecb_main_refinancing', '2014-06-11', 0.15),
    ('ecb_main_refinancing', '2014-09-10', 0.05),
    ('ecb_main_refinancing', '2016-03-16', 0.00),
    ('ecb_main_refinancing', '2022-07-27', 0.50),
    ('ecb_main_refinancing', '2022-09-14', 1.25),
    ('ecb_main_refinancing', '2022-11-02', 2.00),
    ('ecb_main_refinancing', '2022-12-21', 2.50),
    ('ecb_main_refinancing', '2023-02-08', 3.00),
    ('ecb_main_refinancing', '2023-03-22', 3.50),
    ('ecb_main_refinancing', '2023-05-10', 3.75),
    ('ecb_main_refinancing', '2023-06-21', 4.00),
    ('ecb_main_refinancing', '2023-08-02', 4.25),
    ('ecb_main_refinancing', '2023-09-20', 4.50),
    ('ecb_main_refinancing', '2024-06-12', 4.25),
    ('ecb_main_refinancing', '2024-09-18', 3.65),
    ('ecb_main_refinancing', '2024-10-23', 3.40),
    ('ecb_main_refinancing', '2024-12-18', 3.15),
    ('ecb_main_refinancing', '2025-02-05', 2.90),
    ('ecb_main_refinancing', '2025-03-12', 2.65),
    ('ecb_main_refinancing', '2025-04-23', 2.40),
    ('ecb_main_refinancing', '2025-06-11', 2.15);

-- Every moment a customer was contacted (one per fired notice or per fired (invoice, stage), all
-- its channels together): the contact cap and the quiet period count these.
CREATE TABLE customer_contacts (
    contact_id   text PRIMARY KEY,
    tenant_id    text        NOT NULL,
    customer_id  text        NOT NULL,
    contacted_at timestamptz NOT NULL,
    notice_id    text,
    stage_ids    text[]      NOT NULL
);
CREATE INDEX customer_contacts_recent ON customer_contacts (tenant_id, customer_id, contacted_at DESC);

-- Late fees and interest assessed, once per (invoice, stage); totals are the invoice's so far.
CREATE TABLE invoice_charges (
    invoice_id      text           NOT NULL,
    stage           text           NOT NULL,
    stage_id        text           NOT NULL,
    tenant_id       text           NOT NULL,
    currency        text           NOT NULL,
    late_fee        numeric(20, 4) NOT NULL,
    interest        numeric(20, 4) NOT NULL,
    interest_to     date,
    total_late_fees numeric(20, 4) NOT NULL,
    total_interest  numeric(20, 4) NOT NULL,
    assessed_at     timestamptz    NOT NULL,
    PRIMARY KEY (invoice_id, stage)
);

-- A waiver: the invoice's charges claimed so far are withdrawn and no more are charged.
CREATE TABLE charge_waivers (
    invoice_id text PRIMARY KEY,
    tenant_id  text           NOT NULL,
    currency   text           NOT NULL,
    late_fees  numeric(20, 4) NOT NULL,
    interest   numeric(20, 4) NOT NULL,
    reason     text           NOT NULL,
    waived_by  text           NOT NULL,
    waived_at  timestamptz    NOT NULL
);

-- The consolidated notice a fired timer went in (NULL: sent on its own).
ALTER TABLE timers ADD COLUMN notice_id text;

-- migrate:down
ALTER TABLE timers DROP COLUMN notice_id;
DROP TABLE charge_waivers;
DROP TABLE invoice_charges;
DROP TABLE customer_contacts;
DROP TABLE reference_rates;
