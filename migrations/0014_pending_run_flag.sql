-- Whether a thread has a pending run (messages folded in while a run was active), on the
-- thread's row. The statement that ends a run locks the thread's row, and a row locked
-- FOR UPDATE is read at its latest committed version, so that statement learns whether a run
-- is pending without a round trip of its own; before, every run's end deleted from
-- `pending_runs`, where nearly never anything was. `runs.fold` sets the flag in the statement
-- that records the pending run, `runs.take_pending` clears it in the one that removes it.
ALTER TABLE threads ADD COLUMN pending_run boolean NOT NULL DEFAULT false;
UPDATE threads SET pending_run = true WHERE id IN (SELECT thread_id FROM pending_runs);
