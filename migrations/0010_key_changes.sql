-- The API keeps what its key checks answered until a key changes (services/api/auth.py):
-- every change to api_keys (a key created, revoked or deleted) tells it at once.
CREATE FUNCTION api_keys_changed() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN PERFORM pg_notify('threadbus_keys', ''); RETURN NULL; END $$;

CREATE TRIGGER api_keys_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION api_keys_changed();
