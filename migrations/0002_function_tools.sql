-- Function tools: tool calls with their outputs, server-side handlers, and one timeline
-- sequence shared by messages and run steps so that a thread's context can be replayed in order.

CREATE SEQUENCE timeline_seq;
SELECT setval('timeline_seq', greatest(
    (SELECT coalesce(max(seq), 0) FROM messages),
    (SELECT coalesce(max(seq), 0) FROM run_steps), 1));
ALTER TABLE messages ALTER COLUMN seq SET DEFAULT nextval('timeline_seq');
ALTER TABLE run_steps ALTER COLUMN seq SET DEFAULT nextval('timeline_seq');

-- One row per tool call the model made; the output is written once.
CREATE TABLE tool_calls (
    run_id       text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    id           text NOT NULL,
    step_id      text NOT NULL REFERENCES run_steps (id) ON DELETE CASCADE,
    thread_id    text NOT NULL,
    position     integer NOT NULL,
    type         text NOT NULL DEFAULT 'function',
    name         text NOT NULL,
    arguments    text NOT NULL,
    -- 'client': answered with submit_tool_outputs; 'server': by the tool-executor.
    handler      text NOT NULL,
    output       text,
    is_error     boolean NOT NULL DEFAULT false,
    completed_at timestamptz,
    PRIMARY KEY (run_id, id)
);
CREATE INDEX tool_calls_step ON tool_calls (step_id, position);

-- Function names a live tool-executor can run, refreshed by its heartbeat.
CREATE TABLE function_handlers (
    name         text PRIMARY KEY,
    kind         text NOT NULL,
    owner        text NOT NULL,
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- Usage of the model turn that produced a step (its `usage` once the step completes), and a
-- run's running total (its `usage` once it ends): the API shows usage only when final.
ALTER TABLE run_steps ADD COLUMN turn_usage jsonb;
ALTER TABLE runs ADD COLUMN spent jsonb NOT NULL
    DEFAULT '{"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}';
