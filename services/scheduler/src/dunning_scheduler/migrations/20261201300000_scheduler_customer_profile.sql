-- migrate:up
-- What segments and calendars read of a customer besides its contact data (CustomerUpdated's
-- country, subdivision, tags, attributes; nulls left out). NULL: stored before this column existed.
ALTER TABLE customers ADD COLUMN profile jsonb;

-- migrate:down
ALTER TABLE customers DROP COLUMN profile;
