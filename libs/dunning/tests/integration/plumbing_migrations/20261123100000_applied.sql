-- migrate:up
CREATE TABLE applied (event_id uuid PRIMARY KEY, invoice_id text NOT NULL, applied_at timestamptz DEFAULT now());
-- migrate:down
DROP TABLE applied;
