-- Traces and metrics (services/core/tracing.py, services/core/metrics.py).

-- The trace context (W3C traceparent) a run was created in: its turns continue that trace.
-- NULL when tracing is off.
ALTER TABLE runs ADD COLUMN trace text;
-- When the run was created, to the microsecond (created_at is whole seconds, as on the wire):
-- the run's total latency in threadbus_run_phase_seconds.
ALTER TABLE runs ADD COLUMN created_ts timestamptz NOT NULL DEFAULT now();
-- The trace context of the transaction that wrote the row: the relay sends it as the record's
-- traceparent header.
ALTER TABLE outbox ADD COLUMN trace text;
