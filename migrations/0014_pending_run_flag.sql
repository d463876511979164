-- Whether a thread has a pending run (messages folded in while a run was active), on the
-- thread's row. The statement that ends a run locks the thread's row, and a row locked
-- FOR UPDATE is read at its latest committed version, so that statement learns whether a run
-- is pending without a round trip of its own; before, every run's end deleted from
-- `pending_runs`, where nearly never anything was.
--
-- Triggers keep the flag, not the code that writes `pending_runs`: a run-starter or run-poller
-- of the previous release, still running during a rolling update, writes the table as it did
-- and the flag follows. The writers hold the thread's lock (the intake's fold, the run's end),
-- so the flag changes under it. The trigger is created before the backfill, in one
-- transaction: a fold (which locks its thread first) waits on this migration's lock on
-- `threads`, and then its insert fires the trigger.
ALTER TABLE threads ADD COLUMN pending_run boolean NOT NULL DEFAULT false;

CREATE FUNCTION pending_run_flag() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN
    IF TG_OP = 'DELETE' THEN
        UPDATE threads SET pending_run = false WHERE id = OLD.thread_id AND pending_run;
    ELSE  -- an insert (a fold that finds a row updates it, and the flag is already set)
        UPDATE threads SET pending_run = true WHERE id = NEW.thread_id AND NOT pending_run;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER pending_run_flag AFTER INSERT OR DELETE ON pending_runs
    FOR EACH ROW EXECUTE FUNCTION pending_run_flag();

UPDATE threads SET pending_run = true WHERE id IN (SELECT thread_id FROM pending_runs);
