-- A commit's notification now says which threads' events it wrote: one `<thread id> <outbox id>`
-- per thread (the transaction's highest row of that thread on threadbus.events), and '' for
-- rows of other topics. The relay wakes on any of them, as before; the API's stream readers
-- wake on their thread's (services/api/bell.py, `Bell`) and sleep otherwise, instead of
-- asking the broker for new records every few milliseconds. Identical payloads of one
-- transaction are delivered once, so the relay still gets one '' per transaction at most.
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN
    PERFORM pg_notify('threadbus_outbox', ring)
    FROM (
        SELECT CASE WHEN topic = 'threadbus.events' AND key IS NOT NULL AND length(key) <= 200
                    THEN key || ' ' || max(id) ELSE '' END AS ring
        FROM new_rows GROUP BY topic, key
    ) rings;
    RETURN NULL;
END $$;
DROP TRIGGER outbox_notify ON outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
