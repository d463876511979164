-- Threadbus schema, version 1: the Assistants objects, the run engine's bookkeeping,
-- the outbox, consumer idempotency and the event archive.
-- Column names equal the API's field names, so a row renders as its wire object.

CREATE EXTENSION IF NOT EXISTS vector;

-- Whole Unix seconds, as every Assistants timestamp.
CREATE FUNCTION epoch_now() RETURNS bigint LANGUAGE sql STABLE AS
$$ SELECT floor(extract(epoch FROM now()))::bigint $$;

CREATE TABLE assistants (
    id               text PRIMARY KEY,
    seq              bigserial UNIQUE,
    created_at       bigint NOT NULL DEFAULT epoch_now(),
    name             text,
    description      text,
    model            text NOT NULL,
    instructions     text,
    tools            jsonb NOT NULL DEFAULT '[]',
    tool_resources   jsonb NOT NULL DEFAULT '{}',
    metadata         jsonb NOT NULL DEFAULT '{}',
    temperature      double precision,
    top_p            double precision,
    response_format  jsonb NOT NULL DEFAULT '"auto"',
    reasoning_effort text
);

CREATE TABLE threads (
    id             text PRIMARY KEY,
    seq            bigserial UNIQUE,
    created_at     bigint NOT NULL DEFAULT epoch_now(),
    metadata       jsonb NOT NULL DEFAULT '{}',
    tool_resources jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE messages (
    id                 text PRIMARY KEY,
    seq                bigserial UNIQUE,
    thread_id          text NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    created_at         bigint NOT NULL DEFAULT epoch_now(),
    status             text NOT NULL,
    incomplete_details jsonb,
    completed_at       bigint,
    incomplete_at      bigint,
    role               text NOT NULL,
    content            jsonb NOT NULL DEFAULT '[]',
    assistant_id       text,
    run_id             text,
    attachments        jsonb NOT NULL DEFAULT '[]',
    metadata           jsonb NOT NULL DEFAULT '{}',
    -- The inbound event that brought this message in (Kafka front door), for idempotency.
    source_event_id    text UNIQUE
);
CREATE INDEX messages_thread_seq ON messages (thread_id, seq);
CREATE INDEX messages_run ON messages (run_id) WHERE run_id IS NOT NULL;

CREATE TABLE runs (
    id                    text PRIMARY KEY,
    seq                   bigserial UNIQUE,
    thread_id             text NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    assistant_id          text NOT NULL,
    created_at            bigint NOT NULL DEFAULT epoch_now(),
    status                text NOT NULL,
    required_action       jsonb,
    last_error            jsonb,
    expires_at            bigint,
    started_at            bigint,
    cancelled_at          bigint,
    failed_at             bigint,
    completed_at          bigint,
    incomplete_details    jsonb,
    model                 text NOT NULL,
    instructions          text NOT NULL DEFAULT '',
    tools                 jsonb NOT NULL DEFAULT '[]',
    metadata              jsonb NOT NULL DEFAULT '{}',
    usage                 jsonb,
    temperature           double precision,
    top_p                 double precision,
    max_prompt_tokens     integer,
    max_completion_tokens integer,
    truncation_strategy   jsonb NOT NULL DEFAULT '{"type": "auto", "last_messages": null}',
    tool_choice           jsonb NOT NULL DEFAULT '"auto"',
    parallel_tool_calls   boolean NOT NULL DEFAULT true,
    response_format       jsonb NOT NULL DEFAULT '"auto"',
    reasoning_effort      text,
    -- Engine bookkeeping, never rendered.
    cause_event_id        text,
    lease_owner           text,
    lease_token           uuid,
    lease_expires_at      timestamptz,
    attempts              integer NOT NULL DEFAULT 0,
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX runs_thread_seq ON runs (thread_id, seq);
-- One active run per thread, as in the Assistants API.
CREATE UNIQUE INDEX runs_one_active_per_thread ON runs (thread_id)
    WHERE status IN ('queued', 'in_progress', 'requires_action', 'cancelling');
CREATE INDEX runs_active ON runs (status, lease_expires_at)
    WHERE status IN ('queued', 'in_progress', 'requires_action', 'cancelling');

CREATE TABLE run_steps (
    id            text PRIMARY KEY,
    seq           bigserial UNIQUE,
    run_id        text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    thread_id     text NOT NULL,
    assistant_id  text NOT NULL,
    step_index    integer NOT NULL,
    created_at    bigint NOT NULL DEFAULT epoch_now(),
    type          text NOT NULL,
    status        text NOT NULL,
    step_details  jsonb NOT NULL,
    last_error    jsonb,
    expired_at    bigint,
    cancelled_at  bigint,
    failed_at     bigint,
    completed_at  bigint,
    metadata      jsonb NOT NULL DEFAULT '{}',
    usage         jsonb,
    UNIQUE (run_id, step_index)
);

-- Inbound user messages that arrived while their thread had an active run: folded into the
-- next run, which starts when the active one ends.
CREATE TABLE pending_runs (
    thread_id      text PRIMARY KEY REFERENCES threads (id) ON DELETE CASCADE,
    assistant_id   text NOT NULL,
    options        jsonb NOT NULL DEFAULT '{}',
    cause_event_id text,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- Transactional outbox: rows are published to Kafka in id order by the relay, then deleted.
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    topic      text NOT NULL,
    key        text,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN PERFORM pg_notify('threadbus_outbox', ''); RETURN NULL; END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- Consumer idempotency: one row per (consumer, event) that has had its effect.
CREATE TABLE processed_events (
    consumer     text NOT NULL,
    event_id     text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- The message-archiver's append-only record of every outbound event, per thread in order.
CREATE TABLE archive (
    seq         bigserial PRIMARY KEY,
    thread_id   text NOT NULL,
    event_id    text NOT NULL UNIQUE,
    type        text NOT NULL,
    event       jsonb NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX archive_thread_seq ON archive (thread_id, seq);
