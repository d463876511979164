-- API keys and the projects they belong to. A key is shown once, when it is created; only its
-- SHA-256 is kept (keys are 256 random bits, so a plain hash is enough to make a leaked table
-- useless). While the table is empty the API runs open, on loopback only (README, "Keys").

CREATE TABLE projects (
    id         text PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id         text PRIMARY KEY,
    project_id text NOT NULL REFERENCES projects (id),
    hash       bytea NOT NULL UNIQUE,
    redacted   text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- Projects own assistants, threads (and so their messages, runs and steps), files and vector
-- stores (and so their files and batches). A connection is scoped to one project by the
-- setting `threadbus.project`: every API connection is, to 'none' between requests (so it
-- sees nothing) and to the key's project during one; the workers' connections are not
-- scoped and see every project. New rows take the connection's project.
INSERT INTO projects (id, name) VALUES ('proj_default', 'default');

CREATE FUNCTION scoped_project() RETURNS text LANGUAGE sql STABLE AS
$$ SELECT nullif(current_setting('threadbus.project', true), '') $$;

-- Whether a row of `project_id` is visible on this connection.
CREATE FUNCTION visible(project_id text) RETURNS boolean LANGUAGE sql STABLE AS
$$ SELECT coalesce(scoped_project() = project_id, true) $$;

ALTER TABLE assistants ADD COLUMN project_id text NOT NULL
    DEFAULT coalesce(scoped_project(), 'proj_default') REFERENCES projects (id);
ALTER TABLE threads ADD COLUMN project_id text NOT NULL
    DEFAULT coalesce(scoped_project(), 'proj_default') REFERENCES projects (id);
ALTER TABLE files ADD COLUMN project_id text NOT NULL
    DEFAULT coalesce(scoped_project(), 'proj_default') REFERENCES projects (id);
ALTER TABLE vector_stores ADD COLUMN project_id text NOT NULL
    DEFAULT coalesce(scoped_project(), 'proj_default') REFERENCES projects (id);
CREATE INDEX assistants_project ON assistants (project_id, seq);
CREATE INDEX files_project ON files (project_id, seq);
CREATE INDEX vector_stores_project ON vector_stores (project_id, seq);

CREATE OR REPLACE VIEW vector_stores_v AS
SELECT s.id, s.seq, s.created_at, s.name, s.metadata, s.expires_after, s.last_active_at,
       e.expires_at,
       coalesce(sum(f.usage_bytes), 0)::bigint AS usage_bytes,
       count(f.file_id) FILTER (WHERE f.status = 'in_progress') AS in_progress,
       count(f.file_id) FILTER (WHERE f.status = 'completed') AS completed,
       count(f.file_id) FILTER (WHERE f.status = 'failed') AS failed,
       count(f.file_id) FILTER (WHERE f.status = 'cancelled') AS cancelled,
       count(f.file_id) AS total,
       CASE WHEN e.expires_at IS NOT NULL AND e.expires_at <= epoch_now() THEN 'expired'
            WHEN count(f.file_id) FILTER (WHERE f.status = 'in_progress') > 0 THEN 'in_progress'
            ELSE 'completed' END AS status,
       s.project_id
FROM vector_stores s
CROSS JOIN LATERAL (SELECT s.last_active_at + (s.expires_after->>'days')::bigint * 86400
                    AS expires_at) e
LEFT JOIN vector_store_files f ON f.vector_store_id = s.id
GROUP BY s.id, e.expires_at;
