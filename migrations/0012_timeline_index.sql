-- The run-poller reads a thread's completed tool steps at every turn (the model's context).
-- run_steps had no index by thread, so that read scanned every step of every thread: a cost
-- that grew with the whole table, on every turn.
CREATE INDEX run_steps_thread_tool_turns ON run_steps (thread_id, seq)
    WHERE type = 'tool_calls' AND status = 'completed';
