-- Inbound idempotency follows CloudEvents: an event's identity is `source` and `id` together,
-- so two producers that both number their events from 1 do not drop each other's events.
-- Rows written before this migration keep source '' (a redelivery of such an event now,
-- with its source set, is taken as new; the retention window bounds how long that matters).

ALTER TABLE processed_events ADD COLUMN source text NOT NULL DEFAULT '';
ALTER TABLE processed_events DROP CONSTRAINT processed_events_pkey;
ALTER TABLE processed_events ADD PRIMARY KEY (consumer, source, event_id);

ALTER TABLE messages ADD COLUMN source_event_source text;
ALTER TABLE messages DROP CONSTRAINT messages_source_event_id_key;
CREATE UNIQUE INDEX messages_source_event ON messages (source_event_source, source_event_id)
    WHERE source_event_id IS NOT NULL;
