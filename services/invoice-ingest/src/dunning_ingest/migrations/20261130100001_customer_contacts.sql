-- migrate:up
-- Customers as a resource (issue 8): the addresses copied on every reminder (the primary
-- accounts-payable address stays `email`), and a version: 1 at creation, +1 per change, carried by
-- the CustomerUpdated each change publishes (consumers ignore a version not newer than theirs).
ALTER TABLE customers
    ADD COLUMN cc       text[]  NOT NULL DEFAULT '{}' CHECK (cardinality(cc) <= 10),
    ADD COLUMN version  integer NOT NULL DEFAULT 1 CHECK (version >= 1);

-- No new index: GET /v1/customers lists the tenant's customers in the order of their external id,
-- the unique (tenant_id, external_id) index, and its `email` filter (case-blind) walks it too. An index
-- for another order or for lower(email) costs every customer an import writes one more index entry
-- (measured: 7 % of a single POST's PostgreSQL time each) for lookups made by hand. A customer's
-- open invoices and balances use invoices_tenant_customer.

-- migrate:down
ALTER TABLE customers DROP COLUMN version, DROP COLUMN cc;
