-- Files, vector stores and their chunks (file_search), and a blob store in Postgres.

-- Uploaded bytes, in parts of at most 1 MiB, for the default (Postgres) blob store.
CREATE TABLE blob_parts (
    key  text NOT NULL,
    part integer NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (key, part)
);

CREATE TABLE files (
    id             text PRIMARY KEY,
    seq            bigserial UNIQUE,
    created_at     bigint NOT NULL DEFAULT epoch_now(),
    bytes          bigint NOT NULL,
    filename       text NOT NULL,
    purpose        text NOT NULL,
    status         text NOT NULL DEFAULT 'processed',
    status_details text,
    expires_at     bigint,
    -- Where the bytes are: a key of the configured blob store.
    blob_key       text NOT NULL
);
CREATE INDEX files_purpose ON files (purpose, seq);

CREATE TABLE vector_stores (
    id             text PRIMARY KEY,
    seq            bigserial UNIQUE,
    created_at     bigint NOT NULL DEFAULT epoch_now(),
    name           text NOT NULL DEFAULT '',
    description    text,
    metadata       jsonb NOT NULL DEFAULT '{}',
    expires_after  jsonb,
    last_active_at bigint NOT NULL DEFAULT epoch_now()
);

CREATE TABLE vector_store_file_batches (
    id              text PRIMARY KEY,
    seq             bigserial UNIQUE,
    vector_store_id text NOT NULL REFERENCES vector_stores (id) ON DELETE CASCADE,
    created_at      bigint NOT NULL DEFAULT epoch_now(),
    cancelled_at    bigint
);

-- A file in a vector store. `generation` grows when the file is attached again, so that an
-- ingestion order for an earlier attachment is recognised as stale; the lease fences an
-- indexer that lost its claim.
CREATE TABLE vector_store_files (
    vector_store_id   text NOT NULL REFERENCES vector_stores (id) ON DELETE CASCADE,
    file_id           text NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    seq               bigserial UNIQUE,
    created_at        bigint NOT NULL DEFAULT epoch_now(),
    status            text NOT NULL DEFAULT 'in_progress',
    last_error        jsonb,
    usage_bytes       bigint NOT NULL DEFAULT 0,
    attributes        jsonb,
    chunking_strategy jsonb NOT NULL,
    batch_id          text REFERENCES vector_store_file_batches (id) ON DELETE SET NULL,
    generation        integer NOT NULL DEFAULT 1,
    lease_token       uuid,
    lease_expires_at  timestamptz,
    attempts          integer NOT NULL DEFAULT 0,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (vector_store_id, file_id)
);
CREATE INDEX vector_store_files_file ON vector_store_files (file_id);
CREATE INDEX vector_store_files_batch ON vector_store_files (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX vector_store_files_pending ON vector_store_files (updated_at)
    WHERE status = 'in_progress';

-- Searchable pieces of a vector store's files. The embedding column has no fixed dimension
-- (the embedder is configurable); an HNSW index per dimension is made by the indexer.
CREATE TABLE chunks (
    id              bigserial PRIMARY KEY,
    vector_store_id text NOT NULL,
    file_id         text NOT NULL,
    chunk_index     integer NOT NULL,
    text            text NOT NULL,
    tsv             tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED,
    embedding       vector NOT NULL,
    dims            integer NOT NULL,
    attributes      jsonb,
    UNIQUE (vector_store_id, file_id, chunk_index),
    FOREIGN KEY (vector_store_id, file_id)
        REFERENCES vector_store_files (vector_store_id, file_id) ON DELETE CASCADE
);
CREATE INDEX chunks_store ON chunks (vector_store_id);
CREATE INDEX chunks_tsv ON chunks USING gin (tsv);
CREATE INDEX chunks_embedding_384 ON chunks
    USING hnsw ((embedding::vector(384)) vector_cosine_ops) WHERE dims = 384;

-- A tool call's structured result (file_search results, code interpreter outputs).
ALTER TABLE tool_calls ADD COLUMN details jsonb;

-- The parsed text of a vector store file (GET .../files/{id}/content).
ALTER TABLE vector_store_files ADD COLUMN content text;

-- The wire objects with their derived fields: counts, usage, expiry and status.
CREATE VIEW vector_stores_v AS
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
            ELSE 'completed' END AS status
FROM vector_stores s
CROSS JOIN LATERAL (SELECT s.last_active_at + (s.expires_after->>'days')::bigint * 86400
                    AS expires_at) e
LEFT JOIN vector_store_files f ON f.vector_store_id = s.id
GROUP BY s.id, e.expires_at;

CREATE VIEW vector_store_file_batches_v AS
SELECT b.id, b.seq, b.vector_store_id, b.created_at,
       count(f.file_id) FILTER (WHERE f.status = 'in_progress') AS in_progress,
       count(f.file_id) FILTER (WHERE f.status = 'completed') AS completed,
       count(f.file_id) FILTER (WHERE f.status = 'failed') AS failed,
       count(f.file_id) FILTER (WHERE f.status = 'cancelled') AS cancelled,
       count(f.file_id) AS total,
       CASE WHEN count(f.file_id) FILTER (WHERE f.status = 'in_progress') > 0 THEN 'in_progress'
            WHEN b.cancelled_at IS NOT NULL THEN 'cancelled'
            WHEN count(f.file_id) > 0
                 AND count(f.file_id) FILTER (WHERE f.status = 'failed') = count(f.file_id)
                 THEN 'failed'
            ELSE 'completed' END AS status
FROM vector_store_file_batches b
LEFT JOIN vector_store_files f ON f.batch_id = b.id
GROUP BY b.id;

-- Vector store files as listed: the file id is the object's id (the parsed text left out).
CREATE VIEW vector_store_files_v AS
SELECT file_id AS id, vector_store_id, seq, created_at, status, last_error, usage_bytes,
       attributes, chunking_strategy, batch_id, generation
FROM vector_store_files;
