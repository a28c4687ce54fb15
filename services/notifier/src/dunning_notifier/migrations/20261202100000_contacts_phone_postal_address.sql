-- migrate:up
-- The customer's phone (E.164: SMS and calls) and postal address (letters: {name, lines, postal_code,
-- city, region, country}) as CustomerUpdated carries them; NULL: the customer has none.
ALTER TABLE contacts
    ADD COLUMN phone          text,
    ADD COLUMN postal_address jsonb;

-- migrate:down
ALTER TABLE contacts DROP COLUMN postal_address, DROP COLUMN phone;
