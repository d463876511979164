-- A deleted thread or vector store notifies `threadbus_parents` with '<table> <id>': the API's
-- door keeps which project owns each thread and store (`auth.Gate`), and a thread's id can
-- name a new thread later (an inbound event creates a thread under the id it names, in its
-- own project), so what the door kept for a deleted one must go.
CREATE FUNCTION parent_gone() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN PERFORM pg_notify('threadbus_parents', TG_TABLE_NAME || ' ' || OLD.id); RETURN NULL; END $$;
CREATE TRIGGER parent_gone AFTER DELETE ON threads FOR EACH ROW EXECUTE FUNCTION parent_gone();
CREATE TRIGGER parent_gone AFTER DELETE ON vector_stores
    FOR EACH ROW EXECUTE FUNCTION parent_gone();
