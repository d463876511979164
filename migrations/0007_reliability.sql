-- Reliability: which service processes are alive and consuming, who started each server-side
-- tool call, and indexes for the retention that prunes the bookkeeping tables.

-- Every service process heartbeats here. `consuming` is true once each of its Kafka consumers
-- has joined its group, so a run created now starts at once (the API's /readyz reads it);
-- a tool-executor whose row went stale is dead, and a call it started may be started again.
CREATE TABLE workers (
    owner        text PRIMARY KEY,
    service      text NOT NULL,
    consuming    boolean NOT NULL DEFAULT false,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workers_service ON workers (service, heartbeat_at);

-- A server-side call is started once: the executor claims it before running the handler.
ALTER TABLE tool_calls ADD COLUMN started_by text, ADD COLUMN started_at timestamptz;

CREATE INDEX processed_events_age ON processed_events (processed_at);
CREATE INDEX archive_age ON archive (archived_at);
CREATE INDEX outbox_dead_age ON outbox_dead (failed_at);
ALTER TABLE run_streams ADD COLUMN recorded_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX run_streams_age ON run_streams (recorded_at);
