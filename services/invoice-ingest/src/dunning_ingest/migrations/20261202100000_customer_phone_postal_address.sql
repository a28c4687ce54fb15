-- migrate:up
-- A customer's phone (E.164, checked with libphonenumber before it is written: SMS and calls) and
-- postal address (letters: {name, lines[1..4], postal_code, city, region, country}). NULL: not given
-- (the events omit them).
ALTER TABLE customers
    ADD COLUMN phone          text CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    ADD COLUMN postal_address jsonb CHECK (jsonb_typeof(postal_address) = 'object'
                                           AND jsonb_typeof(postal_address -> 'lines') = 'array'
                                           AND postal_address ? 'city' AND postal_address ? 'country');

-- migrate:down
ALTER TABLE customers DROP COLUMN postal_address, DROP COLUMN phone;
