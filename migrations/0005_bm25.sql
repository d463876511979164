-- BM25 statistics per vector store, kept by triggers on `chunks`: how many chunks hold each
-- lexeme (document frequency), and how many chunks and lexemes a store has (for the average
-- length). Postgres' own ts_rank has no inverse document frequency; BM25 needs these.

CREATE TABLE lexemes (
    vector_store_id text NOT NULL,
    lexeme          text NOT NULL,
    df              integer NOT NULL,
    PRIMARY KEY (vector_store_id, lexeme)
);

CREATE TABLE chunk_stats (
    vector_store_id text PRIMARY KEY,
    chunks          bigint NOT NULL,
    lexemes         bigint NOT NULL
);

-- Statement-level, over the transition table: one upsert per statement, rows taken in key
-- order so that concurrent writers of one store lock them in the same order (no deadlock).
CREATE FUNCTION chunks_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO lexemes (vector_store_id, lexeme, df)
    SELECT vector_store_id, lexeme, count(*)
    FROM added, unnest(tsvector_to_array(tsv)) AS lexeme
    GROUP BY vector_store_id, lexeme
    ORDER BY vector_store_id, lexeme
    ON CONFLICT (vector_store_id, lexeme) DO UPDATE SET df = lexemes.df + EXCLUDED.df;
    INSERT INTO chunk_stats (vector_store_id, chunks, lexemes)
    SELECT vector_store_id, count(*), sum(length(tsv))
    FROM added GROUP BY vector_store_id ORDER BY vector_store_id
    ON CONFLICT (vector_store_id) DO UPDATE SET chunks = chunk_stats.chunks + EXCLUDED.chunks,
        lexemes = chunk_stats.lexemes + EXCLUDED.lexemes;
    RETURN NULL;
END $$;

CREATE FUNCTION chunks_uncounted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH gone AS (
        SELECT vector_store_id, lexeme, count(*) AS n
        FROM removed, unnest(tsvector_to_array(tsv)) AS lexeme
        GROUP BY vector_store_id, lexeme
        ORDER BY vector_store_id, lexeme
    )
    UPDATE lexemes AS l SET df = l.df - gone.n FROM gone
    WHERE l.vector_store_id = gone.vector_store_id AND l.lexeme = gone.lexeme;
    DELETE FROM lexemes AS l USING (SELECT DISTINCT vector_store_id FROM removed) AS s
    WHERE l.vector_store_id = s.vector_store_id AND l.df <= 0;
    WITH gone AS (
        SELECT vector_store_id, count(*) AS n, sum(length(tsv)) AS len
        FROM removed GROUP BY vector_store_id ORDER BY vector_store_id
    )
    UPDATE chunk_stats AS c SET chunks = c.chunks - gone.n, lexemes = c.lexemes - gone.len
    FROM gone WHERE c.vector_store_id = gone.vector_store_id;
    RETURN NULL;
END $$;

CREATE TRIGGER chunks_counted AFTER INSERT ON chunks
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION chunks_counted();
CREATE TRIGGER chunks_uncounted AFTER DELETE ON chunks
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION chunks_uncounted();

-- Chunks indexed before this migration.
INSERT INTO lexemes (vector_store_id, lexeme, df)
SELECT vector_store_id, lexeme, count(*)
FROM chunks, unnest(tsvector_to_array(tsv)) AS lexeme
GROUP BY vector_store_id, lexeme;
INSERT INTO chunk_stats (vector_store_id, chunks, lexemes)
SELECT vector_store_id, count(*), sum(length(tsv)) FROM chunks GROUP BY vector_store_id;
