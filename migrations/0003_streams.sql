-- Streaming: where a run's events start on threadbus.events ("<partition>-<offset>" of its
-- thread.run.created), so that a stream can be replayed from the beginning. A table of its
-- own, so that the relay never locks run rows (a worker claiming the run would wait on it).
CREATE TABLE run_streams (
    run_id text PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    start  text NOT NULL
);

-- Outbox rows the broker refused for good (too large): kept for an operator, out of the way.
CREATE TABLE outbox_dead (
    id        bigint PRIMARY KEY,
    topic     text NOT NULL,
    key       text,
    payload   jsonb NOT NULL,
    reason    text NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);
