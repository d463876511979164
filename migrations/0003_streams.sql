-- Streaming: where a run's events start on threadbus.events ("<partition>-<offset>" of its
-- thread.run.created), so that a stream can be replayed from the beginning.
ALTER TABLE runs ADD COLUMN stream_start text;
