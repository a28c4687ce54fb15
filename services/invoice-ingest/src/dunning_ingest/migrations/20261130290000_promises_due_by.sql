-- migrate:up
-- A promise to pay by an instant ("by 17:00 on Friday", issue 9): `due_by` is that instant, and
-- promised_date its day in the customer's time zone; NULL: the promise named a day (by its end).
ALTER TABLE promises ADD COLUMN due_by timestamptz;

-- migrate:down
ALTER TABLE promises DROP COLUMN due_by;
