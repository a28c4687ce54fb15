-- migrate:up
-- A delivery or notice written wakes the dispatcher and the notice workers (due_wakeup.py) at the
-- writer's commit, instead of their polling the tables 20 times a second each while nothing is due.
-- One NOTIFY per statement (a batch of a thousand deliveries wakes them once; PostgreSQL also folds
-- the same notification repeated within a transaction into one).
CREATE FUNCTION notifier_due_wakeup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('notifier_due', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER deliveries_due_wakeup AFTER INSERT ON deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION notifier_due_wakeup();
CREATE TRIGGER notices_due_wakeup AFTER INSERT ON notices
    FOR EACH STATEMENT EXECUTE FUNCTION notifier_due_wakeup();

-- migrate:down
DROP TRIGGER notices_due_wakeup ON notices;
DROP TRIGGER deliveries_due_wakeup ON deliveries;
DROP FUNCTION notifier_due_wakeup();
